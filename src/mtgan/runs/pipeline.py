"""What ``mtgan run``, ``adapt`` and ``evaluate`` do in a run folder: a registered method trained
there (:class:`mtgan.runs.drivers.RunContext`), then adapted to the seeded test tasks (or to a
user's images), sampled and scored.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from mtgan.data.base import to_uint8
from mtgan.data.folder import load_folder
from mtgan.files import atomic_write
from mtgan.methods import Fitted, get
from mtgan.metrics import Evaluator
from mtgan.nn.gan import load_gan
from mtgan.phases.adapt import sample
from mtgan.phases.common import resolve_device
from mtgan.phases.evaluate import evaluator_for, score_task, summarize
from mtgan.report import (
    class_rows_grid,
    image_grid,
    save_loss_plot,
    save_png,
    save_score_plot,
)
from mtgan.runs.drivers import RunContext, save_phase
from mtgan.runs.folder import Run, seeded_test_tasks
from mtgan.runs.run_report import run_report


def fit(run: Run, method: str, train: bool = False, show_adaptation: bool = False) -> Fitted:
    """``method`` trained in ``run``'s folder (``train``) or from its finished phases."""
    chosen = get(method)
    ctx = RunContext(run, train, show_adaptation)
    return chosen.fit(ctx, chosen.configure(run.cfg))


def run_all(run: Run) -> dict[str, Any]:
    """Meta Transfer GAN's phases in order, then ``metrics.json``, ``losses.png`` and
    ``report.md``."""
    fitted = fit(run, "mtgan", train=True)
    metrics = run_evaluate(run, fitted, run.root)
    save_loss_plot(run.histories, run.path("losses.png"))
    atomic_write(run.path("report.md"), run_report(run, metrics))
    return metrics


def adapt_tasks(
    run: Run, fitted: Fitted, out: Path | None = None, evaluator: Evaluator | None = None
) -> list[dict[str, Any]]:
    """Every seeded test task adapted, scored by ``evaluator`` when given (phase d).

    Writes ``tasks/<k>/model.safetensors`` (for methods that adapt one GAN) and
    ``samples/task_<k>.png`` under ``out`` (default: the run folder).
    """
    out = run.root if out is None else out
    results = []
    test_classes = run.data()["test"].classes
    for k, task in enumerate(seeded_test_tasks(run)):
        seed, folder, grid = run.cfg.eval.seed + k, out / "tasks" / str(k), out / "samples"
        shots = task.support, task.support_labels, task.classes
        fake, labels, seconds = _adapt(run, fitted, *shots, seed, folder, grid / f"task_{k}.png")
        result = {"task": k, "classes": task.classes, "adapt_s": seconds}
        if evaluator is not None:
            result |= score_task(evaluator, test_classes, task, fake, labels)
        results.append(result)
    return results


def _adapt(
    run: Run,
    fitted: Fitted,
    support: torch.Tensor,
    labels: torch.Tensor,
    classes: list[str],
    seed: int,
    folder: Path,
    grid: Path,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Adapt to one set of K shots (the model saved in ``folder`` with the class names), then
    seeded samples beside the support images in the PNG ``grid``. Returns the samples (uint8),
    their slots and the adaptation seconds."""
    start = time.perf_counter()
    adapted = fitted.adapt(support, labels, seed, folder)
    seconds = time.perf_counter() - start
    if adapted.gan is not None:
        save_phase(adapted.gan, folder, "adapt", adapted.info, classes)
    run.histories.setdefault("adapt", adapted.info.get("history", []))
    fake, slots = adapted.sample(run.cfg.eval.samples_per_class, seed)
    fake, slots = to_uint8(fake.cpu()), slots.cpu()
    save_png(class_rows_grid(support, labels, fake, slots), grid)
    return fake, slots, seconds


def run_evaluate(run: Run, fitted: Fitted, out: Path) -> dict[str, Any]:
    """Phase (d): M for the test classes, then every seeded test task adapted and scored.

    Writes ``metrics.json`` and ``scores.png`` (Mode Score per task against the real ceiling)
    under ``out``, besides what :func:`adapt_tasks` writes.
    """
    start = time.perf_counter()
    evaluator, evaluator_info = evaluator_for(run.data()["test"], run.cfg, run.device)
    run.timings["evaluator"] = time.perf_counter() - start
    tasks = adapt_tasks(run, fitted, out, evaluator)
    metrics = {
        "evaluator": evaluator_info,
        "summary": summarize([{k: v for k, v in t.items() if k != "task"} for t in tasks]),
        "tasks": tasks,
        "timings": run.timings,
        "final_losses": {phase: h[-1] for phase, h in run.histories.items() if h},
    }
    atomic_write(out / "metrics.json", json.dumps(metrics, indent=2))
    save_score_plot(tasks, run.cfg.task.n_way, out / "scores.png")
    return metrics


def adapt_to_folder(run: Run, images: str | Path, out: Path) -> None:
    """Phase (c) on a user's own images: ``images/<class>/*`` gives one class per subfolder.

    Writes ``model.safetensors`` (with the class names) and ``samples.png`` under ``out``.
    """
    cfg = run.cfg
    fitted = fit(run, "mtgan", show_adaptation=run.progress)
    ds = load_folder(images, cfg.data.image_size, cfg.data.channels, strict=cfg.data.strict)
    support = torch.cat([ds.images_of(c) for c in ds.classes])
    labels = torch.cat([torch.full((len(ds.images_of(c)),), i) for i, c in enumerate(ds.classes)])
    _adapt(run, fitted, support, labels, ds.classes, cfg.seed, out, out / "samples.png")


def sample_checkpoint(
    checkpoint: str | Path, per_class: int, seed: int, device: str, out: str | Path
) -> int:
    """A grid of ``per_class`` seeded images of every class of a model checkpoint, written to
    ``out``; returns the number of classes."""
    gan, _ = load_gan(checkpoint)
    where = resolve_device(device)
    images, _ = sample(gan.to(where), per_class, torch.Generator().manual_seed(seed), where)
    save_png(image_grid(to_uint8(images.cpu()), ncols=per_class), out)
    return gan.n_classes
