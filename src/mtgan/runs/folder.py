"""The run folder: its config, provenance and data splits.

A run folder holds ``config.yaml`` (the resolved config), ``run.json`` (versions, git commit,
command lines, learning-rate restarts), ``pretrain/model.safetensors``,
``meta-train/model.safetensors``, ``tasks/<k>/model.safetensors`` for each adapted test task,
``samples/*.png``, ``metrics.json``, ``losses.png`` and ``report.md``. While a phase runs, its
folder also holds ``state.safetensors``, the checkpoint it resumes from (``--resume``); a phase
is finished when its ``model.safetensors`` exists.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtgan import __version__
from mtgan.config import Config, load_config
from mtgan.data import ClassDataset, Task, load_splits, seeded_tasks
from mtgan.data.episodes import check_task_fits
from mtgan.distributed import init_from_env, is_main, main_first
from mtgan.errors import MtganError
from mtgan.files import atomic_write
from mtgan.phases.common import resolve_device

MODEL_FILE = "model.safetensors"
RUN_INFO = "run.json"
PHASE_FOLDERS = ("pretrain", "meta-train", "tasks")
"""The folders whose ``model.safetensors`` mark phases as finished."""


@dataclass
class Run:
    """A run folder with its config, data splits and device.

    ``resume``: finished phases are loaded instead of trained again and a phase continues from
    its state file; otherwise a phase starts afresh. ``on_nan``: ``stop`` ends a phase whose
    loss or weights become NaN or infinite; ``restart`` continues it from its last checkpoint
    with its learning rates halved (see :mod:`mtgan.runs.drivers`).
    """

    root: Path
    cfg: Config
    progress: bool = True
    resume: bool = False
    on_nan: str = "stop"
    splits: dict[str, ClassDataset] = field(default_factory=dict)
    histories: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return resolve_device(self.cfg.device, self.cfg.speed.deterministic)

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def data(self) -> dict[str, ClassDataset]:
        if not self.splits:
            self.splits = load_splits(self.cfg.data)
            t = self.cfg.task
            check_task_fits(self.splits["train"], t.n_way, t.k_shot, t.q_query)
            check_task_fits(self.splits["test"], t.n_way, t.k_shot, t.q_query)
        return self.splits


def create_run(
    root: str | Path, cfg: Config, overwrite: bool = False, progress: bool = True
) -> Run:
    """A new run folder with its ``config.yaml`` and ``run.json``; a non-empty one only with
    ``overwrite``. The data is read first, so that bad data leaves no folder behind."""
    root = Path(root)
    if root.exists() and any(root.iterdir()) and not overwrite:
        raise MtganError(
            f"run folder {root} exists and is not empty; pass --overwrite or another --out"
        )
    run = Run(root, cfg, progress)
    run.data()
    for phase in PHASE_FOLDERS:  # --overwrite: no model of an earlier run may pass as finished
        shutil.rmtree(root / phase, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    atomic_write(root / "config.yaml", cfg.to_yaml())
    atomic_write(root / RUN_INFO, json.dumps(provenance(), indent=2))
    return run


def new_run(
    root: str | Path, cfg: Config, overrides: list[str], overwrite: bool, progress: bool
) -> Run:
    """A new run folder (:func:`create_run`). Under torchrun rank 0 creates it and the other
    processes open it (with the same ``overrides``) once it exists."""
    init_from_env(resolve_device(cfg.device))
    with main_first():
        if is_main():
            return create_run(root, cfg, overwrite, progress)
        return open_run(root, overrides, progress=False)


def open_run(root: str | Path, overrides: list[str] | None = None, progress: bool = True) -> Run:
    """An existing run folder, with its config (plus ``overrides``)."""
    root = Path(root)
    if not (root / "config.yaml").is_file():
        raise MtganError(f"{root} is not a run folder (no config.yaml); create one with mtgan run")
    if (root / "meta").is_dir() and not (root / "meta-train").exists():
        raise MtganError(
            f"{root} was made by mtgan 0.1, whose phase (b) folder was meta/; rename "
            f"{root / 'meta'} to {root / 'meta-train'} to use it"
        )
    return Run(root, load_config(root / "config.yaml", overrides), progress)


def remove_leftovers(run: Run) -> list[Path]:
    """The temporary files that a killed process left in the run folder (an atomic write cut
    short), removed before the run is continued (by the main process under torchrun); returns
    them."""
    if not is_main():
        return []
    leftovers = [p for p in run.root.rglob(".*.tmp") if p.is_file()]
    for path in leftovers:
        path.unlink()
    return leftovers


def provenance() -> dict[str, Any]:
    """What produced a run: versions, the git commit of the package, the command line."""
    return {
        "mtgan": __version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "command": sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def git_commit() -> str | None:
    """The commit of the git checkout holding the package, or None outside one."""
    try:
        out = subprocess.run(
            ["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def record(run: Run, key: str, entry: dict[str, Any]) -> None:
    """Append ``entry`` to the list ``key`` of the run's ``run.json`` (resumes, restarts)."""
    if not is_main():
        return
    info = _run_info(run)
    info.setdefault(key, []).append({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **entry})
    atomic_write(run.path(RUN_INFO), json.dumps(info, indent=2))


def _run_info(run: Run) -> dict[str, Any]:
    try:
        info = json.loads(run.path(RUN_INFO).read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def seeded_test_tasks(run: Run, split: str = "test") -> list[Task]:
    """The seeded tasks of the test classes (or of another split's, for example ``validation``
    to choose settings on): the same seed gives the same tasks for every method."""
    t, e = run.cfg.task, run.cfg.eval
    classes = run.data().get(split)
    if classes is None or len(classes.classes) < t.n_way:
        have = 0 if classes is None else len(classes.classes)
        raise MtganError(
            f"{have} {split} classes are too few for {t.n_way}-way tasks"
            + (
                "; hold training classes out with data.validation_classes"
                if split != "test"
                else ""
            )
        )
    return seeded_tasks(classes, t.n_way, t.k_shot, t.q_query, e.seed, e.tasks)
