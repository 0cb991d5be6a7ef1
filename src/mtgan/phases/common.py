"""What the phases share: devices, seeded noise, batches of real images, progress bars."""

from __future__ import annotations

import sys

import torch
from tqdm import tqdm

from mtgan.data.base import ClassDataset, to_model_range
from mtgan.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda was asked for but CUDA is not available; use --device cpu")
    return torch.device(name)


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


def progress_bar(total: int, desc: str, enabled: bool) -> tqdm:
    return tqdm(total=total, desc=desc, disable=not enabled, file=sys.stderr, leave=True)
