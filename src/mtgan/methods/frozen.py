"""The ``frozen`` baseline: Meta Transfer GAN without phase (b).

The pretrained networks get fresh NM and CF (``model.head_init``) and meet each test task with
phase (c) as ``mtgan`` does; scale and shift stay at identity. What ``mtgan`` gains over it is
what meta-learning adds.
"""

from __future__ import annotations

from mtgan.config import Config
from mtgan.methods.base import AdaptsGan, Context, Method, register


@register
class Frozen(Method):
    name = "frozen"
    description = "pretrain, then adapt fresh NM and CF on the frozen networks (no meta-learning)"
    phases = ("pretrain",)

    def fit(self, ctx: Context, cfg: Config) -> AdaptsGan:
        pretrained, seconds = ctx.pretrained(cfg)
        heads = pretrained.with_fresh_heads(cfg.task.n_way, cfg.model.head_init)
        return AdaptsGan(ctx, heads, cfg, {"pretrain": seconds})
