"""The catalogue of bad input (issue #7): each ends with one line naming the problem, exit
status 2 (usage and input errors; 1 is for runtime failures), no traceback, nothing written."""

import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mtgan.cli import main
from mtgan.config import load_config
from mtgan.nn.gan import save_gan
from mtgan.phases.pretrain import build_gan
from mtgan.runs.folder import create_run
from tests.conftest import TINY, image_folder

HTML = b"\n<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></html>"


def _sets(*extra):
    return [a for kv in [*TINY, *extra] for a in ("--set", kv)]


@pytest.fixture
def data(tmp_path):
    """A small image folder to pretrain on (faster than rendering glyphs)."""
    return [
        "--set",
        "data.name=folder",
        "--set",
        f"data.root={image_folder(tmp_path / 'i', 16, 6)}",
    ]


def _error(capsys, argv, *words, status=2):
    """Run the command in-process; assert its status and one error line holding ``words``."""
    assert main(argv) == status
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mtgan: error:"), err
    for word in words:
        assert str(word) in lines[0], lines[0]
    return lines[0]


def _folder_run(tmp_path, data, *extra):
    out = tmp_path / "run"
    return ["run", "--out", str(out), *_sets("data.name=folder", f"data.root={data}", *extra)], out


# --- missing paths -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, words",
    [
        (["run", "--config", "{tmp}/none.yaml"], ["none.yaml", "does not exist"]),
        (
            ["run", "--out", "{tmp}/r", "--set=data.name=folder", "--set=data.root={tmp}/none"],
            ["none"],
        ),
        (["run", "--resume", "{tmp}/none"], ["none", "not a run folder"]),
        (["meta-train", "--run", "{tmp}/none"], ["none", "not a run folder"]),
        (["evaluate", "--from", "{tmp}/none"], ["none", "not a run folder"]),
        (["sample", "--checkpoint", "{tmp}/none", "--out", "{tmp}/x.png"], ["none", "not exist"]),
        (["data", "info", "mnist", "--root", "{tmp}/none"], ["none", "does not exist"]),
    ],
)
def test_missing_path(tmp_path, capsys, argv, words):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    _error(capsys, argv, *words)
    assert not list(tmp_path.iterdir()), "a failed command must leave nothing behind"


def test_missing_images_folder_for_adapt(tmp_path, capsys):
    images = image_folder(tmp_path / "images", 16, 6)
    cfg = load_config(overrides=[*TINY, "data.name=folder", f"data.root={images}"])
    run = create_run(tmp_path / "run", cfg)
    argv = ["adapt", "--run", str(run.root), "--images", str(tmp_path / "mine")]
    _error(
        capsys,
        argv,
        "meta-train/model.safetensors does not exist",
        "run the meta-train phase first",
    )
    save_gan(build_gan(run.cfg, 3), run.path("meta-train", "model.safetensors"))
    _error(capsys, argv, "mine", "does not exist")


# --- image folders ---------------------------------------------------------------------------


def test_empty_class_folder(tmp_path, capsys):
    data = image_folder(tmp_path / "imgs", 12, 6)
    (data / "empty").mkdir()
    argv, out = _folder_run(tmp_path, data)
    _error(capsys, argv, data / "empty", "holds no readable images")
    assert not list(out.rglob("*.safetensors"))


def test_fewer_classes_than_n(tmp_path, capsys):
    data = image_folder(tmp_path / "imgs", 10, 6)  # the test split gets 2 classes
    _error(capsys, _folder_run(tmp_path, data, "task.n_way=3")[0], "N = 3", "only 2 classes")


def test_fewer_images_than_k_plus_q(tmp_path, capsys):
    data = image_folder(tmp_path / "imgs", 12, 3)
    argv = _folder_run(tmp_path, data, "task.k_shot=2", "task.q_query=2")[0]
    _error(capsys, argv, "has 3 images", "K + Q = 4")


