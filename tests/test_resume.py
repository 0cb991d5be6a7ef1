"""Resuming: a phase stopped at any step and continued ends with the weights of an
uninterrupted one; state files are atomic, checked and refused when they do not fit."""

import copy
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mtgan import checkpoint
from mtgan.checkpoint import STATE_FILE, TrainingState
from mtgan.config import load_config
from mtgan.data.episodes import EpisodeSampler
from mtgan.errors import MtganError
from mtgan.files import atomic_write
from mtgan.phases.adapt import adapt
from mtgan.phases.common import state_identity
from mtgan.phases.meta_train import meta_train
from mtgan.phases.pretrain import build_gan, pretrain
from tests.conftest import TINY, image_folder, make_toy_dataset

CPU = torch.device("cpu")
EVERY = ["pretrain.checkpoint_every=2", "meta.checkpoint_every=2", "adapt.checkpoint_every=2"]
LONGER = ["pretrain.steps=7", "meta.steps=5", "adapt.steps=5"]


class Crash(Exception):
    """Stands for a process killed right after a checkpoint."""


def _crash_after_checkpoint(monkeypatch, phase, at_step):
    save = TrainingState.save

    def save_then_crash(self):
        save(self)
        if self.phase == phase and self.step == at_step:
            raise Crash

    monkeypatch.setattr(TrainingState, "save", save_then_crash)


def _weights(gan):
    return {k: v.detach().clone() for k, v in gan.state_dict().items()}


def _assert_same(a, b):
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"differ: {different[:3]}"


def _phases(cfg, dataset, state_dir):
    """Pretrain, meta-train and adapt, each with its own state file; returns their weights."""
    torch.manual_seed(0)
    gan = build_gan(cfg, len(dataset.classes))
    history = pretrain(gan, dataset, cfg, CPU, state_path=state_dir / "pretrain.safetensors")
    weights = {"pretrain": _weights(gan)}
    meta_train(gan, dataset, cfg, CPU, state_path=state_dir / "meta.safetensors")
    weights["meta"] = _weights(gan)
    task = EpisodeSampler(dataset, 3, 2, 2, seed=4).sample()
    adapted, _ = adapt(
        gan, task.support, task.support_labels, cfg, CPU, 3, False, state_dir / "adapt.safetensors"
    )
    weights["adapt"] = _weights(adapted)
    return weights, history


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The three phases uninterrupted: their weights and the pretraining losses."""
    cfg = load_config(overrides=TINY + EVERY + LONGER + ["meta.head_update=reset"])
    return cfg, *_phases(cfg, make_toy_dataset(), tmp_path_factory.mktemp("reference"))


@pytest.mark.parametrize("phase", ["pretrain", "meta-train", "adapt"])
@pytest.mark.parametrize("at_step", [2, 4])
def test_a_phase_continued_from_its_checkpoint_matches_an_uninterrupted_one(
    reference, toy_dataset, tmp_path, monkeypatch, phase, at_step
):
    cfg, expected, expected_history = reference
    with monkeypatch.context() as m:
        _crash_after_checkpoint(m, phase, at_step)
        with pytest.raises(Crash):
            _phases(cfg, toy_dataset, tmp_path)
    stem = phase.removesuffix("-train")
    saved = json.loads(_header(tmp_path / f"{stem}.safetensors")["__metadata__"]["mtgan"])
    assert saved["step"] == at_step
    resumed, history = _phases(cfg, toy_dataset, tmp_path)  # earlier phases resume at their end
    for name in expected:
        _assert_same(expected[name], resumed[name])
    assert history == expected_history


def _header(path):
    raw = Path(path).read_bytes()
    return json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])


def test_a_state_file_of_other_settings_is_refused(toy_dataset, tmp_path, monkeypatch, device):
    cfg = load_config(overrides=TINY + EVERY + LONGER)
    torch.manual_seed(0)
    gan = build_gan(cfg, len(toy_dataset.classes))
    _crash_after_checkpoint(monkeypatch, "meta-train", 2)
    with pytest.raises(Crash):
        meta_train(gan, toy_dataset, cfg, device, state_path=tmp_path / STATE_FILE)
    other = load_config(overrides=TINY + EVERY + LONGER + ["task.n_way=2"])
    torch.manual_seed(0)
    gan = build_gan(cfg, len(toy_dataset.classes))
    with pytest.raises(MtganError, match=r"task\.n_way=3, not 2"):
        meta_train(gan, toy_dataset, other, device, state_path=tmp_path / STATE_FILE)


def test_atomic_write_fsyncs_the_file_and_its_folder(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    atomic_write(tmp_path / "f.bin", b"data")
    assert synced == [False, True]  # the temporary file, then the folder after the rename


def test_a_nan_weight_is_never_checkpointed(tmp_path):
    net = torch.nn.Linear(2, 2)
    state = TrainingState("toy", tmp_path / STATE_FILE, 1, {}, net, {}, {})
    state.record({"loss": 1.0})
    good = (tmp_path / STATE_FILE).read_bytes()
    with torch.no_grad():
        net.weight[0, 0] = float("nan")
    with pytest.raises(checkpoint.NumericalError, match="weight holds NaN.*last good checkpoint"):
        state.record({"loss": 1.0})
    assert (tmp_path / STATE_FILE).read_bytes() == good
    with pytest.raises(checkpoint.NumericalError, match="loss is inf"):
        state.record({"loss": float("inf")})


# --- the command, killed with SIGKILL and resumed -------------------------------------------


def _quick(data: Path) -> list[str]:
    """``--quick`` on a folder of noise images (no glyph rendering), a little shorter."""
    sets = [f"data.root={data}", "data.name=folder", "eval.evaluator_epochs=1"]
    return ["--quick", *[a for s in sets for a in ("--set", s)]]


def _start(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "mtgan", *args, "--no-progress"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_when(proc, path: Path, timeout=120):
    """SIGKILL ``proc`` as soon as ``path`` exists (polled every 10 ms)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"finished before {path} appeared: {proc.stderr.read()}"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()


