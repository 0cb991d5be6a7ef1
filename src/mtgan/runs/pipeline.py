"""What ``mtgan run``, ``adapt`` and ``evaluate`` do in a run folder: a registered method trained
there (:class:`mtgan.runs.drivers.RunContext`), then adapted to the seeded test tasks (or to a
user's images), sampled and scored.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from mtgan.data.base import to_uint8
from mtgan.data.folder import IMAGE_SUFFIXES, load_folder
from mtgan.files import atomic_write
from mtgan.methods import Fitted, get
from mtgan.metrics import Evaluator
from mtgan.nn.gan import load_gan
from mtgan.nn.ss import ss_movement
from mtgan.phases.adapt import sample
from mtgan.phases.common import resolve_device
from mtgan.phases.evaluate import evaluator_for, score_pretrained, score_task, summarize
from mtgan.report import (
    class_rows_grid,
    save_loss_plot,
    save_png,
    save_score_plot,
)
from mtgan.runs.drivers import RunContext, save_phase, validation_classes
from mtgan.runs.folder import Run, seeded_test_tasks
from mtgan.runs.loss_log import log_losses
from mtgan.runs.outputs import folder_names, replace_folder, write_images
from mtgan.runs.run_report import run_report


def fit(run: Run, method: str, train: bool = False, show_adaptation: bool = False) -> Fitted:
    """``method`` trained in ``run``'s folder (``train``) or from its finished phases."""
    chosen = get(method)
    ctx = RunContext(run, train, show_adaptation)
    return chosen.fit(ctx, chosen.configure(run.cfg))


def run_all(run: Run) -> dict[str, Any]:
    """Meta Transfer GAN's phases in order, then ``metrics.json`` (with the pretrained G's own
    scores on training classes, :func:`score_pretrained`, and how far meta-training moved each
    layer's scale and shift, :func:`ss_movement`), ``losses.png`` and ``report.md``."""
    validation_classes(run, run.cfg)  # refuse a validation without classes before training
    fitted = fit(run, "mtgan", train=True)
    pretrained, _ = RunContext(run, train=False).pretrained(run.cfg)
    start = time.perf_counter()
    stage, _ = score_pretrained(pretrained, run.data()["train"], run.cfg, run.device)
    run.timings["pretrained-scores"] = time.perf_counter() - start
    stages = {"pretrained": summarize(stage), "ss_movement": ss_movement(fitted.gan)}
    if run.cfg.meta.learn_rates:
        stages["learned_rates"] = fitted.gan.rates.summary()
    metrics = run_evaluate(run, fitted, run.root, stages)
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
        seed, folder = run.cfg.eval.seed + k, out / "tasks" / str(k)
        shots = task.support, task.support_labels, task.classes
        per_class = run.cfg.eval.samples_per_class
        fake, labels, seconds = _adapt(run, fitted, *shots, seed, folder, per_class)
        grid = class_rows_grid(task.support, task.support_labels, fake, labels)
        save_png(grid, out / "samples" / f"task_{k}.png")
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
    per_class: int,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Adapt to one set of K shots (the model saved in ``folder`` with the class names), then
    ``per_class`` seeded samples of each class. Returns the samples (uint8), their slots and
    the adaptation seconds."""
    start = time.perf_counter()
    adapted = fitted.adapt(support, labels, seed, folder)
    seconds = time.perf_counter() - start
    if adapted.gan is not None:
        save_phase(adapted.gan, folder, "adapt", adapted.info, classes)
    if "adapt" not in run.histories:  # the first task's losses stand for adaptation's
        run.histories["adapt"] = adapted.info.get("history", [])
        log_losses(run, "adapt")
    fake, slots = adapted.sample(per_class, seed)
    return to_uint8(fake.cpu()), slots.cpu(), seconds


def run_evaluate(
    run: Run, fitted: Fitted, out: Path, stages: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Phase (d): M for the test classes, then every seeded test task adapted and scored.

    Writes ``metrics.json`` (with ``stages``, scores of earlier phases' models, when given) and
    ``scores.png`` (Mode Score per task against the real ceiling) under ``out``, besides what
    :func:`adapt_tasks` writes.
    """
    start = time.perf_counter()
    evaluator, evaluator_info = evaluator_for(run.data()["test"], run.cfg, run.device)
    run.timings["evaluator"] = time.perf_counter() - start
    tasks = adapt_tasks(run, fitted, out, evaluator)
    metrics = {
        "evaluator": evaluator_info,
        "summary": summarize([{k: v for k, v in t.items() if k != "task"} for t in tasks]),
        "tasks": tasks,
        **(stages or {}),
        "timings": run.timings,
        "final_losses": {phase: h[-1] for phase, h in run.histories.items() if h},
    }
    atomic_write(out / "metrics.json", json.dumps(metrics, indent=2))
    save_score_plot(tasks, run.cfg.task.n_way, out / "scores.png")
    return metrics


