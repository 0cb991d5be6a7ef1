"""The run folder and the phases in order: what ``mtgan run`` and the phase commands call.

A run folder holds ``config.yaml`` (the resolved config), ``pretrain/model.safetensors``,
``meta/model.safetensors``, ``tasks/<k>/model.safetensors`` for each adapted test task,
``samples/*.png``, ``metrics.json``, ``losses.png`` and ``report.md``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mtgan.checkpoint import atomic_write, load_gan, save_gan
from mtgan.config import Config, load_config
from mtgan.data import ClassDataset, EpisodeSampler, Task, load_splits
from mtgan.data.base import to_uint8
from mtgan.data.episodes import check_task_fits
from mtgan.distributed import is_main
from mtgan.errors import MtganError
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


@dataclass
class Run:
    """A run folder with its config, data splits and device."""

    root: Path
    cfg: Config
    progress: bool = True
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
    """A new run folder with its ``config.yaml``; a non-empty one only with ``overwrite``."""
    root = Path(root)
    if root.exists() and any(root.iterdir()) and not overwrite:
        raise MtganError(
            f"run folder {root} exists and is not empty; pass --overwrite or another --out"
        )
    root.mkdir(parents=True, exist_ok=True)
    atomic_write(root / "config.yaml", cfg.to_yaml())
    return Run(root, cfg, progress)


def open_run(root: str | Path, overrides: list[str] | None = None, progress: bool = True) -> Run:
    """An existing run folder, with its config (plus ``overrides``)."""
    root = Path(root)
    if not (root / "config.yaml").is_file():
        raise MtganError(f"{root} is not a run folder (no config.yaml); create one with mtgan run")
    return Run(root, load_config(root / "config.yaml", overrides), progress)


def run_pretrain(run: Run) -> ConditionalGAN:
    """Phase (a) on the training classes; writes ``pretrain/model.safetensors``."""
    train = run.data()["train"]
    torch.manual_seed(run.cfg.seed)
    gan = build_gan(run.cfg, len(train.classes))
    start = time.perf_counter()
    run.histories["pretrain"] = pretrain(gan, train, run.cfg, run.device, run.progress)
    run.timings["pretrain_s"] = time.perf_counter() - start
    if is_main():  # under torchrun every process holds the same model; one writes it
        save_gan(gan, run.path("pretrain", "model.safetensors"), train.classes, phase="pretrain")
        rng = torch.Generator().manual_seed(run.cfg.seed)
        shown = _pretrain_preview(gan, rng, run.device)
        save_png(image_grid(shown, ncols=10), run.path("samples", "pretrain.png"))
    return gan


def run_meta_train(run: Run, gan: ConditionalGAN | None = None) -> ConditionalGAN:
    """Phase (b) from the pretrained model; writes ``meta/model.safetensors``."""
    if gan is None:
        gan, _ = load_gan(run.path("pretrain", "model.safetensors"))
    start = time.perf_counter()
    run.histories["meta-train"] = meta_train(
        gan, run.data()["train"], run.cfg, run.device, run.progress
    )
    run.timings["meta_train_s"] = time.perf_counter() - start
    if is_main():
        save_gan(gan, run.path("meta", "model.safetensors"), phase="meta-train")
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
        gan, _ = load_gan(run.path("meta", "model.safetensors"))
    out = run.root if out is None else out
    results = []
    test_classes = run.data()["test"].classes
    for k, task in enumerate(seeded_test_tasks(run)):
        start = time.perf_counter()
        adapted, history = adapt(
            gan, task.support, task.support_labels, run.cfg, run.device, seed=run.cfg.eval.seed + k
        )
        seconds = time.perf_counter() - start
        run.histories.setdefault("adapt", history)
        save_gan(adapted, out / "tasks" / str(k) / "model.safetensors", task.classes, phase="adapt")
        fake, labels = _sample_grid(
            run, adapted, task.support, task.support_labels, run.cfg.eval.seed + k,
            out / "samples" / f"task_{k}.png",
        )  # fmt: skip
        result = {"task": k, "classes": task.classes, "adapt_s": seconds}
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


def _pretrain_preview(gan: ConditionalGAN, rng: torch.Generator, device: torch.device):
    """Ten samples of each of the first ten pretraining classes."""
    n = min(10, gan.n_classes)
    labels = torch.arange(n).repeat_interleave(10).to(device)
    z = torch.randn(len(labels), gan.generator.z_dim, generator=rng).to(device)
    with torch.no_grad():
        return to_uint8(gan.generator(z, labels).cpu())


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
    ds = load_folder(images, cfg.data.image_size, cfg.data.channels)
    gan, _ = load_gan(run.path("meta", "model.safetensors"))
    support = torch.cat([ds.images_of(c) for c in ds.classes])
    labels = torch.cat([torch.full((len(ds.images_of(c)),), i) for i, c in enumerate(ds.classes)])
    adapted, _ = adapt(gan, support, labels, cfg, run.device, seed=cfg.seed, progress=run.progress)
    save_gan(adapted, out / "model.safetensors", ds.classes, phase="adapt")
    _sample_grid(run, adapted, support, labels, cfg.seed, out / "samples.png")
    return adapted


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
