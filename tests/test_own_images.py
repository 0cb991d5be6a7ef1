"""A user's own images end to end: every image mode read as its 8-bit original, the generated
images as files, output paths refused before any work, warnings, help and progress."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mtgan.cli import main
from mtgan.data.folder import load_folder
from tests.conftest import TINY, image_folder, tiny_run

SIZE = 16


def _original(seed: int) -> np.ndarray:
    """An 8-bit grey image with every level in use, smooth enough for resizing to keep it."""
    rs = np.random.RandomState(seed)
    return np.kron(rs.randint(0, 256, (8, 8)), np.ones((2, 2))).astype(np.uint8)


def _write_modes(folder) -> dict[str, np.ndarray]:
    """The same 8-bit images saved in other modes and suffixes; returns the originals by name."""
    folder.mkdir(parents=True)
    originals = {}
    writers = {
        "8bit.png": lambda a: Image.fromarray(a),
        "sixteen.png": lambda a: Image.fromarray(a.astype(np.uint16) * 257),
        "int32.tif": lambda a: Image.fromarray(a.astype(np.int32) * 257, "I"),
        "grey_alpha.png": lambda a: Image.fromarray(a).convert("LA"),
        "UPPER.PNG": lambda a: Image.fromarray(a),
        "palette.png": lambda a: Image.fromarray(a).convert("P", palette=Image.ADAPTIVE),
        "cmyk.tif": lambda a: Image.fromarray(a).convert("RGB").convert("CMYK"),
        "rgba.png": lambda a: Image.fromarray(a).convert("RGBA"),
    }
    for k, (name, write) in enumerate(writers.items()):
        originals[name] = _original(k)
        write(originals[name]).save(folder / name)
    return originals


def _read_one(path, tmp_path):
    """One file read through the image-folder loader at its own size."""
    single = tmp_path / "single" / "c"
    single.mkdir(parents=True, exist_ok=True)
    for old in single.iterdir():
        old.unlink()
    (single / path.name).write_bytes(path.read_bytes())
    return load_folder(single.parent, image_size=SIZE, channels=1).images_of("c")[0, 0].numpy()


def test_every_image_mode_reads_as_its_8_bit_original(tmp_path):
    originals = _write_modes(tmp_path / "modes")
    for name, original in originals.items():
        read = _read_one(tmp_path / "modes" / name, tmp_path)
        diff = np.abs(read.astype(int) - original.astype(int)).max()
        assert diff <= 1, f"{name}: differs by {diff} grey levels"


def test_exif_orientation_turns_the_image_upright(tmp_path):
    upright = np.zeros((SIZE, SIZE), np.uint8)
    upright[:4] = 255  # a bright band at the top
    stored = Image.fromarray(np.rot90(upright, 1).copy())  # the camera stored it turned
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    stored.save(tmp_path / "turned.png", exif=exif)
    read = _read_one(tmp_path / "turned.png", tmp_path)
    assert np.abs(read.astype(int) - upright.astype(int)).max() <= 1


def test_transparency_is_composited_over_black(tmp_path):
    rgba = np.zeros((SIZE, SIZE, 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = 200, 0  # fully transparent grey
    rgba[:8, :, 3] = 255  # the top half opaque
    Image.fromarray(rgba, "RGBA").save(tmp_path / "half.png")
    read = _read_one(tmp_path / "half.png", tmp_path)
    assert read[:8].min() == 200 and read[8:].max() == 0


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("own"))


def test_adapt_to_a_folder_of_mixed_modes_writes_images_and_an_npz(run_folder, tmp_path, capsys):
    mine = tmp_path / "mine"
    for c in ("alpha", "beta"):
        _write_modes(mine / c)
    out = tmp_path / "adapted"
    argv = ["adapt", "--run", str(run_folder), "--images", str(mine), "--out", str(out)]
    assert main([*argv, "--per-class", "4", "--no-progress"]) == 0
    said = capsys.readouterr().out
    assert "in slot order: alpha, beta" in said and " s to 2 classes" in said
    for c in ("alpha", "beta"):
        assert sorted(p.name for p in (out / "images" / c).iterdir()) == [
            f"{i:04d}.png" for i in range(4)
        ]
    assert (out / "images" / "grid.png").is_file() and (out / "samples.png").is_file()
    npz = np.load(out / "images.npz")
    assert npz["images"].shape == (2, 4, 1, SIZE, SIZE) and npz["images"].dtype == np.uint8
    assert list(npz["classes"]) == ["alpha", "beta"]
    one = np.asarray(Image.open(out / "images" / "beta" / "0002.png"))
    assert np.array_equal(one, npz["images"][1, 2, 0])
    assert main(argv) == 2  # no overwrite without --overwrite
    assert "--overwrite" in capsys.readouterr().err


def _sample(checkpoint, out, *extra):
    return main(["sample", "--checkpoint", str(checkpoint), "--out", str(out), *extra])


def test_sample_writes_each_kind_and_refuses_what_it_cannot(run_folder, tmp_path, capsys):
    model = run_folder / "tasks" / "0" / "model.safetensors"
    assert _sample(model, tmp_path / "many", "--per-class", "3") == 0
    classes = capsys.readouterr().out.split("slot order: ")[1].strip().split(", ")
    folders = sorted(p.name for p in (tmp_path / "many").iterdir())
    assert len(folders) == 4 and "grid.png" in folders  # three classes and the grid
    assert _sample(model, tmp_path / "a.npz") == 0
    assert np.load(tmp_path / "a.npz")["images"].shape[:2] == (3, 10)
    assert _sample(model, tmp_path / "grid.png", "--per-class", "25") == 0
    assert Image.open(tmp_path / "grid.png").width < 12 * (SIZE + 2) * 2  # wrapped rows
    capsys.readouterr()
    refused = {
        tmp_path / "a.npz": "--overwrite",
        tmp_path / "x.jpg": "a .png (the grid) or a .npz",
        tmp_path / "many": "--overwrite",
    }
    (tmp_path / "plain").write_text("a file")
    refused[tmp_path / "plain"] = "is a file"
    for out, words in refused.items():
        before = sorted(p.name for p in tmp_path.iterdir())
        assert _sample(model, out) == 2, out
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], err
        assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing left behind
    assert _sample(model, tmp_path / "a.npz", "--overwrite") == 0
    assert len(classes) == 3 and all(classes)


def test_warnings_for_a_usable_but_unusual_set_of_shots(run_folder, tmp_path):
    lone = image_folder(tmp_path / "lone", classes=1, per_class=2)
    uneven = image_folder(tmp_path / "uneven", classes=2, per_class=4)
    (uneven / "k1" / "0.png").unlink()
    for folder, words in (
        (lone, "single class.*fewer than 3"),
        (uneven, "different K \\(3 to 4\\)"),
    ):
        argv = ["adapt", "--run", str(run_folder), "--images", str(folder), "--no-progress"]
        with pytest.warns(UserWarning, match=words):
            assert main([*argv, "--out", str(tmp_path / f"out-{folder.name}")]) == 0


def test_every_command_reading_a_run_takes_run_and_from(run_folder, tmp_path):
    for command in ("meta-train", "adapt", "evaluate"):
        for flag in ("--run", "--from"):
            r = subprocess.run(
                [sys.executable, "-m", "mtgan", command, flag, str(tmp_path / "none")],
                capture_output=True, text=True,
            )  # fmt: skip
            assert r.returncode == 2 and "not a run folder" in r.stderr, (command, flag)


@pytest.mark.parametrize(
    ("command", "absent"),
    [
        ("adapt", ("--quick", "--config")),
        ("sample", ("--on-nan", "--strict", "--set", "--quick")),
        ("config", ("--on-nan", "--no-progress")),
        ("evaluate", ("--quick", "--config")),
        ("benchmark", ("--on-nan",)),
    ],
)
def test_each_command_shows_only_its_own_flags(command, absent, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    shown = capsys.readouterr().out
    assert shown.splitlines()[0].startswith(f"usage: mtgan {command}")
    assert not [flag for flag in absent if f"{flag} " in shown or f"{flag}\n" in shown]
    assert "\n\n" in shown.split("options:")[0]  # a description line under the usage


def test_progress_is_plain_lines_in_a_log_and_losses_are_logged(tmp_path):
    data = image_folder(tmp_path / "imgs", classes=16, per_class=6)
    sets = [*TINY, "data.name=folder", f"data.root={data}", "pretrain.steps=20"]
    r = subprocess.run(
        [sys.executable, "-m", "mtgan", "pretrain", "--out", str(tmp_path / "run"),
         *[a for s in sets for a in ("--set", s)]],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stderr and "pretrain: step 20/20 (100%)" in r.stderr
    rows = (tmp_path / "run" / "losses.csv").read_text().splitlines()
    assert rows[0] == "phase,step,loss,value" and len(rows) == 1 + 20 * 2
    assert rows[-1].startswith("pretrain,20,loss_g,")
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tensorboard")).Reload()
    assert len(events.Scalars("pretrain/loss_d")) == 20


def test_misleading_messages_of_the_first_release_are_gone(run_folder, tmp_path, capsys):
    images = image_folder(tmp_path / "imgs", classes=2, per_class=3)
    a_file = tmp_path / "file.txt"
    a_file.write_text("not a folder")
    cases = [
        (["data", "info", "folder"], "--root DIR"),
        (["data", "info", "folder", "--root", str(a_file)], "is a file, not a folder"),
        (["adapt", "--run", str(run_folder), "--images", str(a_file)], "is a file, not a folder"),
        (["adapt", "--run", str(run_folder), "--images", str(images), "--out", str(a_file)],
         "is a file; give a folder"),
        (["adapt", "--run", str(run_folder), "--images", str(images), "--per-class", "0"],
         "--per-class must be at least 1"),
    ]  # fmt: skip
    for argv, words in cases:
        before = sorted(str(p) for p in tmp_path.rglob("*"))
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], (argv, err)
        assert sorted(str(p) for p in tmp_path.rglob("*")) == before, argv


def test_data_info_names_the_split_it_read(tmp_path, capsys):
    from mtgan.data import DATASETS

    assert main(["data", "list"]) == 0
    listed = capsys.readouterr().out
    assert "files train/test (--split, default train)" in listed  # the idx datasets
    assert "splits train=background, test=evaluation" in listed  # Omniglot's own
    assert all(f"{name} " in listed for name in DATASETS)


def test_overwrite_replaces_only_a_folder_that_mtgan_wrote(run_folder, tmp_path, capsys):
    model = run_folder / "tasks" / "0" / "model.safetensors"
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"precious")
    assert _sample(model, mine, "--overwrite") == 2
    assert "did not write" in capsys.readouterr().err
    assert (mine / "holiday.jpg").read_bytes() == b"precious"
    assert _sample(model, f"{tmp_path / 'gen.v2'}/") == 0  # a folder whose name has a dot
    assert (tmp_path / "gen.v2" / "grid.png").is_file()
    assert _sample(model, f"{tmp_path / 'gen.v2'}/", "--overwrite", "--seed", "1") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gen.v2", "photos"]


def test_augment_writes_a_dataset_folder_of_generated_images(run_folder, tmp_path, capsys):
    shots = image_folder(tmp_path / "shots", classes=2, per_class=3)
    out = tmp_path / "dataset"
    argv = ["augment", "--run", str(run_folder), "--images", str(shots), "--out", str(out)]
    assert main([*argv, "--per-class", "4", "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["grid.png", "k0", "k1"]
    assert sorted(p.name for p in (out / "k1").iterdir()) == [f"{i:04d}.png" for i in range(4)]
    assert main([*argv, "--per-class", "4"]) == 2  # no overwrite without --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main([*argv, "--per-class", "2", "--with-support", "--overwrite"]) == 0
    names = sorted(p.name for p in (out / "k0").iterdir())
    assert names == ["0000.png", "0001.png", "support-0.png", "support-1.png", "support-2.png"]
    assert load_folder(out, SIZE).classes == ["k0", "k1"]  # the layout the project reads
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset", "shots"]  # no leftovers