SHOWN_BESIDE_SUPPORT = 10
"""Generated images per class in ``samples.png`` beside the support images (all of them are in
the labelled grid and the files)."""


def adapt_to_folder(
    run: Run, images: str | Path, out: Path, per_class: int | None = None
) -> dict[str, Any]:
    """Phase (c) on a user's own images: ``images/<class>/*`` gives one class per subfolder.

    Writes under ``out``: ``model.safetensors`` (with the class names), ``samples.png`` (the
    support images beside generated ones), ``per_class`` generated images per class (default
    ``eval.samples_per_class``) as ``images/<class>/<i>.png`` with ``images/grid.png``, and
    as ``images.npz`` (see :mod:`mtgan.runs.outputs`). Warns about a single class, classes of
    fewer than 3 images and classes of different sizes.

    Returns:
        ``classes`` in slot order, ``adapt_s`` and ``per_class``.
    """
    cfg = run.cfg
    per_class = per_class or cfg.eval.samples_per_class
    fitted = fit(run, "mtgan", show_adaptation=run.progress)
    ds = load_folder(images, cfg.data.image_size, cfg.data.channels, strict=cfg.data.strict)
    warn_about_shots(images, {c: len(ds.images_of(c)) for c in ds.classes})
    support, labels = ds.stacked()
    fake, slots, seconds = _adapt(
        run, fitted, support, labels, ds.classes, cfg.seed, out, per_class
    )
    shown = torch.cat([torch.nonzero(slots == s)[:SHOWN_BESIDE_SUPPORT, 0] for s in slots.unique()])
    save_png(class_rows_grid(support, labels, fake[shown], slots[shown]), out / "samples.png")
    write_images(fake, slots, ds.classes, out / "images")
    write_images(fake, slots, ds.classes, out / "images.npz")
    return {"classes": ds.classes, "adapt_s": seconds, "per_class": per_class}


def augment_folder(
    run: Run, images: str | Path, out: Path, per_class: int, with_support: bool = False
) -> dict[str, Any]:
    """A training set made from K shots (``mtgan augment``): ``out/<class>/`` holds
    ``per_class`` generated images (``0000.png``, ...) and, ``with_support``, the original
    files (``support-<name>``), in the folder layout that the project (and torchvision's
    ``ImageFolder``) reads; ``out/grid.png`` shows them. ``out`` is replaced whole.

    Returns:
        What :func:`adapt_to_folder` returns.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as work:
        info = adapt_to_folder(run, images, Path(work), per_class)
        made = Path(work) / "images"
        if with_support:
            for name, cls in zip(folder_names(info["classes"]), info["classes"], strict=True):
                for file in sorted((Path(images) / cls).iterdir()):
                    if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES:
                        shutil.copy2(file, made / name / f"support-{file.name}")
        replace_folder(made, out)
    return info


def warn_about_shots(images: str | Path, counts: dict[str, int]) -> None:
    """One warning for a set of shots that is usable but unlike a few-shot task."""
    notes = []
    if len(counts) == 1:
        notes.append("it has a single class (NM and CF learn nothing to tell classes apart)")
    few = [c for c, n in counts.items() if n < 3]
    if few:
        notes.append(f"{len(few)} class(es) have fewer than 3 images, first {few[0]!r}")
    if len(set(counts.values())) > 1:
        notes.append(f"classes have different K ({min(counts.values())} to {max(counts.values())})")
    if notes:
        warnings.warn(f"{images}: " + "; ".join(notes), stacklevel=2)


def sample_checkpoint(
    checkpoint: str | Path, per_class: int, seed: int, device: str, *outs: Path
) -> list[str]:
    """``per_class`` seeded images of every class of a model checkpoint, drawn once and written
    to each of ``outs`` (:func:`mtgan.runs.outputs.write_images`: a folder, a grid, an npz);
    returns the class names in slot order."""
    gan, meta = load_gan(checkpoint)
    where = resolve_device(device)
    images, slots = sample(gan.to(where), per_class, torch.Generator().manual_seed(seed), where)
    classes = meta.get("classes") or [f"class_{i}" for i in range(gan.n_classes)]
    for out in outs:
        write_images(to_uint8(images.cpu()), slots.cpu(), classes, out)
    return classes
