"""The fine-tuning baselines: every weight of the pretrained GAN trained on the support set.

Phase (c) with nothing frozen: fresh NM and CF for the N new classes (``model.head_init``, as for
the ``frozen`` baseline, even when pretraining had N classes too), then IC, FE, NM and CF all
trained on the K shots with ``finetune.lr`` for ``finetune.steps``, D's inputs augmented as
``finetune.augment`` says (none by default). There is no meta-learning and scale and shift stay
at identity. The rest of phase (c)'s settings hold for fine-tuning too (``adapt.optimizer``,
``adapt.class_init``, ``adapt.mode_seeking``): the same objective, with every weight trained.
``finetune-augmented`` augments D's inputs as ``mtgan``'s are (``adapt.augment``), so that the
augmentation's share of ``mtgan``'s lead shows.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from mtgan.config import Config
from mtgan.methods.base import Adapted, Context, Method, register
from mtgan.nn.gan import ConditionalGAN

EVERY_WEIGHT = ("d", "g")
"""The parameter groups fine-tuning trains: all of D's and G's weights (not SS)."""


@register
class Finetune(Method):
    name = "finetune"
    description = "pretrain, then fine-tune every weight on the support set"
    phases = ("pretrain",)

    def fit(self, ctx: Context, cfg: Config) -> FineTuned:
        pretrained, seconds = ctx.pretrained(cfg)
        f = cfg.finetune
        fine = replace(cfg.adapt, steps=f.steps, lr=f.lr, augment=f.augment, ss_lr=0.0)
        tuned = replace(cfg, adapt=fine)
        return FineTuned(ctx, pretrained, tuned, {"pretrain": seconds})


@register
class FinetuneAugmented(Finetune):
    name = "finetune-augmented"
    description = "finetune, with D's inputs augmented as mtgan's are (adapt.augment)"

    def configure(self, cfg: Config) -> Config:
        return replace(cfg, finetune=replace(cfg.finetune, augment=cfg.adapt.augment))


@dataclass
class FineTuned:
    """The pretrained GAN, fine-tuned afresh (with fresh heads) for each task."""

    ctx: Context
    pretrained: ConditionalGAN
    cfg: Config
    seconds: dict[str, float]

    def adapt(self, support, labels, seed, folder=None) -> Adapted:
        n_way = int(labels.max()) + 1
        fresh = self.pretrained.with_fresh_heads(n_way, self.cfg.model.head_init)
        gan, info = self.ctx.adapted(fresh, support, labels, self.cfg, seed, folder, EVERY_WEIGHT)
        return Adapted.of(gan, self.ctx.device, info)
