"""Every method behind one interface, registered by name.

A method is trained once on the training classes (:meth:`Method.fit`) and then meets each
test task: it adapts to the task's K shots (:meth:`Fitted.adapt`) and samples images of the
task's classes (:meth:`Adapted.sample`). Where the phases run is the caller's
:class:`Context`: a benchmark shares one pretraining between methods and times it, a run
folder keeps each phase's model and resumes it. A method asks the context for the paper's
phases instead of running them itself, so that both get the same method.

Adding a method is one module in this package that defines a :class:`Method` subclass and
decorates it with :func:`register`; ``mtgan run``, ``mtgan evaluate --method`` and ``mtgan
benchmark --methods`` find it by name.

Example:
    >>> sorted(METHODS)[:3]
    ['figr', 'finetune', 'finetune-augmented']
    >>> get("frozen").description
    'pretrain, then adapt fresh NM and CF on the frozen networks (no meta-learning)'
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, is_dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch

from mtgan.config import Config, with_overrides
from mtgan.data.base import ClassDataset
from mtgan.errors import ConfigError
from mtgan.nn.gan import ConditionalGAN
from mtgan.phases.adapt import HEADS, sample


class Context(Protocol):
    """Where a method's phases run, and what it may ask of that place."""

    device: torch.device
    progress: bool

    def training_set(self) -> ClassDataset:
        """The training classes."""

    def pretrained(self, cfg: Config) -> tuple[ConditionalGAN, float]:
        """Phase (a) for ``cfg`` (shared by the methods that start from it; not to be
        modified), and its training seconds."""

    def meta_trained(self, cfg: Config) -> tuple[ConditionalGAN, dict[str, float]]:
        """Phase (b) for ``cfg`` from the pretrained model (phase a), and the training seconds
        of both by phase."""

    def adapted(
        self,
        gan: ConditionalGAN,
        support: torch.Tensor,
        labels: torch.Tensor,
        cfg: Config,
        seed: int,
        folder: Path | None,
        groups: Sequence[str] = HEADS,
    ) -> tuple[ConditionalGAN, dict[str, Any]]:
        """Phase (c) from ``gan`` (not modified) on the K shots, training the parameter
        ``groups`` of D and of G (NM and CF; fine-tuning: every weight), with its state in
        ``folder`` when given; the adapted model and its training record (``history``, and in
        a run folder ``seconds`` and ``lr_scale``)."""


@dataclass
class Adapted:
    """A method adapted to one task: it samples images of the task's class slots.

    ``gan`` is the adapted conditional GAN where the method has one (a run folder saves it),
    ``info`` its training record (losses, seconds).
    """

    draw: Callable[[int, int], tuple[torch.Tensor, torch.Tensor]]
    gan: ConditionalGAN | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def sample(self, per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``per_class`` images in [-1, 1] of every slot, seeded, and their slots."""
        return self.draw(per_class, seed)

    @classmethod
    def of(
        cls, gan: ConditionalGAN, device: torch.device, info: dict[str, Any] | None = None
    ) -> Adapted:
        """A conditional GAN's own samples (:func:`mtgan.phases.adapt.sample`)."""

        def draw(per_class: int, seed: int):
            return sample(gan, per_class, torch.Generator().manual_seed(seed), device)

        return cls(draw, gan, info or {})


class Fitted(Protocol):
    """A method after training, ready for test tasks."""

    cfg: Config
    """The settings it adapts with."""

    seconds: dict[str, float]
    """Training seconds by phase."""

    def adapt(
        self, support: torch.Tensor, labels: torch.Tensor, seed: int, folder: Path | None = None
    ) -> Adapted:
        """Adapt to the uint8 ``support`` images with class slots ``labels``, seeded;
        ``folder``: where a resumable adaptation keeps its state (None: nowhere)."""


class Method:
    """A few-shot generation method; subclasses set the class attributes and :meth:`fit`.

    ``phases``: the training phases whose step counts a time budget scales (``pretrain``,
    ``meta-train``, ``figr``), in the benchmark's ``--budget``.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    phases: ClassVar[tuple[str, ...]] = ()
    adapt_steps_key: ClassVar[str] = "adapt.steps"
    """The setting of its fitted config that counts a test task's training steps."""

    def configure(self, cfg: Config) -> Config:
        """The settings this method trains with, from the shared ones (the same by default)."""
        return cfg

    def fit(self, ctx: Context, cfg: Config) -> Fitted:
        """Everything the method learns before it meets a test task."""
        raise NotImplementedError

    def with_adapt_steps(self, fitted: Fitted, steps: int) -> Fitted:
        """``fitted`` meeting each task with ``steps`` training steps instead (its dataclass
        copied with :attr:`adapt_steps_key` changed)."""
        if not (is_dataclass(fitted) and hasattr(fitted, "cfg")):
            raise ConfigError(f"method {self.name!r} has no adaptation steps to vary")
        changed = with_overrides(fitted.cfg, [f"{self.adapt_steps_key}={steps}"])
        return replace(fitted, cfg=changed)


@dataclass
class AdaptsGan:
    """A trained conditional GAN that meets each task with phase (c): what ``mtgan``, its
    ablations and ``frozen`` return."""

    ctx: Context
    gan: ConditionalGAN
    cfg: Config
    seconds: dict[str, float]

    def adapt(self, support, labels, seed, folder=None) -> Adapted:
        gan, info = self.ctx.adapted(self.gan, support, labels, self.cfg, seed, folder)
        return Adapted.of(gan, self.ctx.device, info)


METHODS: dict[str, Method] = {}
"""The registered methods by name, in registration order."""


def register(method: type[Method]) -> type[Method]:
    """Class decorator: make ``method`` available by its ``name``."""
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} is registered twice")
    METHODS[method.name] = method()
    return method


def get(name: str) -> Method:
    """The registered method called ``name``."""
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[name]


def parse_methods(text: str) -> list[str]:
    """Comma-separated method names, checked against the registry, duplicates dropped."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in METHODS]
    if unknown or not names:
        raise ConfigError(f"unknown methods {unknown or text!r}; choose from {', '.join(METHODS)}")
    return list(dict.fromkeys(names))