def _finish(proc):
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()


MODELS = [
    "pretrain/model.safetensors",
    "meta-train/model.safetensors",
    "tasks/0/model.safetensors",
    "tasks/1/model.safetensors",
]


def test_run_killed_at_several_points_and_resumed_ends_with_identical_weights(tmp_path):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    quick = _quick(image_folder(tmp_path / "images", 30, 10))
    _finish(_start("run", *quick, "--out", str(reference)))
    proc = _start("run", *quick, "--out", str(killed))
    for point in ["pretrain/state.safetensors", "meta-train/state.safetensors", MODELS[2]]:
        _kill_when(proc, killed / point)  # mid pretraining, mid meta-training, mid evaluation
        proc = _start("run", "--resume", str(killed))
    _finish(proc)
    for rel in MODELS:
        a, b = load_file(reference / rel), load_file(killed / rel)
        assert a.keys() == b.keys(), rel
        assert all(torch.equal(a[k], b[k]) for k in a), f"{rel} differs after resuming"
    assert not list(killed.rglob("*.tmp")) and not list(killed.rglob(STATE_FILE))
    info = json.loads((killed / "run.json").read_text())
    assert len(info["resumed"]) == 3 and info["torch"] == torch.__version__


# --- numerical health: NaN stops a phase, --on-nan restart halves the learning rate ---------


@pytest.fixture
def pretrain_args(tmp_path):
    data = image_folder(tmp_path / "images", 16, 6)
    sets = [*TINY, "data.name=folder", f"data.root={data}", "pretrain.steps=8", *EVERY]
    return [a for s in sets for a in ("--set", s)] + ["--no-progress"]


def _nan_at(monkeypatch, calls: set[int]) -> list[int]:
    """Make pretraining's loss_d NaN at the given (1-based) calls of the GAN step."""
    from mtgan.phases.step import GanStep

    seen, step = [], GanStep.__call__

    def gan_step(*args, **kwargs):
        seen.append(len(seen) + 1)
        params, losses = step(*args, **kwargs)
        return params, {**losses, "loss_d": float("nan")} if seen[-1] in calls else losses

    monkeypatch.setattr(GanStep, "__call__", gan_step)
    return seen


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_nan_stops_the_phase_keeps_the_last_checkpoint_and_resumes(
    tmp_path, pretrain_args, monkeypatch, capsys
):
    from mtgan.cli import main

    out = tmp_path / "run"
    _nan_at(monkeypatch, {5})
    assert main(["pretrain", "--out", str(out), *pretrain_args]) == 1
    line = _one_line(capsys.readouterr().err)
    assert "pretrain diverged at step 5: loss_d is nan" in line
    assert f"last good checkpoint {out / 'pretrain' / STATE_FILE} is kept" in line
    assert "--on-nan restart" in line
    saved = json.loads(_header(out / "pretrain" / STATE_FILE)["__metadata__"]["mtgan"])
    assert saved["step"] == 4 and not (out / "pretrain" / "model.safetensors").exists()
    monkeypatch.undo()
    assert main(["pretrain", "--resume", str(out), "--no-progress"]) == 0
    assert (out / "pretrain" / "model.safetensors").is_file()


def test_on_nan_restart_continues_from_the_checkpoint_with_half_the_lr(
    tmp_path, pretrain_args, monkeypatch, capsys
):
    import mtgan.runs.drivers as drivers
    from mtgan.cli import main

    lrs, real_pretrain = [], drivers.pretrain

    def pretrain(gan, dataset, cfg, *args):
        lrs.append(cfg.pretrain.lr)
        return real_pretrain(gan, dataset, cfg, *args)

    monkeypatch.setattr(drivers, "pretrain", pretrain)
    calls = _nan_at(monkeypatch, {5})
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="step 5: loss_d is nan: going on .* x0.5"):
        assert main(["pretrain", "--out", str(out), "--on-nan", "restart", *pretrain_args]) == 0
    assert lrs == [2e-4, 1e-4]
    assert len(calls) == 5 + (8 - 4)  # the restart went on from the checkpoint of step 4
    restarts = json.loads((out / "run.json").read_text())["nan_restarts"]
    assert [r["lr_scale"] for r in restarts] == [0.5] and "loss_d is nan" in restarts[0]["error"]
    header = json.loads(_header(out / "pretrain" / "model.safetensors")["__metadata__"]["mtgan"])
    assert header["lr_scale"] == 0.5 and len(header["history"]) == 8


