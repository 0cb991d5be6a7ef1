"""Checkpoints: safetensors tensors plus JSON metadata, written atomically; resuming.

A checkpoint is tensors and, in the safetensors header, a JSON mapping (for a model: the
architecture that rebuilds it, see :func:`mtgan.nn.gan.save_gan`). A :class:`TrainingState`
file holds what a phase loop needs to continue where it stopped. Nothing here unpickles, and
nothing here knows a network.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from mtgan.distributed import is_main
from mtgan.errors import MtganError, NumericalError
from mtgan.files import atomic_write


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Tensors as safetensors with ``meta`` as JSON in the header, written atomically."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write(path, save_bytes(tensors, metadata={"mtgan": json.dumps(meta)}))


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and metadata of a checkpoint, with a one-line error for a bad file."""
    path = Path(path)
    if not path.is_file():
        raise MtganError(f"checkpoint {path} does not exist")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise MtganError(f"cannot read checkpoint {path}: {exc.strerror}") from None
    try:
        tensors = load_bytes(raw)
        header_len = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8 : 8 + header_len])
        meta = json.loads(header["__metadata__"]["mtgan"])
    except (SafetensorError, ValueError, KeyError, TypeError):
        raise MtganError(f"{path} is not an mtgan checkpoint (corrupt or another format)") from None
    if not isinstance(meta, dict):
        raise MtganError(f"{path} is not an mtgan checkpoint (its metadata is not a mapping)")
    return tensors, meta


STATE_FILE = "state.safetensors"


class Optimizer(Protocol):
    """What a state file keeps of an update rule (:class:`mtgan.phases.step.Update`)."""

    t: int
    moments: dict[str, tuple[torch.Tensor, torch.Tensor]]


class TrainingState:
    """A phase loop's progress: checked for NaN every step, saved every ``every`` steps.

    It saves, and on resume restores in place, what the loop changes: the module's parameters
    and buffers, each update's step count and Adam moments, the random generators
    (``torch.Generator`` or ``random.Random``), extra tensors, the step index and the losses so
    far. Continuing from the file gives bit for bit the weights of an uninterrupted run.

    Args:
        phase: the phase's name, for messages.
        path: the state file, resumed when it exists; None keeps no checkpoints.
        every: steps between checkpoints (0: none).
        identity: JSON values that must match for a state file to be resumed (settings, a
            digest of the starting weights); a file written under others is refused.
        module: the network the loop trains.
        updates: the update rules by name.
        rngs: the random generators by name.
        extra: more tensors the loop changes or must keep, by name.

    Example:
        >>> state = TrainingState("toy", None, 0, {}, torch.nn.Linear(1, 1), {}, {})
        >>> state.record({"loss": 0.5}); state.step
        1
    """

    def __init__(
        self,
        phase: str,
        path: str | os.PathLike | None,
        every: int,
        identity: dict[str, Any],
        module: torch.nn.Module,
        updates: Mapping[str, Optimizer],
        rngs: Mapping[str, torch.Generator | random.Random],
        extra: Mapping[str, torch.Tensor] | None = None,
    ):
        self.phase, self.every, self.identity = phase, every, identity
        self.path = None if path is None else Path(path)
        self.module, self.updates, self.rngs = module, updates, rngs
        self.extra = dict(extra or {})
        self.step = 0
        self.history: list[dict[str, float]] = []
        if self.path is not None and self.path.is_file():
            self._restore(*read_checkpoint(self.path))

    def record(self, losses: dict[str, float]) -> None:
        """One step done: check its losses, keep them, and checkpoint when due."""
        bad = [k for k, v in losses.items() if not math.isfinite(v)]
        if bad:
            raise self._numerical_error(f"{bad[0]} is {losses[bad[0]]}")
        self.history.append(losses)
        self.step += 1
        if self.path is not None and self.every and self.step % self.every == 0:
            self.save()

    def save(self) -> None:
        """Write the state file, unless a weight is NaN or infinite (then stop). Under torchrun
        every process checks its weights (they are the same everywhere, so all stop together)
        and the main process alone writes."""
        tensors = self._tensors()
        bad = next((k for k, v in tensors.items() if _not_finite(v)), None)
        if bad is not None:
            raise self._numerical_error(f"{bad} holds NaN or Inf")
        if not is_main():
            return
        meta = {
            "phase": self.phase,
            "step": self.step,
            "history": self.history,
            "identity": self.identity,
            "t": {k: u.t for k, u in self.updates.items()},
            "random": {k: r.getstate() for k, r in self.rngs.items() if _is_random(r)},
        }
        save_tensors(self.path, tensors, meta)

    def _tensors(self) -> dict[str, torch.Tensor]:
        tensors = {f"module/{k}": v for k, v in self.module.state_dict().items()}
        for key, update in self.updates.items():
            for name, (m, v) in update.moments.items():
                tensors[f"moments/{key}/m/{name}"] = m
                tensors[f"moments/{key}/v/{name}"] = v
        for key, rng in self.rngs.items():
            if not _is_random(rng):
                tensors[f"rng/{key}"] = rng.get_state()
        tensors.update({f"extra/{k}": v for k, v in self.extra.items()})
        return tensors

    def _restore(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self._check_identity(meta.get("identity"))
        try:
            self.module.load_state_dict(_under(tensors, "module/"))
            device = next(self.module.parameters()).device
            for key, update in self.updates.items():
                update.t = meta["t"][key]
                m, v = _under(tensors, f"moments/{key}/m/"), _under(tensors, f"moments/{key}/v/")
                update.moments = {n: (m[n].to(device), v[n].to(device)) for n in m}
            for key, rng in self.rngs.items():
                if _is_random(rng):
                    version, internal, gauss = meta["random"][key]
                    rng.setstate((version, tuple(internal), gauss))
                else:
                    rng.set_state(tensors[f"rng/{key}"])
            with torch.no_grad():
                for key, value in self.extra.items():
                    value.copy_(tensors[f"extra/{key}"])
            self.step, self.history = int(meta["step"]), list(meta["history"])
        except (KeyError, TypeError, ValueError, RuntimeError):
            raise MtganError(
                f"{self.path} does not fit this {self.phase} phase (another architecture, N or "
                "version); delete it to start the phase afresh"
            ) from None

    def _check_identity(self, saved: Any) -> None:
        """Refuse a state file written under other settings or from other starting weights."""
        if saved == self.identity:
            return
        saved = saved if isinstance(saved, dict) else {}
        keys = [*self.identity, *(k for k in saved if k not in self.identity)]  # settings first
        key = next(k for k in keys if saved.get(k) != self.identity.get(k))
        raise MtganError(
            f"{self.path} was written with {key}={saved.get(key)!r}, not "
            f"{self.identity.get(key)!r}; resume with the same settings or delete the file to "
            f"start the {self.phase} phase afresh"
        )

    def _numerical_error(self, what: str) -> NumericalError:
        kept = (
            f"the last good checkpoint {self.path} is kept"
            if self.path is not None and self.path.is_file()
            else "no checkpoint was written yet"
        )
        return NumericalError(
            f"{self.phase} diverged at step {self.step + 1}: {what}",
            f"{kept} (lower the learning rate, or rerun with --on-nan restart to resume with it "
            "halved)",
        )


def _is_random(rng: object) -> bool:
    return isinstance(rng, random.Random)


def _not_finite(t: torch.Tensor) -> bool:
    return t.is_floating_point() and not bool(torch.isfinite(t).all())


def _under(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
