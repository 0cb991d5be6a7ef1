"""The command as a user meets it: exit statuses, one-line errors, the run folder."""

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from tests.conftest import TINY, image_folder


def mtgan(*args, cwd=None):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "mtgan", *args], capture_output=True, text=True, cwd=cwd, env=env
    )


def _sets(*extra):
    return [a for kv in [*TINY, *extra] for a in ("--set", kv)]


def _assert_one_line_error(result, *words):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mtgan: error:"), result.stderr
    for word in words:
        assert word in lines[0]


def test_unknown_config_key_names_the_valid_ones(tmp_path):
    r = mtgan("run", "--out", str(tmp_path / "r"), "--set", "task.n_wya=3")
    _assert_one_line_error(r, "task.n_wya", "task.n_way", "task.k_shot")


def test_bad_config_file_key(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("meta:\n  inner_stepz: 3\n")
    _assert_one_line_error(
        mtgan("run", "--config", str(cfg), "--out", str(tmp_path / "r")), "inner_steps"
    )


def test_more_ways_than_classes(tmp_path):
    data = image_folder(tmp_path / "imgs", classes=10, per_class=6)  # test split: 2 classes
    args = _sets("data.name=folder", f"data.root={data}", "task.n_way=3")
    r = mtgan("run", "--out", str(tmp_path / "r"), *args)
    _assert_one_line_error(r, "N = 3", "only 2 classes")


def test_more_shots_than_images(tmp_path):
    data = image_folder(tmp_path / "imgs", classes=10, per_class=3)
    args = _sets(
        "data.name=folder", f"data.root={data}", "task.n_way=2", "task.k_shot=2", "task.q_query=2"
    )
    r = mtgan("run", "--out", str(tmp_path / "r"), *args)
    _assert_one_line_error(r, "has 3 images", "K + Q = 4")


def test_missing_paths(tmp_path):
    _assert_one_line_error(mtgan("run", "--config", str(tmp_path / "none.yaml")), "does not exist")
    _assert_one_line_error(mtgan("meta-train", "--run", str(tmp_path / "none")), "not a run folder")
    r = mtgan(
        "sample", "--checkpoint", str(tmp_path / "x.safetensors"), "--out", str(tmp_path / "x.png")
    )
    _assert_one_line_error(r, "does not exist")


def test_corrupt_checkpoint(tmp_path):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"<html>not a checkpoint</html>")
    r = mtgan("sample", "--checkpoint", str(bad), "--out", str(tmp_path / "x.png"))
    _assert_one_line_error(r, "not an mtgan checkpoint")


def test_existing_run_folder_is_not_overwritten(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    _assert_one_line_error(mtgan("run", "--out", str(out)), "--overwrite")
    assert (out / "keep.txt").read_text() == "mine"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A full tiny run on the toy image folder, shared by the tests below."""
    root = tmp_path_factory.mktemp("run")
    data = image_folder(root / "imgs", classes=16, per_class=6)
    out = root / "run"
    args = _sets(
        "data.name=folder", f"data.root={data}", "eval.tasks=2", "eval.samples_per_class=3"
    )
    r = mtgan("run", "--out", str(out), "--no-progress", *args)
    assert r.returncode == 0, r.stderr
    return out, data


def test_run_writes_the_documented_layout(tiny_run):
    out, _ = tiny_run
    for rel in [
        "config.yaml",
        "pretrain/model.safetensors",
        "meta-train/model.safetensors",
        "tasks/0/model.safetensors",
        "tasks/1/model.safetensors",
        "samples/task_0.png",
        "samples/pretrain.png",
        "metrics.json",
        "report.md",
        "losses.png",
    ]:
        assert (out / rel).is_file(), rel
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["tasks"]) == 2
    pretrained = metrics["pretrained"]  # the pretrained G on tasks of training classes
    assert pretrained["fid"]["n"] == 2 and pretrained["diversity"]["mean"] > 0
    assert (
        "The pretrained generator on 2 tasks of training classes" in (out / "report.md").read_text()
    )
    assert not list(out.rglob("*.tmp")), "a temporary file was left behind"


def test_phase_commands_continue_a_run(tiny_run, tmp_path):
    out, data = tiny_run
    model = out / "meta-train" / "model.safetensors"
    before = model.read_bytes()
    _assert_one_line_error(mtgan("meta-train", "--run", str(out)), str(model), "--overwrite")
    assert model.read_bytes() == before
    assert mtgan("meta-train", "--run", str(out), "--no-progress", "--overwrite").returncode == 0
    r = mtgan(
        "adapt",
        "--run",
        str(out),
        "--images",
        str(data),
        "--out",
        str(tmp_path / "mine"),
        "--no-progress",
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "mine" / "model.safetensors").is_file()
    grid = Image.open(tmp_path / "mine" / "samples.png")
    assert grid.height > 16 * 16  # one row per class of the folder
    r = mtgan(
        "sample",
        "--checkpoint",
        str(tmp_path / "mine" / "model.safetensors"),
        "--out",
        str(tmp_path / "s.png"),
    )
    assert r.returncode == 0 and (tmp_path / "s.png").is_file()


def test_evaluate_scores_seeded_tasks_for_every_method(tiny_run, tmp_path):
    out, _ = tiny_run
    results = {}
    choices = [["--method", "mtgan"], ["--model", "pretrain"], ["--method", "finetune"]]
    for choice in choices:
        dest = tmp_path / choice[1]
        r = mtgan(
            "evaluate", "--from", str(out), "--tasks", "2", "--ways", "2", "--shots", "2",
            *choice, "--out", str(dest), "--no-progress",
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert "Mode Score" in r.stdout and (dest / "scores.png").is_file()
        results[choice[1]] = json.loads((dest / "metrics.json").read_text())
    for metrics in results.values():
        assert len(metrics["tasks"]) == 2
        assert {"mode_score", "real_mode_score", "fid", "copy_ratio"} <= set(metrics["summary"])
    # the same seed gives the same tasks, so the methods are compared on identical tasks
    classes = [[t["classes"] for t in metrics["tasks"]] for metrics in results.values()]
    assert classes[0] == classes[1] == classes[2]
    # --model pretrain is --method frozen: the same scores under either name
    r = mtgan(
        "evaluate", "--from", str(out), "--tasks", "2", "--ways", "2", "--shots", "2",
        "--method", "frozen", "--no-progress",
    )  # fmt: skip
    frozen = json.loads((out / "evaluations" / "frozen-2w2s-2t" / "metrics.json").read_text())
    assert r.returncode == 0 and frozen["summary"]["fid"] == results["pretrain"]["summary"]["fid"]


def test_evaluate_refuses_a_variant_the_run_was_not_made_with(tiny_run):
    out, _ = tiny_run
    r = mtgan("evaluate", "--from", str(out), "--method", "mtgan-eq5", "--no-progress")
    _assert_one_line_error(r, "model.objective='eq5'", "mtgan benchmark")


def test_atomic_write_replaces_whole_files_with_normal_permissions(tmp_path):
    from mtgan.files import atomic_write

    path = tmp_path / "a" / "f.txt"
    atomic_write(path, "one")
    atomic_write(path, b"two")
    assert path.read_text() == "two"
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # as open() would make it, not 0600
    assert [p.name for p in path.parent.iterdir()] == ["f.txt"]
