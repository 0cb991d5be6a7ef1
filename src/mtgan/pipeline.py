"""The run folder and the phases in order: what ``mtgan run`` and the phase commands call.

A run folder holds ``config.yaml`` (the resolved config), ``run.json`` (versions, git commit,
command lines, learning-rate restarts), ``pretrain/model.safetensors``,
``meta/model.safetensors``, ``tasks/<k>/model.safetensors`` for each adapted test task,
``samples/*.png``, ``metrics.json``, ``losses.png`` and ``report.md``. While a phase runs, its
folder also holds ``state.safetensors``, the checkpoint it resumes from (``--resume``); a phase
is finished when its ``model.safetensors`` exists.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import platform
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtgan import __version__
from mtgan.checkpoint import (
    ARCHITECTURE_KEYS,
    STATE_FILE,
    architecture,
    atomic_write,
    load_gan,
    save_gan,
)
from mtgan.config import Config, load_config
from mtgan.data import ClassDataset, EpisodeSampler, Task, load_splits
from mtgan.data.base import to_uint8
from mtgan.data.episodes import check_task_fits
from mtgan.distributed import is_main
from mtgan.errors import MtganError, NumericalError
from mtgan.metrics import Evaluator
from mtgan.nn.gan import ConditionalGAN
from mtgan.phases.adapt import adapt, sample
from mtgan.phases.common import resolve_device
from mtgan.phases.evaluate import evaluator_for, score_task, summarize
from mtgan.phases.meta_train import meta_train
from mtgan.phases.pretrain import build_gan, pretrain
from mtgan.report import (
    class_rows_grid,
    image_grid,
    markdown_summary,
    save_loss_plot,
    save_png,
    save_score_plot,
)

MODEL_FILE = "model.safetensors"
RUN_INFO = "run.json"
LR_SCALE_FILE = "lr_scale.json"
MAX_NAN_RESTARTS = 3
PHASE_FOLDERS = ("pretrain", "meta", "tasks")
"""The folders whose ``model.safetensors`` mark phases as finished."""


@dataclass
class Run:
    """A run folder with its config, data splits and device.

    ``resume``: finished phases are loaded instead of trained again and a phase continues from
    its state file; otherwise a phase starts afresh. ``on_nan``: ``stop`` ends a phase whose
    loss or weights become NaN or infinite; ``restart`` continues it from its last checkpoint
    with its learning rates halved (at most :data:`MAX_NAN_RESTARTS` times).
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
        return resolve_device(self.cfg.device)

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


def open_run(root: str | Path, overrides: list[str] | None = None, progress: bool = True) -> Run:
    """An existing run folder, with its config (plus ``overrides``)."""
    root = Path(root)
    if not (root / "config.yaml").is_file():
        raise MtganError(f"{root} is not a run folder (no config.yaml); create one with mtgan run")
    return Run(root, load_config(root / "config.yaml", overrides), progress)


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


def run_pretrain(run: Run) -> ConditionalGAN:
    """Phase (a) on the training classes; writes ``pretrain/model.safetensors``."""
    if run.resume and run.path("pretrain", MODEL_FILE).is_file():
        return _finished(run, "pretrain")
    train = run.data()["train"]

    def attempt(cfg: Config, state: Path) -> tuple[ConditionalGAN, list]:
        torch.manual_seed(cfg.seed)
        gan = build_gan(cfg, len(train.classes))
        return gan, pretrain(gan, train, cfg, run.device, run.progress, state)

    gan, info = _train(run, run.path("pretrain"), "pretrain", attempt)
    if is_main():  # under torchrun every process holds the same model; one writes it
        rng = torch.Generator().manual_seed(run.cfg.seed)
        shown = sample(gan, 10, rng, run.device, classes=10)[0]  # the first ten classes
        save_png(image_grid(to_uint8(shown.cpu()), ncols=10), run.path("samples", "pretrain.png"))
    _keep(run, "pretrain", info)
    _save_phase(gan, run.path("pretrain"), "pretrain", info, train.classes)
    return gan


