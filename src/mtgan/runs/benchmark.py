"""The quality benchmark: registered methods trained once and adapted to the same seeded test
tasks, scored by one evaluator M.

Methods that start from a pretrained GAN share one pretraining of the same length, made with
the benchmark's own settings (an ablation changes meta-training and adaptation only). With a
budget, every method's training gets the same number of seconds: the step counts of the phases
it trains (:attr:`mtgan.methods.Method.phases`) are scaled from short timed probes of each
phase (scratch trains per task and is not scaled), so that ``mtgan`` (pretraining and
meta-training) and ``frozen`` (pretraining only) get backbones of different lengths.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from mtgan.config import Config, get, keyed, with_overrides
from mtgan.data import ClassDataset
from mtgan.data.base import to_uint8
from mtgan.data.episodes import Task
from mtgan.errors import MtganError
from mtgan.files import cache_dir
from mtgan.methods import METHODS, Fitted
from mtgan.methods.figr import build_figr, figr_meta_train
from mtgan.nn.gan import ConditionalGAN, load_gan, save_gan
from mtgan.phases.adapt import HEADS, adapt
from mtgan.phases.common import place
from mtgan.phases.evaluate import (
    evaluator_for,
    score_pretrained,
    score_relearned,
    score_task,
    summarize,
)
from mtgan.phases.meta_train import meta_train, with_granularity
from mtgan.phases.pretrain import build_gan, pretrain
from mtgan.report import class_rows, side_by_side
from mtgan.runs.drivers import PHASE_SECTIONS, meta_validator
from mtgan.runs.folder import Run, git_commit, seeded_test_tasks
from mtgan.runs.results import machine, write_results, write_steps_results

STEP_KEYS = {"pretrain": "pretrain.steps", "meta-train": "meta.steps", "figr": "figr.meta_steps"}
"""The setting that counts each training phase's steps (what a budget scales)."""

SHOWN, SHOWN_COLOUR = 6, 4
"""Support images per class, and generated images per class and method, in the side-by-side
grid of greyscale and of colour images (colour grids of seven methods at 6 passed 500 KB)."""