@pytest.mark.parametrize("junk", [b"", b"not a png at all", HTML, b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"])
def test_corrupt_images_are_counted_and_skipped_or_refused_with_strict(tmp_path, capsys, junk):
    data = image_folder(tmp_path / "imgs", 4, 3)
    for name in ("bad1.png", "bad2.jpg"):
        (data / "k1" / name).write_bytes(junk)
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable image\(s\), first .*bad1.png"):
        assert main(["data", "info", "folder", "--root", str(data)]) == 0
    assert "4 classes, 12 images" in capsys.readouterr().out
    _error(capsys, ["data", "info", "folder", "--root", str(data), "--strict"], "bad1.png")
    argv = _folder_run(tmp_path, data, "task.n_way=1", "task.k_shot=1")[0]
    _error(capsys, [*argv, "--strict"], "bad1.png", "--strict")


def test_mixed_grey_colour_and_sizes_are_converted_with_a_note(tmp_path, capsys):
    data = image_folder(tmp_path / "imgs", 2, 3)
    Image.new("RGB", (40, 30), (200, 10, 10)).save(data / "k0" / "colour.png")
    with pytest.warns(UserWarning, match="mixes grey and colour.*grey and sizes 20x20, 40x30"):
        assert main(["data", "info", "folder", "--root", str(data)]) == 0
    assert "7 images of shape (1, 32, 32)" in capsys.readouterr().out


# --- dataset files that are not what their names say -----------------------------------------


def _cifar10_with_meta(root: Path, meta: bytes) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    (folder / "batches.meta").write_bytes(meta)
    return root


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize(
    "name, make, words",
    [
        ("cifar10", lambda r: _cifar10_with_meta(r, HTML), ["batches.meta", "HTML page"]),
        (
            "cifar10",
            lambda r: _cifar10_with_meta(r, pickle.dumps({"label_names": ["a"] * 10})[:-9]),
            ["batches.meta", "truncated or corrupt"],
        ),
        ("omniglot", lambda r: _write(r / "images_background.zip", HTML), ["zip", "HTML page"]),
        (
            "omniglot",
            lambda r: _write(r / "images_background.zip", _zip()[:40]),
            ["zip", "corrupt"],
        ),
        ("omniglot", lambda r: _write(r / "images_background.npz", b"PK\3\4junk"), ["npz"]),
        ("mnist", lambda r: _idx(r, HTML, HTML), ["train-images-idx3-ubyte.gz", "HTML page"]),
        ("mnist", lambda r: _idx(r, b"\x1f\x8b\x08\x00", b""), ["images", "truncated"]),
    ],
)
def test_html_page_or_truncated_file_instead_of_a_dataset(tmp_path, capsys, name, make, words):
    root = tmp_path / "data"
    root.mkdir()
    make(root)
    _error(capsys, ["data", "info", name, "--root", str(root)], *words)


def _idx(root: Path, images: bytes, labels: bytes) -> None:
    _write(root / "train-images-idx3-ubyte.gz", images)
    _write(root / "train-labels-idx1-ubyte.gz", labels)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _zip() -> bytes:
    path = Path(os.environ["MTGAN_CACHE"]).parent / "x.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("images_background/A/character01/1.png", b"\x89PNG" + bytes(100))
    return path.read_bytes()


def test_a_pickle_that_would_run_code_is_refused(tmp_path, capsys):
    marker = tmp_path / "pwned"
    root = _cifar10_with_meta(tmp_path / "data", pickle.dumps({"label_names": _Evil(marker)}, 2))
    _error(capsys, ["data", "info", "cifar10", "--root", str(root)], "refusing to unpickle")
    assert not marker.exists()


# --- config keys and values ------------------------------------------------------------------


@pytest.mark.parametrize(
    "setting, words",
    [
        ("task.n_wya=3", ["task.n_wya", "did you mean 'task.n_way'"]),
        ("pretrian.steps=3", ["pretrian", "did you mean 'pretrain'"]),
        ("meta.inner_stepz=3", ["did you mean 'meta.inner_steps'"]),
        ("task.n_way=0", ["task.n_way must be greater than 0, got 0"]),
        ("task.k_shot=-2", ["task.k_shot must be greater than 0, got -2"]),
        ("pretrain.lr=-2e-4", ["pretrain.lr must be greater than 0"]),
        ("meta.inner_lr=-1", ["meta.inner_lr must be greater than 0"]),
        ("meta.outer_lr=-1e-4", ["meta.outer_lr must be greater than 0"]),
        ("adapt.lr=.nan", ["adapt.lr must be a finite number"]),
        ("seed=-1", ["seed must be between 0 and 2**63 - 1"]),
        ("task.n_way=three", ["task.n_way must be int, got 'three'"]),
    ],
)
def test_bad_config_key_or_value(tmp_path, capsys, setting, words):
    out = tmp_path / "run"
    _error(capsys, ["run", "--out", str(out), "--set", setting], *words)
    assert not out.exists(), "a bad config must not create the run folder"


def test_mistyped_key_in_a_config_file(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("meta:\n  inner_stepz: 3\n")
    _error(capsys, ["run", "--config", str(cfg), "--out", str(tmp_path / "r")], "inner_steps")


# --- checkpoints of another architecture or another N ----------------------------------------


def test_checkpoint_of_another_architecture(tmp_path, capsys, data):
    run = tmp_path / "run"
    assert main(["pretrain", "--out", str(run), *_sets(), *data, "--no-progress"]) == 0
    capsys.readouterr()
    other = load_config(overrides=[*TINY, "model.g_width=8"])
    save_gan(build_gan(other, 3), run / "pretrain" / "model.safetensors")
    _error(capsys, ["meta-train", "--run", str(run)], "pretrain/model.safetensors", "g_width=8")


def test_state_file_of_another_n(tmp_path, capsys, monkeypatch, data):
    from mtgan.checkpoint import TrainingState

    run = tmp_path / "run"
    argv = ["pretrain", "--out", str(run), *_sets("meta.checkpoint_every=1"), *data]
    assert main([*argv, "--no-progress"]) == 0
    save = TrainingState.save

    def save_then_die(self):
        save(self)
        raise KeyboardInterrupt

    monkeypatch.setattr(TrainingState, "save", save_then_die)
    assert main(["meta-train", "--run", str(run), "--no-progress"]) == 130
    monkeypatch.undo()
    capsys.readouterr()
    state = run / "meta-train" / "state.safetensors"
    argv = ["meta-train", "--run", str(run), "--set", "task.n_way=2"]
    _error(capsys, argv, state, "task.n_way=3, not 2", "delete the file")
    _error(capsys, ["run", "--resume", str(run), "--set", "task.n_way=2"], "task.n_way=3, not 2")


def test_resume_and_overwrite_refused_together(tmp_path, capsys, data):
    run = tmp_path / "run"
    assert main(["pretrain", "--out", str(run), *_sets(), *data, "--no-progress"]) == 0
    capsys.readouterr()
    _error(capsys, ["run", "--resume", str(run), "--overwrite"], "--resume", "--overwrite")
    _error(capsys, ["run", "--resume", str(run), "--quick"], "its own config.yaml")


def test_a_corrupt_checkpoint(tmp_path, capsys):
    bad = tmp_path / "model.safetensors"
    for junk in (HTML, b"\x10\0\0\0\0\0\0\0{}" + bytes(8), np.arange(9).tobytes()):
        bad.write_bytes(junk)
        _error(capsys, ["sample", "--checkpoint", str(bad), "--out", str(tmp_path / "x.png")])
    assert not (tmp_path / "x.png").exists()


def test_a_run_folder_of_the_first_release_is_named_with_its_fix(tmp_path, capsys):
    images = image_folder(tmp_path / "images", 16, 6)
    cfg = load_config(overrides=[*TINY, "data.name=folder", f"data.root={images}"])
    run = create_run(tmp_path / "run", cfg)
    (run.root / "meta").mkdir()
    _error(capsys, ["evaluate", "--from", str(run.root)], "meta/", "rename", "meta-train")