def run_meta_train(run: Run, gan: ConditionalGAN | None = None) -> ConditionalGAN:
    """Phase (b) from the pretrained model; writes ``meta/model.safetensors``."""
    if run.resume and run.path("meta", MODEL_FILE).is_file():
        return _finished(run, "meta")
    pretrained = load_phase_model(run, "pretrain")[0] if gan is None else gan

    def attempt(cfg: Config, state: Path) -> tuple[ConditionalGAN, list]:
        gan = copy.deepcopy(pretrained)  # a restart starts from the pretrained model too
        torch.manual_seed(cfg.seed)  # head_init=random draws from it
        return gan, meta_train(gan, run.data()["train"], cfg, run.device, run.progress, state)

    gan, info = _train(run, run.path("meta"), "meta", attempt)
    _keep(run, "meta", info)
    _save_phase(gan, run.path("meta"), "meta-train", info)
    return gan


def load_phase_model(run: Run, phase: str) -> tuple[ConditionalGAN, dict[str, Any]]:
    """``<phase>/model.safetensors`` and its metadata, checked against the run's config."""
    path = run.path(phase, MODEL_FILE)
    if not path.is_file():
        raise MtganError(f"{path} does not exist; run the {phase} phase first")
    gan, meta = load_gan(path)
    have = architecture(gan)
    want = {**dataclasses.asdict(run.cfg.model), **dataclasses.asdict(run.cfg.data)}
    for key in ARCHITECTURE_KEYS:
        if have[key] != want[key]:
            section = "data" if key in ("image_size", "channels") else "model"
            raise MtganError(
                f"{path} was trained with {section}.{key}={have[key]!r} but the run's config "
                f"says {want[key]!r}; it comes from another run, or drop that --set"
            )
    return gan, meta


def _train(
    run: Run,
    folder: Path,
    section: str,
    attempt: Callable[[Config, Path], tuple[ConditionalGAN, list]],
) -> tuple[ConditionalGAN, dict[str, Any]]:
    """Train one phase with its state file in ``folder``, continued when resuming (else
    removed first). On NaN with ``on_nan=restart`` it continues from the last checkpoint with
    the learning rates of config ``section`` halved; ``folder/lr_scale.json`` keeps the factor
    for a later resume and ``run.json`` records every restart.

    Returns:
        The model and ``history`` (losses), ``seconds`` and ``lr_scale``.
    """
    state, scale_file = folder / STATE_FILE, folder / LR_SCALE_FILE
    if not run.resume:
        state.unlink(missing_ok=True)
        scale_file.unlink(missing_ok=True)
    scale = json.loads(scale_file.read_text())["lr_scale"] if scale_file.is_file() else 1.0
    start = time.perf_counter()
    for restart in range(MAX_NAN_RESTARTS + 1):
        try:
            gan, history = attempt(_scaled_lrs(run.cfg, section, scale), state)
            break
        except NumericalError as exc:
            if run.on_nan != "restart" or restart == MAX_NAN_RESTARTS:
                raise
            scale /= 2
            atomic_write(scale_file, json.dumps({"lr_scale": scale}))
            entry = {"folder": str(folder), "lr_scale": scale, "error": exc.reason}
            record(run, "nan_restarts", entry)
            warnings.warn(
                f"{exc.reason}: going on from its last checkpoint (or its start) with the "
                f"learning rate x{scale:g}",
                stacklevel=2,
            )
    return gan, {"history": history, "seconds": time.perf_counter() - start, "lr_scale": scale}


def _scaled_lrs(cfg: Config, section: str, scale: float) -> Config:
    """``cfg`` with every learning rate of ``section`` times ``scale``."""
    part = getattr(cfg, section)
    names = [f.name for f in dataclasses.fields(part) if f.name.endswith("lr")]
    lrs = {name: getattr(part, name) * scale for name in names}
    return dataclasses.replace(cfg, **{section: dataclasses.replace(part, **lrs)})


