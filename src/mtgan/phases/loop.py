"""The phase loop that every training phase shares: placement, the training state (resume,
NaN checks, checkpoints), the progress bar and the record of losses. A phase supplies only
what one of its steps does."""

from __future__ import annotations

import contextlib
import contextvars
import os
import random
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from mtgan.checkpoint import Optimizer, TrainingState
from mtgan.config import Config
from mtgan.nn.gan import ConditionalGAN
from mtgan.phases.common import place, progress_bar

Step = Callable[[], dict[str, float]]
"""One step of a phase: it updates the phase's parameters and returns its losses."""


class Interrupted(Exception):
    """A phase stopped between two steps because its :class:`Watch` was stopped."""


@dataclass
class Watch:
    """Someone watching the phases run in this thread (a server's progress page): it hears of
    every step and may stop the phase between two steps (:meth:`stop`)."""

    on_step: Callable[[str, int, int], None] = lambda phase, step, total: None
    stopped: threading.Event = field(default_factory=threading.Event)

    def stop(self) -> None:
        self.stopped.set()


_WATCH: contextvars.ContextVar[Watch | None] = contextvars.ContextVar("watch", default=None)


@contextlib.contextmanager
def watching(watch: Watch) -> Iterator[Watch]:
    """Let ``watch`` follow (and stop) the phases run in this thread inside the block."""
    token = _WATCH.set(watch)
    try:
        yield watch
    finally:
        _WATCH.reset(token)


def run_phase(
    phase: str,
    gan: ConditionalGAN,
    steps: int,
    step: Step,
    cfg: Config,
    device: torch.device,
    *,
    identity: dict[str, Any],
    updates: Mapping[str, Optimizer],
    rngs: Mapping[str, torch.Generator | random.Random],
    checkpoint_every: int = 0,
    state_path: str | os.PathLike | None = None,
    progress: bool = False,
    channels_last: bool | None = None,
    extra: Mapping[str, torch.Tensor] | None = None,
) -> list[dict[str, float]]:
    """Run ``step`` until the phase has taken ``steps`` steps; return the losses of each.

    ``gan`` is moved to ``device`` in the layout of ``speed.channels_last`` (or of
    ``channels_last`` when given). With ``state_path``, the loop continues from that file when
    it exists and saves its state every ``checkpoint_every`` steps: the module, the ``updates``'
    moments, the ``rngs`` and the ``extra`` tensors the step changes (see
    :class:`TrainingState`, which also refuses a file written under another ``identity``). A
    NaN or infinite loss stops the phase; so does a stopped :class:`Watch` (raising
    :class:`Interrupted`), between two steps.

    Example:
        >>> gan = ConditionalGAN(2, image_size=16, z_dim=4, g_width=4, d_width=4)
        >>> cfg = Config()
        >>> run_phase("toy", gan, 3, lambda: {"loss": 1.0}, cfg, torch.device("cpu"),
        ...           identity={}, updates={}, rngs={})
        [{'loss': 1.0}, {'loss': 1.0}, {'loss': 1.0}]
    """
    layout = cfg.speed.channels_last if channels_last is None else channels_last
    place(gan, device, layout)
    state = TrainingState(phase, state_path, checkpoint_every, identity, gan, updates, rngs, extra)
    watch = _WATCH.get()
    with progress_bar(steps, phase, progress, state.step) as bar:
        for _ in range(state.step, steps):
            if watch is not None and watch.stopped.is_set():
                raise Interrupted(f"{phase} stopped at step {state.step + 1} of {steps}")
            losses = step()
            state.record(losses)
            bar.set_postfix(losses, refresh=False)
            bar.update()
            if watch is not None:
                watch.on_step(phase, state.step, steps)
    return state.history
