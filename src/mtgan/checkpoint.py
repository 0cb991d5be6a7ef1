"""Checkpoints: safetensors weights plus JSON metadata, written atomically; resuming.

A checkpoint holds every parameter and buffer of a :class:`ConditionalGAN` and, in the
safetensors header, the architecture needed to rebuild it, the class names of its slots and
the phase that wrote it. A :class:`TrainingState` file holds what a phase loop needs to
continue where it stopped. Nothing here unpickles.
"""

from __future__ import annotations

import json
import math
import os
import random
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from mtgan.distributed import is_main
from mtgan.errors import MtganError, NumericalError
from mtgan.nn.gan import ConditionalGAN

ARCHITECTURE_KEYS = ("image_size", "channels", "z_dim", "g_width", "d_width", "ss_granularity")


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one.

    The bytes go to a temporary file in the same folder, are flushed and fsynced, then the
    file is renamed over ``path`` and the folder is fsynced.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide results from others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def architecture(gan: ConditionalGAN) -> dict[str, Any]:
    """What rebuilds ``gan``: sizes, widths, SS granularity and class count."""
    g, d = gan.generator, gan.discriminator
    first_conv = d.fe.layers.conv1
    return {
        "image_size": g.ic.image_size,
        "channels": g.ic.channels,
        "z_dim": g.z_dim,
        "g_width": g.ic.width,
        "d_width": first_conv.weight.shape[0],
        "ss_granularity": first_conv.granularity,
        "n_classes": gan.n_classes,
    }


def save_gan(
    gan: ConditionalGAN, path: str | os.PathLike, classes: list[str] | None = None, **info: Any
) -> None:
    """Save weights, architecture, slot class names and any JSON-able ``info``."""
    meta = {"architecture": architecture(gan), "classes": classes, **info}
    save_tensors(path, gan.state_dict(), meta)


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Tensors as safetensors with ``meta`` as JSON in the header, written atomically."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write(path, save_bytes(tensors, metadata={"mtgan": json.dumps(meta)}))


def load_gan(path: str | os.PathLike) -> tuple[ConditionalGAN, dict[str, Any]]:
    """Rebuild a ConditionalGAN from a checkpoint; returns it and the checkpoint's metadata."""
    tensors, meta = read_checkpoint(path)
    try:
        arch = meta["architecture"]
        gan = ConditionalGAN(arch["n_classes"], **{k: arch[k] for k in ARCHITECTURE_KEYS})
    except (KeyError, TypeError, ValueError, RuntimeError):
        raise MtganError(f"{path} is not a GAN checkpoint (no usable architecture)") from None
    try:
        missing, unexpected = gan.load_state_dict(tensors, strict=False)
    except RuntimeError:  # a tensor of the wrong shape
        missing, unexpected = ["(tensor shapes differ)"], []
    if missing or unexpected:
        raise MtganError(
            f"checkpoint {path} does not match its architecture: missing {missing[:3]}"
        )
    gan.requires_grad_(False)
    return gan, meta


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