class Benchmark:
    """The methods' training place (:class:`mtgan.methods.Context`) for a benchmark: one
    pretraining per length shared by every method, phases timed, steps fitted to a budget."""

    def __init__(self, run: Run, budget: float | None = None, reuse: bool = False):
        self.run, self.cfg, self.device, self.budget = run, run.cfg, run.device, budget
        self.reuse = reuse
        self.progress = run.progress
        self._backbones: dict[int, tuple[ConditionalGAN, float]] = {}
        self._step_seconds: dict[tuple[str, str], float] = {}

    def training_set(self) -> ClassDataset:
        return self.run.data()["train"]

    def pretrained(self, cfg: Config) -> tuple[ConditionalGAN, float]:
        """The GAN pretrained for ``cfg.pretrain.steps`` steps (trained once), and its seconds."""
        steps = cfg.pretrain.steps
        if steps not in self._backbones:  # the benchmark's own settings, whichever method asks
            cfg = with_overrides(self.cfg, [f"pretrain.steps={steps}"])
            self._backbones[steps] = self._reused(cfg) if self.reuse else self._pretrain(cfg)
        return self._backbones[steps]

    def _pretrain(self, cfg: Config) -> tuple[ConditionalGAN, float]:
        torch.manual_seed(cfg.seed)
        gan = build_gan(cfg, len(self.training_set().classes))
        start = time.perf_counter()
        pretrain(gan, self.training_set(), cfg, self.device, self.progress)
        return gan, time.perf_counter() - start

    def _reused(self, cfg: Config) -> tuple[ConditionalGAN, float]:
        """``--reuse-pretraining``: the GAN an earlier benchmark pretrained on the same images
        with the same settings, kept in the cache folder (pretrained and kept if none), and
        the seconds its pretraining took."""
        images, labels = self.training_set().stacked()
        settings = {k: v for k, v in cfg.to_dict().items() if k in PHASE_SECTIONS["pretrain"]}
        settings = keyed(settings)  # unchanged by settings added since, at their old value
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
        for t in (images, labels):
            digest.update(t.numpy().tobytes())
        key = digest.hexdigest()[:24]
        path = cache_dir() / "pretrained" / f"{key}.safetensors"
        if path.is_file():
            gan, meta = load_gan(path)  # laid out as pretraining leaves it: the same rounding
            return place(gan, self.device, cfg.speed.channels_last).eval(), meta["pretrain_s"]
        gan, seconds = self._pretrain(cfg)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_gan(gan, path, pretrain_s=seconds)
        return gan, seconds

    def meta_trained(self, cfg: Config) -> tuple[ConditionalGAN, dict[str, float]]:
        pretrained, pretrain_s = self.pretrained(cfg)
        gan = with_granularity(pretrained, cfg)
        start = time.perf_counter()
        validate = meta_validator(self.run, cfg)
        meta_train(gan, self.training_set(), cfg, self.device, self.progress, None, validate)
        return gan, {"pretrain": pretrain_s, "meta-train": time.perf_counter() - start}

    def adapted(
        self,
        gan: ConditionalGAN,
        support: torch.Tensor,
        labels: torch.Tensor,
        cfg: Config,
        seed: int,
        folder: Path | None = None,
        groups: Sequence[str] = HEADS,
    ) -> tuple[ConditionalGAN, dict[str, Any]]:
        adapted, history = adapt(gan, support, labels, cfg, self.device, seed, groups=groups)
        return adapted, {"history": history}

    def fit(self, name: str) -> Fitted:
        """Whatever method ``name`` learns before it meets a test task."""
        method = METHODS[name]
        return method.fit(self, self.budgeted(method.configure(self.cfg), method.phases))

    def budgeted(self, cfg: Config, phases: tuple[str, ...]) -> Config:
        """``cfg`` with the phases' steps scaled so that together they take ``budget`` seconds."""
        if self.budget is None or not phases:
            return cfg
        seconds = {p: self._seconds_per_step(cfg, p) * get(cfg, STEP_KEYS[p]) for p in phases}
        factor = self.budget / sum(seconds.values())
        return with_overrides(
            cfg,
            [f"{STEP_KEYS[p]}={max(1, round(get(cfg, STEP_KEYS[p]) * factor))}" for p in phases],
        )

    def _seconds_per_step(self, cfg: Config, phase: str, probes: tuple[int, int] = (2, 6)) -> float:
        """Seconds per step of one phase on a throwaway model: the difference of two short
        timed runs, so that set-up work (hashing, BatchNorm calibration) cancels out. Measured
        once per phase and config (``frozen`` and ``finetune`` share pretraining's)."""
        sections = ("data", "model", "task", "speed", STEP_KEYS[phase].split(".")[0])
        settings = cfg.to_dict()
        key = (phase, json.dumps({k: settings[k] for k in sections}, sort_keys=True))
        if key not in self._step_seconds:
            short, long = (self._timed_probe(cfg, phase, n) for n in probes)
            self._step_seconds[key] = max(long - short, 1e-6) / (probes[1] - probes[0])
        return self._step_seconds[key]

    def _timed_probe(self, cfg: Config, phase: str, steps: int) -> float:
        short = with_overrides(cfg, [f"{STEP_KEYS[phase]}={steps}"])
        train, device = self.training_set(), self.device
        if phase == "figr":
            model = build_figr(short)
            run = lambda: figr_meta_train(model, train, short, device)  # noqa: E731
        elif phase == "pretrain":
            model = build_gan(short, len(train.classes))
            run = lambda: pretrain(model, train, short, device)  # noqa: E731
        else:
            model = with_granularity(build_gan(short, len(train.classes)), short)
            run = lambda: meta_train(model, train, short, device)  # noqa: E731
        start = time.perf_counter()
        run()
        return time.perf_counter() - start

    def pretrained_stage(self) -> tuple[dict[str, Any], tuple] | None:
        """The first shared pretrained G's own images of training classes, scored
        (:func:`score_pretrained`), the same classes re-learned from their K shots
        (``relearned``, :func:`score_relearned`), and the first task with the images the
        pretrained G drew for it; None before any method pretrained."""
        if not self._backbones:
            return None
        steps, (gan, _) = next(iter(self._backbones.items()))
        rows, first = score_pretrained(gan, self.training_set(), self.cfg, self.device)
        again = score_relearned(gan, self.training_set(), self.cfg, self.device)
        stage = {"pretrain_steps": steps, "summary": summarize(rows), "tasks": rows}
        return stage | {"relearned": {"summary": summarize(again), "tasks": again}}, first

    def score(
        self, name: str, fitted: Fitted, tasks: list[Task], evaluator, split: str = "test"
    ) -> tuple[dict[str, Any], tuple[torch.Tensor, torch.Tensor]]:
        """Every task adapted, sampled and scored, and the first task's images and slots (for
        a grid)."""
        test_classes = self.run.data()[split].classes
        per_class = self.cfg.eval.samples_per_class
        rows, first = [], None
        for k, task in enumerate(tasks):
            seed = self.cfg.eval.seed + k
            start = time.perf_counter()
            fake, slots = fitted.adapt(task.support, task.support_labels, seed).sample(
                per_class, seed
            )
            seconds = time.perf_counter() - start
            fake, slots = to_uint8(fake.cpu()), slots.cpu()
            first = first or (fake, slots)
            rows.append(
                score_task(evaluator, test_classes, task, fake, slots) | {"adapt_s": seconds}
            )
        result = {
            "description": METHODS[name].description,
            "training_s": fitted.seconds,
            "summary": summarize(rows),
            "tasks": rows,
        }
        return result, first