def test_on_nan_restart_gives_up_after_a_few_halvings(tmp_path, pretrain_args, monkeypatch, capsys):
    from mtgan.cli import main

    _nan_at(monkeypatch, set(range(1, 100)))
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="x0.125"):
        assert main(["pretrain", "--out", str(out), "--on-nan", "restart", *pretrain_args]) == 1
    assert "diverged at step 1" in capsys.readouterr().err.splitlines()[-1]
    assert len(json.loads((out / "run.json").read_text())["nan_restarts"]) == 3


def test_run_folder_records_versions_and_command(tmp_path, pretrain_args):
    from mtgan.cli import main

    out = tmp_path / "run"
    assert main(["pretrain", "--out", str(out), *pretrain_args]) == 0
    info = json.loads((out / "run.json").read_text())
    assert info["torch"] == torch.__version__ and info["numpy"] == np.__version__
    assert info["mtgan"] == __import__("mtgan").__version__ and info["python"]
    assert info["command"] == sys.argv and info["started"]
    commit = info["git_commit"]
    assert commit is None or (len(commit) == 40 and int(commit, 16) >= 0)
    assert (out / "config.yaml").is_file()


def test_overwrite_removes_the_models_of_the_earlier_run(tmp_path, pretrain_args):
    from mtgan.cli import main

    out = tmp_path / "run"
    (out / "meta-train").mkdir(parents=True)
    (out / "meta-train" / "model.safetensors").write_bytes(b"an earlier run's meta model")
    assert main(["pretrain", "--out", str(out), "--overwrite", *pretrain_args]) == 0
    assert (out / "pretrain" / "model.safetensors").is_file()
    assert not (out / "meta-train").exists()  # a later --resume must not take it as finished


def _pretrained_g(cfg, dataset, state_path=None):
    torch.manual_seed(0)
    gan = build_gan(cfg, len(dataset.classes))
    pretrain(gan, dataset, cfg, CPU, state_path=state_path)
    return {k: v for k, v in _weights(gan).items() if k.startswith("generator.")}


@pytest.mark.parametrize("option", ["pretrain.ema=0.9", "pretrain.augment=translation,cutout"])
def test_an_averaged_or_augmented_pretraining_resumes_bit_for_bit(
    toy_dataset, tmp_path, monkeypatch, option
):
    cfg = load_config(overrides=TINY + EVERY + LONGER + [option])
    expected = _pretrained_g(cfg, toy_dataset)
    with monkeypatch.context() as m:
        _crash_after_checkpoint(m, "pretrain", 4)
        with pytest.raises(Crash):
            _pretrained_g(cfg, toy_dataset, tmp_path / STATE_FILE)
    _assert_same(expected, _pretrained_g(cfg, toy_dataset, tmp_path / STATE_FILE))


def _wobble(gan):
    """A deterministic score of a meta-model that rises and falls as its weights move."""
    return float(torch.sin(1000 * sum(p.detach().double().sum() for p in gan.parameters())))


def test_meta_training_with_validation_resumes_bit_for_bit(
    toy_dataset, tmp_path, monkeypatch, device
):
    cfg = load_config(overrides=TINY + EVERY + ["meta.steps=8", "meta.validate_every=2"])
    torch.manual_seed(0)
    start = build_gan(cfg, len(toy_dataset.classes))
    pretrain(start, toy_dataset, cfg, device)

    def meta(state_path=None):
        gan = copy.deepcopy(start)
        history = meta_train(gan, toy_dataset, cfg, device, False, state_path, _wobble)
        return _weights(gan), history

    expected, expected_history = meta()
    with monkeypatch.context() as m:
        _crash_after_checkpoint(m, "meta-train", 4)
        with pytest.raises(Crash):
            meta(tmp_path / STATE_FILE)
    resumed, history = meta(tmp_path / STATE_FILE)
    _assert_same(expected, resumed)
    assert history == expected_history


def test_settings_added_later_leave_the_identity_alone_at_their_earlier_value():
    cfg = load_config(overrides=TINY)
    before = state_identity(cfg, ("data", "model"))
    assert not {"model.spectral_norm", "data.train_per_class"} & set(before)
    assert before["model.z_dim"] == cfg.model.z_dim  # the other settings are still there
    changed = load_config(overrides=[*TINY, "model.spectral_norm=true"])
    assert state_identity(changed, ("data", "model"))["model.spectral_norm"] is True
