"""The from-scratch baseline: the conditional GAN trained on the support set alone.

Phase (a) on the K shots of the N classes, ``scratch.steps`` steps from a random start: what a
few-shot method must beat to show that it transfers anything.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from mtgan.config import Config
from mtgan.data.base import ClassDataset
from mtgan.nn.gan import ConditionalGAN
from mtgan.phases.pretrain import build_gan, pretrain


def train_from_scratch(
    support: torch.Tensor, labels: torch.Tensor, cfg: Config, device: torch.device, seed: int
) -> ConditionalGAN:
    """A new conditional GAN for the support set's classes (slots ``labels``), uint8 images."""
    n_way = int(labels.max()) + 1
    dataset = ClassDataset("support", {str(s): support[labels == s] for s in range(n_way)})
    own = replace(cfg, seed=seed, pretrain=replace(cfg.pretrain, steps=cfg.scratch.steps))
    torch.manual_seed(seed)
    gan = build_gan(own, n_way)
    pretrain(gan, dataset, own, device)
    return gan