def _tasks_and_evaluator(run: Run, split: str, command: str) -> tuple[list[Task], Any, dict]:
    """The seeded tasks of ``split``, M for its classes, and a results report's first entries."""
    tasks = seeded_test_tasks(run, split)
    evaluator, evaluator_info = evaluator_for(run.data()[split], run.cfg, run.device)
    report: dict[str, Any] = {
        "command": command,
        "git_commit": git_commit(),
        "machine": machine(run.device),
        "split": split,
        "evaluator": evaluator_info,
        "tasks": [t.classes for t in tasks],
        "config": run.cfg.to_dict(),
        "methods": {},
    }
    return tasks, evaluator, report


def _first_task_grids(run: Run, task: Task):
    """The side-by-side grids' start (the first task's support images) and the function that
    draws generated images the same way (smaller for colour: its PNGs compress poorly)."""
    colour = run.cfg.data.channels == 3
    scale, shown = (1, SHOWN_COLOUR) if colour else (2, SHOWN)
    grid = lambda images, labels: class_rows(images, labels, shown, scale)  # noqa: E731
    return {"support": grid(task.support, task.support_labels)}, grid


def _with_grids(staged: tuple[dict[str, Any], tuple], grids: dict, grid) -> dict[str, Any]:
    """The pretrained G's scores, its first task's images added to the side-by-side grids (the
    real images of training classes, then the pretrained G's of the same classes)."""
    stage, (task, fake, slots) = staged
    grids["training classes"] = grid(task.support, task.support_labels)
    grids["pretrained G"] = grid(fake, slots)
    return stage


def run_benchmark(
    run: Run,
    methods: list[str],
    out: Path,
    command: str,
    budget: float | None = None,
    on_method: Callable[[str, dict[str, Any]], None] | None = None,
    split: str = "test",
    reuse: bool = False,
) -> dict[str, Any]:
    """Train and score ``methods``; write ``<name>.json``, ``.csv``, ``.md`` and two PNGs.

    ``out`` is a path stem such as ``results/omniglot-5w10s``. The files are rewritten after
    every method, so a long benchmark keeps what it has measured; ``on_method(name, result)``
    hears of each. ``split="validation"`` scores tasks of the validation classes instead of the
    test classes (to choose settings on); ``reuse`` takes the pretraining from the cache when
    an earlier benchmark made it (:meth:`Benchmark._reused`). Returns the JSON's content.
    """
    if budget is not None and not 0 < budget < float("inf"):
        raise MtganError(f"--budget must be a positive number of seconds, got {budget}")
    start = time.perf_counter()
    bench = Benchmark(run, budget, reuse)
    tasks, evaluator, report = _tasks_and_evaluator(run, split, command)
    report["budget_s"] = budget
    grids, grid = _first_task_grids(run, tasks[0])
    for name in methods:
        result, first = bench.score(name, bench.fit(name), tasks, evaluator, split)
        grids[name] = grid(*first)
        report["methods"][name] = result
        if "pretrained" not in report and (staged := bench.pretrained_stage()) is not None:
            report["pretrained"] = _with_grids(staged, grids, grid)
        report["elapsed_s"] = time.perf_counter() - start
        write_results(report, out, side_by_side(grids))
        if on_method is not None:
            on_method(name, result)
    return report


def run_steps_benchmark(
    run: Run,
    methods: list[str],
    steps: list[int],
    out: Path,
    command: str,
    on_budget: Callable[[str, dict[str, Any], int], None] | None = None,
    split: str = "test",
    reuse: bool = False,
) -> dict[str, Any]:
    """Quality against the adaptation budget: every method trained once, then adapted to the
    same seeded tasks with each number of ``steps`` and scored. Writes ``<out>.json``
    (``methods.<name>.<steps>`` as the per-method results of :func:`run_benchmark`),
    ``.md`` (paired differences from the first method at each budget) and ``.png`` (FID and
    KID against steps) and ``_samples.png`` (the first task's images of every method at every
    budget beside its support images), rewritten after every method. Returns the JSON's
    content."""
    if not steps or min(steps) < 1:
        raise MtganError(f"--adapt-steps must list numbers of at least 1, got {steps}")
    start = time.perf_counter()
    bench = Benchmark(run, reuse=reuse)
    tasks, evaluator, report = _tasks_and_evaluator(run, split, command)
    report |= {"default_steps": run.cfg.adapt.steps, "steps": sorted(steps)}
    grids, grid = _first_task_grids(run, tasks[0])
    for name in methods:
        fitted = bench.fit(name)
        report["methods"][name] = {}
        for budget in sorted(steps):
            varied = METHODS[name].with_adapt_steps(fitted, budget)
            result, first = bench.score(name, varied, tasks, evaluator, split)
            grids[f"{name} at {budget}"] = grid(*first)
            report["methods"][name][str(budget)] = result
            if on_budget is not None:
                on_budget(name, result, budget)
        if "pretrained" not in report and (staged := bench.pretrained_stage()) is not None:
            report["pretrained"] = _with_grids(staged, grids, grid)
        report["elapsed_s"] = time.perf_counter() - start
        write_steps_results(report, out, side_by_side(grids))
    return report