def _save_phase(
    gan: ConditionalGAN,
    folder: Path,
    phase: str,
    info: dict[str, Any],
    classes: list[str] | None = None,
) -> None:
    """The model (losses, seconds and learning-rate factor in its header), written last: a
    phase is finished when it exists. Then the state it was resumable from goes. Under torchrun
    only the main process writes."""
    if not is_main():
        return
    save_gan(gan, folder / MODEL_FILE, classes, phase=phase, **info)
    (folder / STATE_FILE).unlink(missing_ok=True)
    (folder / LR_SCALE_FILE).unlink(missing_ok=True)


_PHASE_KEYS = {"pretrain": ("pretrain", "pretrain_s"), "meta": ("meta-train", "meta_train_s")}


def _keep(run: Run, phase: str, info: dict[str, Any]) -> None:
    """A phase's losses and seconds, for the report."""
    history_key, seconds_key = _PHASE_KEYS[phase]
    run.histories[history_key] = info.get("history", [])
    run.timings[seconds_key] = info.get("seconds", 0.0)


def _finished(run: Run, phase: str) -> ConditionalGAN:
    """A finished phase's model, when resuming a run (a leftover state file goes)."""
    gan, meta = load_phase_model(run, phase)
    _keep(run, phase, meta)
    (run.path(phase, STATE_FILE)).unlink(missing_ok=True)
    return gan


def seeded_test_tasks(run: Run) -> list[Task]:
    """The seeded test tasks: the same seed gives the same tasks for every method."""
    t, e = run.cfg.task, run.cfg.eval
    sampler = EpisodeSampler(run.data()["test"], t.n_way, t.k_shot, t.q_query, e.seed)
    return [sampler.sample() for _ in range(e.tasks)]


def run_adapt(
    run: Run,
    gan: ConditionalGAN | None = None,
    evaluator: Evaluator | None = None,
    out: Path | None = None,
) -> list[dict[str, Any]]:
    """Phase (c) on every test task, scored by ``evaluator`` when given (phase d).

    Writes ``tasks/<k>/model.safetensors`` and ``samples/task_<k>.png`` under ``out`` (default:
    the run folder).
    """
    if gan is None:
        gan, _ = load_phase_model(run, "meta")
    out = run.root if out is None else out
    results = []
    test_classes = run.data()["test"].classes
    for k, task in enumerate(seeded_test_tasks(run)):
        seed = run.cfg.eval.seed + k
        adapted, info = _adapt_and_save(
            run, gan, task.support, task.support_labels, seed, out / "tasks" / str(k), task.classes
        )
        run.histories.setdefault("adapt", info["history"])
        fake, labels = _sample_grid(
            run, adapted, task.support, task.support_labels, seed, out / "samples" / f"task_{k}.png"
        )
        result = {"task": k, "classes": task.classes, "adapt_s": info["seconds"]}
        if evaluator is not None:
            result |= score_task(evaluator, test_classes, task, fake, labels)
        results.append(result)
    return results


def run_evaluate(run: Run, gan: ConditionalGAN, out: Path) -> dict[str, Any]:
    """Phase (d): M for the test classes, then every seeded test task adapted and scored.

    Writes ``metrics.json`` and ``scores.png`` (Mode Score per task against the real ceiling)
    under ``out``, besides what :func:`run_adapt` writes.
    """
    start = time.perf_counter()
    evaluator, evaluator_info = evaluator_for(run.data()["test"], run.cfg, run.device)
    run.timings["evaluator_s"] = time.perf_counter() - start
    tasks = run_adapt(run, gan, evaluator, out)
    metrics = {
        "evaluator": evaluator_info,
        "summary": summarize([{k: v for k, v in t.items() if k != "task"} for t in tasks]),
        "tasks": tasks,
        "timings": run.timings,
        "final_losses": _final_losses(run),
    }
    atomic_write(out / "metrics.json", json.dumps(metrics, indent=2))
    save_score_plot(tasks, run.cfg.task.n_way, out / "scores.png")
    return metrics


