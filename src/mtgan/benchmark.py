"""The quality benchmark: every method adapted to the same seeded test tasks, scored by one M.

Methods (``METHODS``), each trained once and then run on each test task:

- ``mtgan``: Meta Transfer GAN (pretrain, meta-train SS, adapt NM and CF), the config as given;
- ``frozen``: the same pretrained networks with fresh NM and CF adapted, no meta-learning;
- ``finetune``: the pretrained GAN with every weight fine-tuned on the support set;
- ``finetune-augmented``: the same with D's inputs augmented as ``mtgan``'s are in adaptation
  (``adapt.augment``), so that the augmentation's share of ``mtgan``'s lead shows;
- ``scratch``: the conditional GAN trained on the support set alone;
- ``figr``: FIGR, Reptile over an unconditional WGAN-GP;
- ablations of ``mtgan`` (``ABLATIONS``): SS granularity, eq. 5 against eq. 6, second order,
  eq. 12's head averaging, and no augmentation of D's inputs.

Methods that start from a pretrained GAN share one pretraining of the same length, made with the
benchmark's own settings (an ablation changes meta-training and adaptation only). With a
budget, every method's training gets the same number of seconds: its step counts are scaled
from short timed probes of each phase (scratch trains per task and is not scaled), so that
``mtgan`` (pretraining and meta-training) and ``frozen`` (pretraining only) get backbones of
different lengths.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from mtgan.baselines.figr import build_figr, figr_meta_train, figr_sample
from mtgan.baselines.finetune import finetune
from mtgan.baselines.scratch import train_from_scratch
from mtgan.checkpoint import architecture, atomic_write
from mtgan.config import Config, get, with_overrides
from mtgan.data.base import to_uint8
from mtgan.data.episodes import Task
from mtgan.errors import ConfigError
from mtgan.metrics import mean_confidence_interval
from mtgan.nn.gan import ConditionalGAN
from mtgan.nn.ss import is_ss_parameter
from mtgan.phases.adapt import adapt, sample
from mtgan.phases.evaluate import evaluator_for, score_task, summarize
from mtgan.phases.meta_train import meta_train
from mtgan.phases.pretrain import build_gan, pretrain
from mtgan.pipeline import Run, git_commit, seeded_test_tasks
from mtgan.report import class_rows, mean_ci_text, method_bars, save_png, side_by_side

Generate = Callable[[Task, int], tuple[torch.Tensor, torch.Tensor]]
"""A trained method on one test task: (task, seed) -> images in [-1, 1] and their slots."""

METHODS = {
    "mtgan": "Meta Transfer GAN: pretrain, meta-train SS (eq. 10-12), adapt NM and CF",
    "frozen": "pretrain, then adapt fresh NM and CF on the frozen networks (no meta-learning)",
    "finetune": "pretrain, then fine-tune every weight on the support set",
    "finetune-augmented": "finetune, with D's inputs augmented as mtgan's are (adapt.augment)",
    "scratch": "the conditional GAN trained on the support set alone",
    "figr": "FIGR: Reptile over an unconditional WGAN-GP, one generator per class",
}
ABLATIONS = {
    "mtgan-layer": ["model.ss_granularity=layer"],
    "mtgan-kernel": ["model.ss_granularity=kernel"],
    "mtgan-eq5": ["model.objective=eq5"],
    "mtgan-second-order": ["meta.second_order=true"],
    "mtgan-eq12": ["meta.head_update=average"],
    "mtgan-no-augment": ["adapt.augment="],
}
"""Variants of ``mtgan``: its config with these overrides (pretraining is shared)."""


@dataclass
class Trained:
    """A method ready for the test tasks, with its training seconds by phase."""

    generate: Generate
    seconds: dict[str, float] = field(default_factory=dict)


def parse_methods(text: str) -> list[str]:
    """Comma-separated method names, checked against ``METHODS`` and ``ABLATIONS``."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    known = [*METHODS, *ABLATIONS]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ConfigError(f"unknown methods {unknown or text!r}; choose from {', '.join(known)}")
    return list(dict.fromkeys(names))


