"""The conditional GAN as one module, with the paper's parameter groups.

Parameter names read like the paper: ``generator.nm.*`` (NM), ``generator.ic.*`` (IC),
``discriminator.fe.*`` (FE), ``discriminator.cf.*`` (CF), and ``*.ss_scale`` / ``*.ss_shift``
for the scale and shift of every convolution.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import torch
from torch import nn

from mtgan.checkpoint import read_checkpoint, save_tensors
from mtgan.choices import Granularity, HeadInit, Upsampling, allowed
from mtgan.errors import MtganError
from mtgan.nn.bank import ClassBank
from mtgan.nn.discriminator import Discriminator
from mtgan.nn.generator import Generator
from mtgan.nn.rates import HeadRates
from mtgan.nn.ss import is_ss_parameter

HEAD_INITS = allowed(HeadInit)
ARCHITECTURE_KEYS = ("image_size", "channels", "z_dim", "g_width", "d_width", "ss_granularity")
"""The constructor's arguments (besides the class count) that every checkpoint records."""
ARCHITECTURE_DEFAULTS = {"upsample": "transposed", "spectral_norm": False}
"""Later arguments, with the value that checkpoints saved before them were built with."""


class ConditionalGAN(nn.Module):
    """Generator and discriminator for ``n_classes`` classes.

    Example:
        >>> gan = ConditionalGAN(n_classes=5, image_size=32, channels=1)
        >>> x = gan.generator(torch.randn(4, gan.generator.z_dim), torch.tensor([0, 1, 2, 3]))
        >>> tuple(x.shape), tuple(gan.discriminator(x).shape)
        ((4, 1, 32, 32), (4, 6))
    """

    def __init__(
        self,
        n_classes: int,
        image_size: int = 32,
        channels: int = 1,
        z_dim: int = 64,
        g_width: int = 32,
        d_width: int = 32,
        ss_granularity: Granularity = "channel",
        bank_classes: int = 0,
        upsample: Upsampling = "transposed",
        spectral_norm: bool = False,
    ):
        super().__init__()
        self.config = {
            "image_size": image_size,
            "channels": channels,
            "z_dim": z_dim,
            "g_width": g_width,
            "d_width": d_width,
            "ss_granularity": ss_granularity,
            "upsample": upsample,
            "spectral_norm": spectral_norm,
        }
        self.generator = Generator(
            n_classes, image_size, channels, z_dim, g_width, ss_granularity, upsample
        )
        self.discriminator = Discriminator(
            n_classes, image_size, channels, d_width, ss_granularity, spectral_norm
        )
        nm_out, features = self.generator.nm_out_features, self.discriminator.fe.out_features
        self.rates = HeadRates(z_dim, nm_out, features)
        self.bank = ClassBank(nm_out, features, bank_classes)

    @property
    def n_classes(self) -> int:
        return self.generator.n_classes

    @property
    def architecture(self) -> dict[str, Any]:
        """What rebuilds this model: its constructor's arguments, with today's class count and
        the number of pretrained classes it keeps (:class:`mtgan.nn.bank.ClassBank`)."""
        return {**self.config, "n_classes": self.n_classes, "bank_classes": len(self.bank)}

    def names(self, group: str) -> list[str]:
        """Names of the parameters in one group.

        Groups: ``nm``, ``ic``, ``fe``, ``cf`` (the weights, SS excluded), ``ss_g`` and
        ``ss_d`` (scale and shift of IC and FE), ``g`` and ``d`` (all weights of G or D),
        ``rates`` (the learned log-multipliers of NM's and CF's learning rates).
        """
        prefixes = {
            "nm": "generator.nm.",
            "ic": "generator.ic.",
            "fe": "discriminator.fe.",
            "cf": "discriminator.cf.",
            "ss_g": "generator.ic.",
            "ss_d": "discriminator.fe.",
            "g": "generator.",
            "d": "discriminator.",
            "rates": "rates.",
        }
        if group not in prefixes:
            raise ValueError(f"unknown parameter group {group!r}")
        want_ss = group.startswith("ss_")
        return [
            n
            for n, _ in self.named_parameters()
            if n.startswith(prefixes[group]) and is_ss_parameter(n) == want_ss
        ]

    def freeze_backbone(self) -> None:
        """Freeze IC and FE (phases b-d): their weights need no gradient, BatchNorm layers use
        their recorded statistics. NM, CF and scale-and-shift stay trainable."""
        trainable = set(self.names("nm") + self.names("cf"))
        for name, p in self.named_parameters():
            p.requires_grad_(is_ss_parameter(name) or name in trainable)
        self.eval()

    def reset_heads(self, n_classes: int, init: HeadInit = "pretrained") -> None:
        """Fresh NM and CF for ``n_classes`` classes (phases b and c).

        ``init="pretrained"`` keeps the noise columns of the old NM and gives every new class
        the mean of the old class columns; CF's class rows likewise start at the mean of the old
        class rows and its fake row is kept. ``init="random"`` uses PyTorch's default init.
        The first replacement keeps the old (pretrained) class heads in :attr:`bank`.
        """
        if init not in HEAD_INITS:
            raise ValueError(f"unknown head init {init!r}; choose one of {HEAD_INITS}")
        g, d = self.generator, self.discriminator
        if not len(self.bank) and not self.bank.closed:
            self.bank.keep(g.nm, d.cf, g.z_dim)
        nm = nn.Linear(g.z_dim + n_classes, g.nm_out_features)
        cf = nn.Linear(d.fe.out_features, n_classes + 1)
        if init == "pretrained":
            _inherit_nm(nm, g.nm, g.z_dim)
            _inherit_cf(cf, d.cf)
        g.nm, d.cf = nm.to(g.nm.weight.device), cf.to(d.cf.weight.device)
        g.n_classes = d.n_classes = n_classes

    def with_fresh_heads(self, n_classes: int, init: HeadInit = "pretrained") -> ConditionalGAN:
        """A copy with fresh NM and CF (:meth:`reset_heads`); this model is left as it is."""
        fresh = copy.deepcopy(self)
        fresh.reset_heads(n_classes, init)
        return fresh


