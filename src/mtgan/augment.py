"""Differentiable augmentation of the discriminator's inputs for K-shot training.

DiffAugment (Zhao et al., 2020): the same random transformation family is applied to real and
to generated images every time D sees them, and it is differentiable, so G learns through it.
With K = 10 images per class D otherwise memorises the support set within a few hundred steps
and its gradients stop guiding G. The policies and their ranges follow the paper: ``translation``
shifts by up to 1/8 of the size (edges repeat), ``cutout`` blanks a square of half the size,
``color`` jitters brightness, saturation and contrast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mtgan.choices import parse_policies

__all__ = ["Augment", "TaskAugment", "color", "cutout", "parse_policies", "translation"]


class Augment:
    """Applies ``policies`` in order to images (..., C, H, W) in [-1, 1], each image drawing its
    own random parameters from ``rng`` (a CPU generator, so that runs repeat on any device)."""

    def __init__(self, policies: tuple[str, ...], rng: torch.Generator):
        self.policies, self.rng = policies, rng

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        flat = images.flatten(0, -4)
        for policy in self.policies:
            flat = _POLICY[policy](flat, self.rng)
        return flat.reshape(images.shape)


class TaskAugment:
    """One :class:`Augment` per task of a task batch (T, n, C, H, W), each with its own seed
    (``seeds`` (T,), or a 0-dimensional seed for a single task without the task dimension), so
    that T tasks augmented at once get what each task augmented alone gets."""

    def __init__(self, policies: tuple[str, ...], seeds: torch.Tensor):
        self.batched = seeds.dim() == 1
        self.each = [
            Augment(policies, torch.Generator().manual_seed(int(s))) for s in seeds.reshape(-1)
        ]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if not self.batched:
            return self.each[0](images)
        return torch.stack([augment(x) for augment, x in zip(self.each, images, strict=True)])


def _uniform(n: int, rng: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return torch.rand(n, 1, 1, 1, generator=rng).to(like.device, like.dtype)


def translation(x: torch.Tensor, rng: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    """Each image shifted by a whole number of pixels in [-p, p] on each axis, p = ratio * size;
    the pixels that enter repeat the edge."""
    b, _, h, w = x.shape
    ph, pw = max(1, round(h * ratio)), max(1, round(w * ratio))
    padded = F.pad(x, (pw, pw, ph, ph), mode="replicate").permute(0, 2, 3, 1)
    dy = torch.randint(0, 2 * ph + 1, (b, 1), generator=rng).to(x.device)
    dx = torch.randint(0, 2 * pw + 1, (b, 1), generator=rng).to(x.device)
    rows = (dy + torch.arange(h, device=x.device))[:, :, None]
    cols = (dx + torch.arange(w, device=x.device))[:, None, :]
    picked = padded[torch.arange(b, device=x.device)[:, None, None], rows, cols]
    return picked.permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, rng: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    """Each image with a square of ratio * size set to 0 (mid-grey), centred anywhere in it
    (so near an edge part of the square falls outside)."""
    b, _, h, w = x.shape
    ch, cw = max(1, round(h * ratio)), max(1, round(w * ratio))
    top = torch.randint(0, h, (b, 1), generator=rng).to(x.device) - ch // 2
    left = torch.randint(0, w, (b, 1), generator=rng).to(x.device) - cw // 2
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    inside_y = (rows >= top) & (rows < top + ch)
    inside_x = (cols >= left) & (cols < left + cw)
    keep = ~(inside_y[:, :, None] & inside_x[:, None, :])
    return x * keep[:, None].to(x.dtype)


def color(x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """Brightness + U(-0.5, 0.5), saturation x U(0, 2), contrast x U(0.5, 1.5) per image (on a
    single channel saturation changes nothing)."""
    n = len(x)
    x = x + (_uniform(n, rng, x) - 0.5)
    grey = x.mean(1, keepdim=True)
    x = (x - grey) * (2 * _uniform(n, rng, x)) + grey
    mean = x.mean((1, 2, 3), keepdim=True)
    return (x - mean) * (_uniform(n, rng, x) + 0.5) + mean


_POLICY = {"translation": translation, "cutout": cutout, "color": color}