class Benchmark:
    """Trains the methods on ``run``'s training classes and scores them on its test tasks."""

    def __init__(self, run: Run, budget: float | None = None):
        self.run, self.cfg, self.device, self.budget = run, run.cfg, run.device, budget
        self._backbones: dict[int, tuple[ConditionalGAN, float]] = {}
        self._step_seconds: dict[tuple[str, str], float] = {}

    @property
    def train_set(self):
        return self.run.data()["train"]

    def backbone(self, cfg: Config) -> tuple[ConditionalGAN, float]:
        """The GAN pretrained for ``cfg.pretrain.steps`` steps (trained once), and its seconds."""
        steps = cfg.pretrain.steps
        if steps not in self._backbones:  # the benchmark's own settings, whichever method asks
            cfg = with_overrides(self.cfg, [f"pretrain.steps={steps}"])
            torch.manual_seed(cfg.seed)
            gan = build_gan(cfg, len(self.train_set.classes))
            start = time.perf_counter()
            pretrain(gan, self.train_set, cfg, self.device, self.run.progress)
            self._backbones[steps] = (gan, time.perf_counter() - start)
        return self._backbones[steps]

    def train(self, method: str) -> Trained:
        """Whatever ``method`` learns before it meets a test task."""
        if method in ABLATIONS or method == "mtgan":
            cfg = with_overrides(self.cfg, ABLATIONS.get(method, []))
            return self._mtgan(self._budgeted(cfg, ("pretrain", "meta")))
        if method == "figr":
            return self._figr(self._budgeted(self.cfg, ("figr",)))
        if method == "scratch":
            return Trained(
                self._sampled(lambda t, s: train_from_scratch(*_shots(t), self.cfg, self.device, s))
            )
        pre, seconds = self.backbone(self._budgeted(self.cfg, ("pretrain",)))
        if method.startswith("finetune"):
            cfg = self.cfg
            if method == "finetune-augmented":
                cfg = replace(cfg, finetune=replace(cfg.finetune, augment=cfg.adapt.augment))
            tune = lambda t, s: finetune(pre, *_shots(t), cfg, self.device, s)  # noqa: E731
            return Trained(self._sampled(tune), {"pretrain_s": seconds})
        heads = pre.with_fresh_heads(self.cfg.task.n_way, self.cfg.model.head_init)
        return Trained(self._adapted(heads, self.cfg), {"pretrain_s": seconds})

    def _mtgan(self, cfg: Config) -> Trained:
        pre, pre_seconds = self.backbone(cfg)
        gan = with_granularity(pre, cfg)
        start = time.perf_counter()
        meta_train(gan, self.train_set, cfg, self.device, self.run.progress)
        seconds = {"pretrain_s": pre_seconds, "meta_train_s": time.perf_counter() - start}
        return Trained(self._adapted(gan, cfg), seconds)

    def _figr(self, cfg: Config) -> Trained:
        torch.manual_seed(cfg.seed)
        gan = build_figr(cfg)
        start = time.perf_counter()
        figr_meta_train(gan, self.train_set, cfg, self.device, self.run.progress)
        per_class = cfg.eval.samples_per_class

        def generate(task: Task, seed: int):
            return figr_sample(gan, *_shots(task), per_class, cfg, self.device, seed)

        return Trained(generate, {"meta_train_s": time.perf_counter() - start})

    def _adapted(self, gan: ConditionalGAN, cfg: Config) -> Generate:
        """Phase (c) from ``gan`` on each task, then seeded samples."""
        return self._sampled(lambda t, s: adapt(gan, *_shots(t), cfg, self.device, s)[0])

    def _sampled(self, fit: Callable[[Task, int], ConditionalGAN]) -> Generate:
        per_class = self.cfg.eval.samples_per_class

        def generate(task: Task, seed: int):
            gan = fit(task, seed)
            return sample(gan, per_class, torch.Generator().manual_seed(seed), self.device)

        return generate

    def _budgeted(self, cfg: Config, phases: tuple[str, ...]) -> Config:
        """``cfg`` with the phases' steps scaled so that together they take ``budget`` seconds."""
        if self.budget is None:
            return cfg
        seconds = {p: self._seconds_per_step(cfg, p) * _steps(cfg, p) for p in phases}
        factor = self.budget / sum(seconds.values())
        return with_overrides(
            cfg, [f"{_STEP_KEYS[p]}={max(1, round(_steps(cfg, p) * factor))}" for p in phases]
        )

    def _seconds_per_step(self, cfg: Config, phase: str, probes: tuple[int, int] = (2, 6)) -> float:
        """Seconds per step of one phase on a throwaway model: the difference of two short
        timed runs, so that set-up work (hashing, BatchNorm calibration) cancels out. Measured
        once per phase and config (``frozen`` and ``finetune`` share pretraining's)."""
        sections = ("data", "model", "task", "speed", _STEP_KEYS[phase].split(".")[0])
        settings = cfg.to_dict()
        key = (phase, json.dumps({k: settings[k] for k in sections}, sort_keys=True))
        if key not in self._step_seconds:
            short, long = (self._timed_probe(cfg, phase, n) for n in probes)
            self._step_seconds[key] = max(long - short, 1e-6) / (probes[1] - probes[0])
        return self._step_seconds[key]

    def _timed_probe(self, cfg: Config, phase: str, steps: int) -> float:
        short = with_overrides(cfg, [f"{_STEP_KEYS[phase]}={steps}"])
        train = self.train_set
        if phase == "figr":
            model = build_figr(short)
            run = lambda: figr_meta_train(model, train, short, self.device)  # noqa: E731
        elif phase == "pretrain":
            model = build_gan(short, len(train.classes))
            run = lambda: pretrain(model, train, short, self.device)  # noqa: E731
        else:
            model = with_granularity(build_gan(short, len(train.classes)), short)
            run = lambda: meta_train(model, train, short, self.device)  # noqa: E731
        start = time.perf_counter()
        run()
        return time.perf_counter() - start

    def score(self, method: str, trained: Trained, tasks: list[Task], evaluator) -> dict[str, Any]:
        """Every test task adapted, sampled and scored; the first task's images kept for a grid."""
        test_classes = self.run.data()["test"].classes
        rows, first = [], None
        for k, task in enumerate(tasks):
            start = time.perf_counter()
            fake, slots = trained.generate(task, self.cfg.eval.seed + k)
            seconds = time.perf_counter() - start
            fake, slots = to_uint8(fake.cpu()), slots.cpu()
            first = first or (fake, slots)
            rows.append(
                score_task(evaluator, test_classes, task, fake, slots) | {"adapt_s": seconds}
            )
        return {
            "description": METHODS.get(method) or "mtgan with " + ", ".join(ABLATIONS[method]),
            "training_s": trained.seconds,
            "summary": summarize(rows),
            "tasks": rows,
            "_first": first,
        }