@torch.no_grad()
def _inherit_nm(new: nn.Linear, old: nn.Linear, z_dim: int) -> None:
    new.weight[:, :z_dim] = old.weight[:, :z_dim]
    new.weight[:, z_dim:] = old.weight[:, z_dim:].mean(1, keepdim=True)
    new.bias.copy_(old.bias)


@torch.no_grad()
def _inherit_cf(new: nn.Linear, old: nn.Linear) -> None:
    new.weight[:-1] = old.weight[:-1].mean(0, keepdim=True)
    new.bias[:-1] = old.bias[:-1].mean()
    new.weight[-1] = old.weight[-1]
    new.bias[-1] = old.bias[-1]


def save_gan(
    gan: ConditionalGAN, path: str | os.PathLike, classes: list[str] | None = None, **info: Any
) -> None:
    """Save weights, architecture, slot class names and any JSON-able ``info``."""
    meta = {"architecture": gan.architecture, "classes": classes, **info}
    save_tensors(path, gan.state_dict(), meta)


def load_gan(path: str | os.PathLike) -> tuple[ConditionalGAN, dict[str, Any]]:
    """Rebuild a ConditionalGAN from a checkpoint; returns it and the checkpoint's metadata."""
    tensors, meta = read_checkpoint(path)
    try:
        arch = meta["architecture"]
        kept = arch.get("bank_classes", 0)  # older checkpoints kept no pretrained classes
        later = {k: arch.get(k, v) for k, v in ARCHITECTURE_DEFAULTS.items()}
        gan = ConditionalGAN(
            arch["n_classes"], **{k: arch[k] for k in ARCHITECTURE_KEYS}, bank_classes=kept, **later
        )
    except (KeyError, TypeError, ValueError, RuntimeError):
        raise MtganError(f"{path} is not a GAN checkpoint (no usable architecture)") from None
    try:
        missing, unexpected = gan.load_state_dict(tensors, strict=False)
    except RuntimeError:  # a tensor of the wrong shape
        missing, unexpected = ["(tensor shapes differ)"], []
    older = [k for k in missing if k.startswith(("rates.", "bank."))]  # saved before them
    missing = [k for k in missing if k not in older]
    if any(k.startswith("bank.") for k in older):  # its heads may not be the pretrained ones
        gan.bank.closed = True
    if missing or unexpected:
        raise MtganError(
            f"checkpoint {path} does not match its architecture: missing {missing[:3]}"
        )
    gan.requires_grad_(False)
    return gan, meta
