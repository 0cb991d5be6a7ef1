"""Fuzzing the command's inputs: random config values and random bytes as dataset files end
with exit status 0 or 2 and at most one error line, never a traceback or a half-written file."""

import dataclasses
import gzip
import io
import os
import tempfile
import zipfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtgan.cli import main
from mtgan.config import Config, load_config

FUZZ = settings(
    max_examples=int(os.environ.get("MTGAN_FUZZ_EXAMPLES", 30)),  # more for a longer search
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def _keys(cls=Config, prefix=""):
    """Every dotted config key."""
    keys = []
    for f in dataclasses.fields(cls):
        default = getattr(cls(), f.name)
        if dataclasses.is_dataclass(default):
            keys += _keys(type(default), f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


KEYS = _keys()
scalars = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=12),
)
values = st.one_of(
    scalars.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...")),
    st.lists(scalars, max_size=4).map(lambda v: yaml.safe_dump(v, default_flow_style=True)),
    st.text(max_size=20),
)
keys = st.one_of(
    st.sampled_from(KEYS),
    st.sampled_from(KEYS).map(lambda k: k[:-1] + "x"),  # a typo
    st.text(max_size=15),
)


def _assert_clean(status: int, err: str, allowed=(0, 2)) -> None:
    assert status in allowed, err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("mtgan: error:")]
    assert len(errors) == (status != 0), err


@FUZZ
@given(settings_=st.lists(st.tuples(keys, values), min_size=1, max_size=3))
def test_random_config_values_are_accepted_round_trip_or_refused_in_one_line(settings_, capsys):
    argv = ["config"] + [f"--set={key}={value}" for key, value in settings_]
    status = main(argv)
    out, err = capsys.readouterr()
    _assert_clean(status, err)
    if status == 0:  # what a run folder's config.yaml holds must load back to the same config
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "config.yaml"
            path.write_text(out)
            assert load_config(path).to_dict() == yaml.safe_load(out)


def _gz(data: bytes) -> bytes:
    return gzip.compress(data)


def _zip(data: bytes, member: str = "images.npy") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(member, data)
    return buf.getvalue()


PREFIXES = [b"", b"\x80\x02}q\x00(", b"\x80\x04\x95", b"PK\x03\x04", b"\x89PNG\r\n\x1a\n"]
PREFIXES += [b"\x93NUMPY\x01\x00", b"\x00\x00\x08\x03", b"<html>", b"\x1f\x8b\x08\x00"]
blobs = st.one_of(
    st.binary(max_size=300),
    st.tuples(st.sampled_from(PREFIXES), st.binary(max_size=300)).map(lambda t: t[0] + t[1]),
    st.binary(max_size=200).map(_gz),
    st.binary(max_size=200).map(_zip),
    st.binary(max_size=200).map(lambda b: _zip(b, "images_background/A/character01/1.png")),
)

#: The files each loader reads, relative to --root.
LAYOUTS = {
    "mnist": ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"],
    "omniglot": ["images_background.npz"],
    "omniglot-zip": ["images_background.zip"],
    "cifar10": ["cifar-10-batches-py/batches.meta"]
    + [f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)],
    "cifar10-subset": ["cifar10_subset.npz"],
    "cifar100": ["cifar-100-python/meta", "cifar-100-python/train"],
    "fc100": ["FC100_train.pickle"],
    "miniimagenet": ["mini-imagenet-cache-train.pkl"],
    "folder": ["a/1.png", "a/2.jpg", "b/1.png"],
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@FUZZ
@given(data=st.data())
def test_random_bytes_as_dataset_files_give_one_line_and_leave_no_file(layout, data, capsys):
    files = LAYOUTS[layout]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for rel in files:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data.draw(blobs, label=rel))
        before = sorted(p.relative_to(root) for p in root.rglob("*"))
        status = main(["data", "info", layout.removesuffix("-zip"), "--root", str(root)])
        _, err = capsys.readouterr()
        _assert_clean(status, err, allowed=(2,))
        assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
