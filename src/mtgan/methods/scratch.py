"""The from-scratch baseline: the conditional GAN trained on the support set alone.

Phase (a) on the K shots of the N classes, ``scratch.steps`` steps from a random start: what a
few-shot method must beat to show that it transfers anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from mtgan.config import Config
from mtgan.data.base import ClassDataset
from mtgan.methods.base import Adapted, Context, Method, register
from mtgan.nn.gan import ConditionalGAN
from mtgan.phases.pretrain import build_gan, pretrain


@register
class Scratch(Method):
    name = "scratch"
    description = "the conditional GAN trained on the support set alone"
    adapt_steps_key = "scratch.steps"

    def fit(self, ctx: Context, cfg: Config) -> FromScratch:
        return FromScratch(ctx.device, cfg)


@dataclass
class FromScratch:
    """Nothing learnt before the task: each task trains its own GAN."""

    device: torch.device
    cfg: Config
    seconds: dict[str, float] = field(default_factory=dict)

    def adapt(self, support, labels, seed, folder=None) -> Adapted:
        return Adapted.of(
            train_from_scratch(support, labels, self.cfg, self.device, seed), self.device
        )


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
