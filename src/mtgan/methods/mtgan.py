"""Meta Transfer GAN and its ablations.

``mtgan`` pretrains the conditional GAN (phase a), meta-trains scale and shift over N-way tasks
of the training classes (phase b, eq. 10-12) and meets each test task with phase (c): NM and CF
trained on the K shots. Each ablation is ``mtgan`` with a few settings changed; it shares the
pretraining and changes meta-training and adaptation only.
"""

from __future__ import annotations

from typing import ClassVar

from mtgan.config import Config, with_overrides
from mtgan.methods.base import AdaptsGan, Context, Method, register


@register
class MetaTransferGAN(Method):
    name = "mtgan"
    description = "Meta Transfer GAN: pretrain, meta-train SS (eq. 10-12), adapt NM and CF"
    phases = ("pretrain", "meta-train")
    overrides: ClassVar[tuple[str, ...]] = ()
    """Settings that differ from the shared ones (the ablations')."""

    def configure(self, cfg: Config) -> Config:
        return with_overrides(cfg, list(self.overrides))

    def fit(self, ctx: Context, cfg: Config) -> AdaptsGan:
        gan, seconds = ctx.meta_trained(cfg)
        return AdaptsGan(ctx, gan, cfg, seconds)


ABLATIONS = {
    "mtgan-layer": ("model.ss_granularity=layer",),
    "mtgan-kernel": ("model.ss_granularity=kernel",),
    "mtgan-eq5": ("model.objective=eq5",),
    "mtgan-second-order": ("meta.second_order=true",),
    "mtgan-eq12": ("meta.head_update=average",),
    "mtgan-no-augment": ("adapt.augment=",),
    "mtgan-features": ("meta.outer_g=features",),
    "mtgan-ss-g": ("meta.ss_sides=g",),
    "mtgan-ss-d": ("meta.ss_sides=d",),
    "mtgan-reptile": ("meta.head_update=average", "meta.head_step=0.1"),
    "mtgan-rates": ("meta.learn_rates=true",),
    "mtgan-t50": ("meta.inner_steps=50", "meta.outer_lr=1e-3", "meta.meta_batch=2"),
}
"""Variants of ``mtgan``: its settings with these overrides (SS granularity, eq. 5 against
eq. 6, second order, eq. 12's head averaging, no augmentation of D's inputs, G's scale and
shift trained to match the query images' features instead of eq. 11's L_G, scale and shift
of IC only or of FE only, eq. 12 as a Reptile step of 0.1 towards the adapted heads, Meta-SGD's
learned learning rates for NM and CF, inner loops of 50 steps (a 50-step adaptation budget)
with a ten times larger outer learning rate and half the meta-batch)."""

for _name, _overrides in ABLATIONS.items():
    register(
        type(
            f"Ablation_{_name.replace('-', '_')}",
            (MetaTransferGAN,),
            {
                "name": _name,
                "description": "mtgan with " + ", ".join(_overrides),
                "overrides": _overrides,
            },
        )
    )