def _shots(task: Task) -> tuple[torch.Tensor, torch.Tensor]:
    return task.support, task.support_labels


_STEP_KEYS = {"pretrain": "pretrain.steps", "meta": "meta.steps", "figr": "figr.meta_steps"}


def _steps(cfg: Config, phase: str) -> int:
    return get(cfg, _STEP_KEYS[phase])


def with_granularity(pretrained: ConditionalGAN, cfg: Config) -> ConditionalGAN:
    """A copy of ``pretrained`` whose scale and shift have ``cfg``'s granularity, at identity."""
    if architecture(pretrained)["ss_granularity"] == cfg.model.ss_granularity:
        return copy.deepcopy(pretrained)
    gan = build_gan(cfg, pretrained.n_classes)
    weights = {k: v for k, v in pretrained.state_dict().items() if not is_ss_parameter(k)}
    gan.load_state_dict(weights, strict=False)
    return gan.eval()


def run_benchmark(
    run: Run,
    methods: list[str],
    out: Path,
    command: str,
    budget: float | None = None,
    on_method: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train and score ``methods``; write ``<name>.json``, ``.csv``, ``.md`` and two PNGs.

    ``out`` is a path stem such as ``results/omniglot-5w10s``. The files are rewritten after
    every method, so a long benchmark keeps what it has measured; ``on_method(name, result)``
    hears of each. Returns the JSON's content.
    """
    start = time.perf_counter()
    bench = Benchmark(run, budget)
    tasks = seeded_test_tasks(run)
    evaluator, evaluator_info = evaluator_for(run.data()["test"], run.cfg, run.device)
    report: dict[str, Any] = {
        "command": command,
        "git_commit": git_commit(),
        "machine": machine(run.device),
        "budget_s": budget,
        "evaluator": evaluator_info,
        "tasks": [t.classes for t in tasks],
        "config": run.cfg.to_dict(),
        "methods": {},
    }
    colour = run.cfg.data.channels == 3  # colour PNGs compress poorly: smaller grids
    scale, shown = (1, SHOWN_COLOUR) if colour else (2, SHOWN)
    support = tasks[0].support, tasks[0].support_labels
    grids = {"support": class_rows(*support, shown, scale)}
    for method in methods:
        result = bench.score(method, bench.train(method), tasks, evaluator)
        grids[method] = class_rows(*result.pop("_first"), shown, scale)
        report["methods"][method] = result
        report["elapsed_s"] = time.perf_counter() - start
        _write_results(report, out, grids)
        if on_method is not None:
            on_method(method, result)
    return report


def machine(device: torch.device) -> str:
    """The hardware and software the figures come from, in words."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    where = f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    if device.type == "cuda":
        where = f"{torch.cuda.get_device_name(device)}; {where}"
    return f"{where}; torch {torch.__version__}, {platform.system()}"


SHOWN, SHOWN_COLOUR = 6, 4
"""Support images per class, and generated images per class and method, in the side-by-side
grid of greyscale and of colour images (colour grids of seven methods at 6 passed 500 KB)."""

REPORTED = {
    "mode_score": "Mode Score",
    "inception_score": "IS",
    "fid": "FID",
    "kid": "KID",
    "fidelity": "fidelity",
    "diversity": "diversity",
    "copy_ratio": "copy ratio",
    "adapt_s": "adapt s/task",
}
"""The columns of the results table and CSV (mean and 95% CI over tasks)."""


PAIRED = ("mode_score", "fid")
"""Scores compared task by task with the first method."""


def paired_differences(methods: dict[str, dict]) -> dict[str, dict[str, dict]]:
    """Per method, the mean and 95% CI over tasks of (its score - the first method's score).

    Every method meets the same tasks, so the per-task differences compare methods far more
    tightly than their separate confidence intervals do.
    """
    reference = next(iter(methods.values()))["tasks"]
    paired = {}
    for name, result in methods.items():
        paired[name] = {}
        for key in PAIRED:
            diffs = [t[key] - r[key] for t, r in zip(result["tasks"], reference, strict=True)]
            mean, half = mean_confidence_interval(diffs)
            paired[name][key] = {"mean": mean, "ci95": None if math.isnan(half) else half}
    return paired


def rewrite_reports(path: Path) -> None:
    """The .csv, .md and scores plot again from a benchmark's .json (the sample grid is kept)."""
    report = json.loads(path.read_text())
    _write_results(report, path.with_suffix(""))


def _write_results(report: dict[str, Any], out: Path, grids: dict | None = None) -> None:
    report["paired"] = paired_differences(report["methods"])
    atomic_write(out.with_suffix(".json"), json.dumps(report, indent=2))
    atomic_write(out.with_suffix(".csv"), _csv(report))
    atomic_write(out.with_suffix(".md"), _markdown(report, out.name))
    method_bars(report["methods"], out.parent / f"{out.name}_scores.png")
    if grids is not None:
        save_png(side_by_side(grids), out.parent / f"{out.name}_samples.png")


def _csv(report: dict[str, Any]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["method", "score", "mean", "ci95", "n"])
    for method, result in report["methods"].items():
        for key in REPORTED:
            entry = result["summary"].get(key)
            if entry:
                writer.writerow([method, key, entry["mean"], entry["ci95"], entry["n"]])
        for key, seconds in result["training_s"].items():
            writer.writerow([method, key, seconds, "", 1])
    return buf.getvalue()


def _markdown(report: dict[str, Any], name: str) -> str:
    methods = report["methods"]
    first = next(iter(methods.values()))["summary"]
    real = (
        f"Real images of the same tasks: Mode Score {mean_ci_text(first['real_mode_score'])}, "
        f"FID between support and query {mean_ci_text(first['real_fid'])}, "
        f"diversity {mean_ci_text(first['real_diversity'])}."
    )
    header = ["method", *REPORTED.values(), "training s"]
    lines = [
        f"# Benchmark `{name}`",
        "",
        f"`{report['command']}` on {report['machine']}"
        + (f", at commit {report['git_commit'][:10]}" if report.get("git_commit") else "")
        + f". {len(report['tasks'])} test tasks; "
        f"mean ± 95% confidence half-width over tasks; evaluator M held-out accuracy "
        f"{report['evaluator']['heldout_accuracy']:.1%}."
        + (f" It ran {report['elapsed_s'] / 60:.0f} minutes." if "elapsed_s" in report else ""),
        "",
        real,
        "",
        "| " + " | ".join(header) + " |",
        "|" + " --- |" * len(header),
    ]
    for method, result in methods.items():
        cells = [mean_ci_text(result["summary"].get(k)) for k in REPORTED]
        lines.append(
            f"| {method} | " + " | ".join(cells) + f" | {sum(result['training_s'].values()):.0f} |"
        )
    reference = next(iter(methods))
    lines += [
        "",
        f"Difference from `{reference}` on the same tasks (method - {reference}, mean ± 95% CI of "
        "the per-task differences; higher Mode Score and lower FID are better):",
        "",
        "| method | Δ Mode Score | Δ FID |",
        "| --- | --- | --- |",
    ]
    for method, diffs in report["paired"].items():
        if method != reference:
            cells = " | ".join(mean_ci_text(diffs[k]) for k in PAIRED)
            lines.append(f"| {method} | {cells} |")
    lines += [
        "",
        f"![scores]({name}_scores.png)",
        "",
        "Test task 0: its support images, then each method's samples:",
        "",
        f"![samples]({name}_samples.png)",
        "",
    ]
    return "\n".join(lines)