def run_all(run: Run) -> dict[str, Any]:
    """All phases in order, then ``metrics.json``, ``losses.png`` and ``report.md``."""
    gan = run_pretrain(run)
    gan = run_meta_train(run, gan)
    metrics = run_evaluate(run, gan, run.root)
    save_loss_plot(run.histories, run.path("losses.png"))
    atomic_write(run.path("report.md"), _report(run, metrics))
    return metrics


def _final_losses(run: Run) -> dict[str, dict[str, float]]:
    return {phase: h[-1] for phase, h in run.histories.items() if h}


def _report(run: Run, metrics: dict[str, Any]) -> str:
    cfg = run.cfg
    splits = ", ".join(f"{k} {len(v.classes)} classes" for k, v in run.data().items())
    acc = metrics["evaluator"]["heldout_accuracy"]
    lines = [
        f"# mtgan run `{run.root.name}`",
        "",
        f"Dataset `{cfg.data.name}`: {splits}. Tasks: {cfg.task.n_way}-way {cfg.task.k_shot}-shot, "
        f"{cfg.eval.tasks} test tasks; SS granularity `{cfg.model.ss_granularity}`.",
        "",
        f"Scores over the test tasks (mean ± 95% CI); the evaluator M's held-out accuracy on the "
        f"test classes is {acc:.1%}.",
        "",
        *markdown_summary(metrics["summary"]),
        "",
        "| phase | seconds |",
        "| --- | --- |",
        *[f"| {k.removesuffix('_s')} | {v:.1f} |" for k, v in metrics["timings"].items()],
        "",
        "Pretrained generator, ten training classes: ![](samples/pretrain.png)",
        "",
    ]
    for task in metrics["tasks"]:
        k = task["task"]
        lines += [
            f"Test task {k}, classes {', '.join(task['classes'])} (support | generated):",
            "",
            f"![](samples/task_{k}.png)",
            "",
        ]
    return "\n".join(lines)


def adapt_to_folder(run: Run, images: str | Path, out: Path) -> ConditionalGAN:
    """Phase (c) on a user's own images: ``images/<class>/*`` gives one class per subfolder.

    Writes ``model.safetensors`` (with the class names) and ``samples.png`` under ``out``.
    """
    from mtgan.data.folder import load_folder

    cfg = run.cfg
    gan, _ = load_phase_model(run, "meta")
    ds = load_folder(images, cfg.data.image_size, cfg.data.channels, strict=cfg.data.strict)
    support = torch.cat([ds.images_of(c) for c in ds.classes])
    labels = torch.cat([torch.full((len(ds.images_of(c)),), i) for i, c in enumerate(ds.classes)])
    adapted, _ = _adapt_and_save(run, gan, support, labels, cfg.seed, out, ds.classes, run.progress)
    _sample_grid(run, adapted, support, labels, cfg.seed, out / "samples.png")
    return adapted


def _adapt_and_save(
    run: Run,
    gan: ConditionalGAN,
    support: torch.Tensor,
    labels: torch.Tensor,
    seed: int,
    folder: Path,
    classes: list[str],
    progress: bool = False,
) -> tuple[ConditionalGAN, dict[str, Any]]:
    """Phase (c) with its state file in ``folder``, then ``folder/model.safetensors``."""

    def attempt(cfg: Config, state: Path) -> tuple[ConditionalGAN, list]:
        return adapt(gan, support, labels, cfg, run.device, seed, progress, state_path=state)

    adapted, info = _train(run, folder, "adapt", attempt)
    _save_phase(adapted, folder, "adapt", info, classes)
    return adapted, info


def _sample_grid(
    run: Run,
    gan: ConditionalGAN,
    support: torch.Tensor,
    support_labels: torch.Tensor,
    seed: int,
    path: Path,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded samples of every class (uint8, with their slots), saved beside the support."""
    rng = torch.Generator().manual_seed(seed)
    fake, labels = sample(gan, run.cfg.eval.samples_per_class, rng, run.device)
    fake, labels = to_uint8(fake.cpu()), labels.cpu()
    save_png(class_rows_grid(support, support_labels, fake, labels), path)
    return fake, labels
