"""Checkpoints: safetensors weights plus JSON metadata, written atomically.

A checkpoint holds every parameter and buffer of a :class:`ConditionalGAN` and, in the
safetensors header, the architecture needed to rebuild it, the class names of its slots and
the phase that wrote it. Nothing here unpickles.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from mtgan.errors import MtganError
from mtgan.nn.gan import ConditionalGAN

ARCHITECTURE_KEYS = ("image_size", "channels", "z_dim", "g_width", "d_width", "ss_granularity")


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one.

    The bytes go to a temporary file in the same folder, are flushed and fsynced, then the
    file is renamed over ``path``.
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
    tensors = {k: v.detach().cpu().contiguous() for k, v in gan.state_dict().items()}
    meta = {"architecture": architecture(gan), "classes": classes, **info}
    atomic_write(path, save_bytes(tensors, metadata={"mtgan": json.dumps(meta)}))


def load_gan(path: str | os.PathLike) -> tuple[ConditionalGAN, dict[str, Any]]:
    """Rebuild a ConditionalGAN from a checkpoint; returns it and the checkpoint's metadata."""
    tensors, meta = read_checkpoint(path)
    arch = meta["architecture"]
    gan = ConditionalGAN(arch["n_classes"], **{k: arch[k] for k in ARCHITECTURE_KEYS})
    missing, unexpected = gan.load_state_dict(tensors, strict=False)
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
    raw = path.read_bytes()
    try:
        tensors = load_bytes(raw)
        header_len = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8 : 8 + header_len])
        meta = json.loads(header["__metadata__"]["mtgan"])
    except (SafetensorError, ValueError, KeyError, TypeError):
        raise MtganError(f"{path} is not an mtgan checkpoint (corrupt or another format)") from None
    return tensors, meta
