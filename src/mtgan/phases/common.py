"""What the phases share: devices, seeded noise, batches of real images, progress bars, and
what identifies a phase's state file."""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
from collections.abc import Sequence
from typing import Any

import torch
from tqdm import tqdm

from mtgan.config import Config
from mtgan.data.base import ClassDataset, to_model_range
from mtgan.distributed import is_main
from mtgan.errors import ConfigError
from mtgan.nn.gan import ConditionalGAN

#: Keys a resumed phase may change: learning rates (``--on-nan restart`` halves them), the
#: checkpoint interval, where the data lives and how strictly it is read.
RESUMABLE_CHANGES = ("lr", "checkpoint_every", "root", "strict")


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda was asked for but CUDA is not available; use --device cpu")
    return torch.device(name)


def place(gan: ConditionalGAN, device: torch.device, channels_last: bool) -> ConditionalGAN:
    """``gan`` on ``device``, its convolutions channels-last or contiguous (``speed.channels_last``:
    channels-last measured faster on the CPU; the values are the same up to rounding)."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    return gan.to(device, memory_format=layout)


def autocast(cfg: Config, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast where ``speed.precision`` asks for it (GAN steps only; updates stay fp32)."""
    return torch.autocast(device.type, torch.bfloat16, enabled=cfg.speed.precision == "bf16")


def noise(n: int, z_dim: int, rng: torch.Generator, device: torch.device) -> torch.Tensor:
    """Standard normal z drawn on the CPU from ``rng`` (the same on every device)."""
    return torch.randn(n, z_dim, generator=rng).to(device)


def stack_classes(dataset: ClassDataset) -> tuple[torch.Tensor, torch.Tensor]:
    """All images (uint8) and their class indices, in ``dataset.classes`` order."""
    images = [dataset.images_of(c) for c in dataset.classes]
    labels = [torch.full((len(x),), i) for i, x in enumerate(images)]
    return torch.cat(images), torch.cat(labels)


def to_device(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 images to model-range floats on ``device``."""
    return to_model_range(images.to(device))


def progress_bar(total: int, desc: str, enabled: bool, initial: int = 0) -> tqdm:
    """A tqdm bar on stderr, shown by the main process only."""
    shown = enabled and is_main()
    return tqdm(
        total=total, initial=initial, desc=desc, disable=not shown, file=sys.stderr, leave=True
    )


def state_identity(
    cfg: Config, sections: Sequence[str], *start: torch.Tensor | torch.nn.Module
) -> dict[str, Any]:
    """What a phase's state file must match to be resumed: the settings of ``sections`` (but
    :data:`RESUMABLE_CHANGES`) and a digest of the phase's starting weights and data."""
    settings = cfg.to_dict()
    values = {}
    for section in sections:
        part = settings[section]
        flat = {f"{section}.{k}": v for k, v in part.items()} if isinstance(part, dict) else {}
        values |= flat or {section: part}
    values = {k: v for k, v in values.items() if not k.endswith(RESUMABLE_CHANGES)}
    digest = hashlib.sha256()
    for item in start:
        tensors = item.state_dict().values() if isinstance(item, torch.nn.Module) else [item]
        for t in tensors:
            digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    values["start"] = digest.hexdigest()[:16]
    return json.loads(json.dumps(values))
