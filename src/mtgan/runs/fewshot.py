"""The few-shot classification benchmark (``mtgan fewshot``): do generated images help a
classifier of new classes?

For every seeded N-way K-shot test task a linear probe (:mod:`mtgan.metrics.fewshot`) on a
backbone trained on the training classes only is trained under several conditions and scored
on the task's query images:

- ``support``: the K shots alone;
- ``classic``: the K shots and M augmented copies per class (shifts, rotations, scalings,
  mirror images where ``fewshot.flip``);
- ``<method>``: the K shots and M images per class that a registered method generated after
  adapting to them; ``<method>+classic``: both kinds of extra images.

Each condition's M is chosen among ``fewshot.generated`` by its mean accuracy on tasks of the
validation classes; the test tasks only report.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mtgan.data.base import to_uint8
from mtgan.data.episodes import Task, seeded_tasks
from mtgan.errors import MtganError
from mtgan.files import atomic_write
from mtgan.methods import METHODS, Fitted
from mtgan.metrics import (
    extract_features,
    pairwise_diversity,
    train_evaluator,
)
from mtgan.metrics.fewshot import classic_copies, first_per_class, probe_accuracy
from mtgan.phases.evaluate import summarize
from mtgan.report import condition_bars, mean_ci_text
from mtgan.runs.benchmark import Benchmark
from mtgan.runs.folder import Run, git_commit, seeded_test_tasks
from mtgan.runs.results import machine, paired, provenance

SUPPORT, CLASSIC = "support", "classic"
BASELINES = (SUPPORT, CLASSIC)
"""The conditions every generated-image condition is compared with, task by task."""

CLASSIFIER = (
    "logistic regression (L-BFGS, L2 penalty as scikit-learn's C = 1) on the L2-normalised "
    "128-dimensional features of a ResNet trained by cross-entropy on the training classes"
)


@dataclass
class TaskFeatures:
    """One task in the backbone's features: its support and query sets, and pools of extra
    images (``classic`` copies, each method's generated images), class by class."""

    support: tuple[Tensor, Tensor]
    query: tuple[Tensor, Tensor]
    pools: dict[str, tuple[Tensor, Tensor]]

    def accuracy(self, pools: Sequence[str], per_class: int, n_way: int) -> float:
        """Query accuracy of the probe trained on the support set plus ``per_class`` images of
        every class from each of ``pools``."""
        parts = [self.support] + [first_per_class(*self.pools[p], per_class) for p in pools]
        features = torch.cat([f for f, _ in parts])
        labels = torch.cat([y for _, y in parts])
        return probe_accuracy(features, labels, *self.query, n_way)

    def diagnose(self, pool: str, per_class: int, n_way: int) -> dict[str, float]:
        """Why a pool helps or not: the query accuracy of a probe trained on the pool's images
        alone (are they of their class?) and their spread, the mean pairwise distance of
        L2-normalised features within a class over the query images' (too alike?)."""
        features, labels = first_per_class(*self.pools[pool], per_class)
        query, query_labels = self.query
        return {
            "extra_only_accuracy": probe_accuracy(features, labels, query, query_labels, n_way),
            "spread_ratio": _spread(features, labels) / _spread(query, query_labels),
        }


def _spread(features: Tensor, labels: Tensor) -> float:
    unit = torch.nn.functional.normalize(features, dim=1)
    return sum(pairwise_diversity(unit[labels == c]) for c in labels.unique()) / len(
        labels.unique()
    )


class Fewshot:
    """The benchmark's state: the backbone, the validation and test tasks in its features, and
    the conditions measured so far."""

    def __init__(self, run: Run):
        self.run, self.cfg = run, run.cfg
        validation = self._validation_tasks()  # refused, when M cannot be chosen, before training
        train = run.data()["train"]
        self.backbone, info = train_evaluator(
            *train.stacked(),
            len(train.classes),
            epochs=self.cfg.fewshot.backbone_epochs,
            holdout_fraction=0.1,
            seed=self.cfg.seed,
            device=run.device,
        )
        self.backbone_info = {
            "train_classes": len(train.classes),
            "epochs": self.cfg.fewshot.backbone_epochs,
            "heldout_accuracy": info["heldout_accuracy"],
            "seconds": info["seconds"],
        }
        self.tasks = {"validation": validation, "test": seeded_test_tasks(run)}
        self.features = {
            split: [self._task_features(t) for t in tasks] for split, tasks in self.tasks.items()
        }

    def _validation_tasks(self) -> list[Task]:
        t, fs = self.cfg.task, self.cfg.fewshot
        validation = self.run.data().get("validation")
        if validation is None or len(validation.classes) < t.n_way:
            if len(fs.generated) > 1:
                raise MtganError(
                    f"choosing M among {fs.generated} needs at least {t.n_way} validation "
                    "classes: set data.validation_classes, or give one --generated M"
                )
            return []
        seed = self.cfg.eval.seed
        return seeded_tasks(validation, t.n_way, t.k_shot, t.q_query, seed, fs.validation_tasks)

    def _task_features(self, task: Task) -> TaskFeatures:
        return TaskFeatures(
            (self._features(task.support), task.support_labels),
            (self._features(task.query), task.query_labels),
            {},
        )

    def _features(self, images: Tensor) -> Tensor:
        return extract_features(self.backbone, images)

    def add_pool(self, name: str, draw: Callable[[Task, int, int], tuple[Tensor, Tensor]]) -> None:
        """Extra images for every task: ``draw(task, per_class, seed)`` gives uint8 images and
        their slots, ``per_class`` the largest candidate M; the seed is the task's
        (``eval.seed`` + its index, as in the quality benchmark)."""
        most = max(self.cfg.fewshot.generated)
        for split, tasks in self.tasks.items():
            for k, task in enumerate(tasks):
                images, slots = draw(task, most, self.cfg.eval.seed + k)
                self.features[split][k].pools[name] = (self._features(images), slots)

    def condition(self, pools: Sequence[str]) -> dict[str, Any]:
        """Accuracy on every test task with the M that did best on the validation tasks."""
        n_way, candidates = self.cfg.task.n_way, sorted(self.cfg.fewshot.generated)
        validation: dict[str, float] = {}
        if pools and self.features["validation"]:
            for m in candidates:
                scores = [t.accuracy(pools, m, n_way) for t in self.features["validation"]]
                validation[str(m)] = sum(scores) / len(scores)
        per_class = (
            int(max(validation, key=validation.__getitem__)) if validation else candidates[-1]
        )
        per_class = per_class if pools else 0
        rows = [{"accuracy": t.accuracy(pools, per_class, n_way)} for t in self.features["test"]]
        if len(pools) == 1:
            for row, task in zip(rows, self.features["test"], strict=True):
                row |= task.diagnose(pools[0], per_class, n_way)
        return {
            "per_class": per_class,
            "validation_accuracy": validation,
            "summary": summarize(rows),
            "tasks": rows,
        }


def generated_by(fitted: Fitted) -> Callable[[Task, int, int], tuple[Tensor, Tensor]]:
    """A method's pool: adapted to the task's support set, then sampled."""

    def draw(task: Task, per_class: int, seed: int) -> tuple[Tensor, Tensor]:
        adapted = fitted.adapt(task.support, task.support_labels, seed)
        fake, slots = adapted.sample(per_class, seed)
        return to_uint8(fake.cpu()), slots.cpu()

    return draw


def run_fewshot(
    run: Run,
    methods: list[str],
    out: Path,
    command: str,
    on_condition: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Measure ``support``, ``classic`` and, per method, ``<method>`` and ``<method>+classic``;
    write ``<out>.json``, ``.md`` and ``.png`` after each method. Returns the JSON's content."""
    start = time.perf_counter()
    bench = Benchmark(run)
    fewshot = Fewshot(run)
    flip = run.cfg.fewshot.flip
    fewshot.add_pool(
        CLASSIC,
        lambda task, m, seed: classic_copies(
            task.support, task.support_labels, m, flip, torch.Generator().manual_seed(seed)
        ),
    )
    report: dict[str, Any] = {
        "command": command,
        "git_commit": git_commit(),
        "machine": machine(run.device),
        "classifier": CLASSIFIER,
        "backbone": fewshot.backbone_info,
        "generated": sorted(run.cfg.fewshot.generated),
        "validation_tasks": [t.classes for t in fewshot.tasks["validation"]],
        "tasks": [t.classes for t in fewshot.tasks["test"]],
        "config": run.cfg.to_dict(),
        "conditions": {},
    }

    def measure(name: str, pools: tuple[str, ...], description: str, seconds=None) -> None:
        result = {"description": description} | fewshot.condition(pools)
        result["training_s"] = seconds or {}
        report["conditions"][name] = result
        if on_condition is not None:
            on_condition(name, result)

    measure(SUPPORT, (), "the K shots alone")
    measure(CLASSIC, (CLASSIC,), "the K shots and M augmented copies per class")
    for name in methods:
        fitted = bench.fit(name)
        fewshot.add_pool(name, generated_by(fitted))
        generated = f"the K shots and M images per class from {name} ({METHODS[name].description})"
        measure(name, (name,), generated, fitted.seconds)
        measure(f"{name}+classic", (name, CLASSIC), f"{generated}, and M classic copies")
        report["elapsed_s"] = time.perf_counter() - start
        write_fewshot(report, out)
    report["elapsed_s"] = time.perf_counter() - start
    write_fewshot(report, out)
    return report


def paired_with_baselines(report: dict[str, Any]) -> None:
    """Each condition's per-task accuracy minus that of ``support`` and of ``classic``."""
    conditions = report["conditions"]
    for result in conditions.values():
        result["paired"] = {
            base: paired(result["tasks"], conditions[base]["tasks"], "accuracy")
            for base in BASELINES
        }


def write_fewshot(report: dict[str, Any], out: Path) -> None:
    """``out``'s .json, .md and accuracy plot (.png)."""
    paired_with_baselines(report)
    atomic_write(out.with_suffix(".json"), json.dumps(report, indent=2))
    atomic_write(out.with_suffix(".md"), _markdown(report, out.name))
    condition_bars(report["conditions"], out.with_suffix(".png"))


def _markdown(report: dict[str, Any], name: str) -> str:
    backbone, t = report["backbone"], report["config"]["task"]
    chooser = (
        f"M chosen per condition among {report['generated']} by the mean accuracy on "
        f"{len(report['validation_tasks'])} tasks of the validation classes"
        if report["validation_tasks"]
        else f"M = {report['generated'][-1]} given (no validation classes to choose it on)"
    )
    lines = [
        f"# Few-shot classification `{name}`",
        "",
        provenance(report)
        + f". {len(report['tasks'])} test tasks of {t['n_way']} classes, {t['k_shot']} shots "
        f"and {t['q_query']} query images per class; mean ± 95% confidence half-width over tasks"
        + (f"; it ran {report['elapsed_s'] / 60:.0f} min." if "elapsed_s" in report else "."),
        "",
        f"Classifier: {report['classifier']} ({backbone['train_classes']} classes, "
        f"{backbone['epochs']} epochs, held-out accuracy {backbone['heldout_accuracy']:.1%}). "
        f"{chooser}.",
        "",
        "| condition | M | accuracy | Δ support | Δ classic | extra images alone | spread / real |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for condition, result in report["conditions"].items():
        diffs = [mean_ci_text(result["paired"][b]) if b != condition else "" for b in BASELINES]
        summary = result["summary"]
        cells = [
            str(result["per_class"]),
            mean_ci_text(summary["accuracy"]),
            *diffs,
            mean_ci_text(summary.get("extra_only_accuracy")),
            mean_ci_text(summary.get("spread_ratio")),
        ]
        lines.append(f"| {condition} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Δ: the condition's accuracy minus that of `support` (or `classic`) on the same tasks, "
        "mean ± 95% CI of the per-task differences. Extra images alone: the accuracy of the "
        "probe trained on the M extra images of each class without the K shots (are they of "
        "their class?); spread / real: their mean pairwise distance within a class in the "
        "backbone's normalised features over the query images' (below 1: more alike than "
        "real images).",
        "",
        f"![accuracy]({name}.png)",
        "",
    ]
    return "\n".join(lines)
