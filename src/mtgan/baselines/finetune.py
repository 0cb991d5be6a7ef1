"""The fine-tuning baseline: every weight of the pretrained GAN trained on the support set.

Phase (c) with nothing frozen: fresh NM and CF for the N new classes (``model.head_init``, as for
the ``frozen`` baseline, even when pretraining had N classes too),
then IC, FE, NM and CF all trained on the K shots with ``finetune.lr`` for ``finetune.steps``,
D's inputs augmented as ``finetune.augment`` says (none by default).
There is no meta-learning and scale and shift stay at identity.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from mtgan.config import Config
from mtgan.nn.gan import ConditionalGAN
from mtgan.phases.adapt import adapt


def finetune(
    pretrained: ConditionalGAN,
    support: torch.Tensor,
    labels: torch.Tensor,
    cfg: Config,
    device: torch.device,
    seed: int,
) -> ConditionalGAN:
    """The pretrained GAN (not modified) fine-tuned on ``support`` (uint8) with slots ``labels``."""
    f = cfg.finetune
    fresh = pretrained.with_fresh_heads(int(labels.max()) + 1, cfg.model.head_init)
    tuned = replace(cfg, adapt=replace(cfg.adapt, steps=f.steps, lr=f.lr, augment=f.augment))
    gan, _ = adapt(fresh, support, labels, tuned, device, seed, weights="all")
    return gan
