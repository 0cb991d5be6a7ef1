"""The generator G(z, c): the noise mapping NM, then the image constructor IC.

NM is one fully connected layer on ``z`` concatenated with the one-hot class ``c``; it is
replaced for every new set of classes. IC is the stack of transposed convolutions (each with
scale and shift, see :mod:`mtgan.nn.ss`) that turns NM's feature map into an image; it is
pretrained once and frozen afterwards.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from mtgan.choices import Granularity, Upsampling, allowed
from mtgan.nn.ss import SSConv2d, SSConvTranspose2d, SSResizeConv2d

UPSAMPLINGS = allowed(Upsampling)


def upsampling_plan(image_size: int, max_start: int = 7) -> list[int]:
    """Spatial sizes from IC's input to the image, each at most twice the one before.

    Example:
        >>> upsampling_plan(32), upsampling_plan(28), upsampling_plan(84)
        ([4, 8, 16, 32], [7, 14, 28], [6, 11, 21, 42, 84])
    """
    if image_size < 8:
        raise ValueError(f"image size {image_size} is too small; use at least 8")
    sizes = [image_size]
    while sizes[-1] > max_start:
        sizes.append((sizes[-1] + 1) // 2)
    return sizes[::-1]


def _upsample(
    c_in: int, c_out: int, size_in: int, size_out: int, granularity: Granularity, how: Upsampling
) -> list[tuple[str, nn.Module]]:
    """From size_in to size_out (= 2 size_in or 2 size_in - 1): a stride-2 transposed conv,
    or a nearest-neighbour resize then a 3x3 conv; the conv with scale and shift."""
    if how == "transposed":
        kernel = 4 if size_out == 2 * size_in else 3
        conv = nn.ConvTranspose2d(c_in, c_out, kernel, stride=2, padding=1)
        return [("conv", SSConvTranspose2d(conv, granularity))]
    if how == "resize":
        conv = nn.Conv2d(c_in, c_out, 3, stride=1, padding=1)
        if size_out == 2 * size_in:  # the same function, without the doubled map
            return [("conv", SSResizeConv2d(conv, granularity))]
        return [("resize", nn.Upsample(size=size_out)), ("conv", SSConv2d(conv, granularity))]
    raise ValueError(f"unknown upsampling {how!r}; choose one of {UPSAMPLINGS}")


class ImageConstructor(nn.Module):
    """IC: BatchNorm-ReLU-upsampling blocks from a (c0, s0, s0) map to a tanh image.

    After pretraining the BatchNorm layers run on their recorded statistics (eval mode), so
    that IC is a fixed function of its input and only scale and shift re-purpose it.
    """

    def __init__(
        self,
        image_size: int,
        channels: int,
        width: int,
        ss_granularity: Granularity,
        upsample: Upsampling = "transposed",
    ):
        super().__init__()
        sizes = upsampling_plan(image_size)
        widths = [width * 2 ** (len(sizes) - 2 - i) for i in range(len(sizes) - 1)] + [channels]
        self.image_size, self.channels, self.width = image_size, channels, width
        self.in_channels, self.in_size = widths[0], sizes[0]
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for i in range(len(sizes) - 1):
            layers[f"bn{i}"] = nn.BatchNorm2d(widths[i])
            layers[f"relu{i}"] = nn.ReLU()
            up = _upsample(
                widths[i], widths[i + 1], sizes[i], sizes[i + 1], ss_granularity, upsample
            )
            for kind, layer in up:
                layers[f"{kind}{i + 1}"] = layer
        self.layers = nn.Sequential(layers)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h.view(h.shape[0], self.in_channels, self.in_size, self.in_size)
        return torch.tanh(self.layers(h))


class Generator(nn.Module):
    """G(z, c) = IC(NM([z, onehot(c)])).

    Args:
        n_classes: the number of classes NM is conditioned on (C in pretraining, N after).
        image_size, channels: the images' size and channel count.
        z_dim: the noise dimension.
        width: the channels of IC's last hidden layer (doubled towards the input).
        ss_granularity: ``layer``, ``channel`` or ``kernel`` (see :mod:`mtgan.nn.ss`).
        upsample: IC's upsampling, ``transposed`` or ``resize``.
    """

    def __init__(
        self,
        n_classes: int,
        image_size: int = 32,
        channels: int = 1,
        z_dim: int = 64,
        width: int = 32,
        ss_granularity: Granularity = "channel",
        upsample: Upsampling = "transposed",
    ):
        super().__init__()
        self.z_dim, self.n_classes = z_dim, n_classes
        self.ic = ImageConstructor(image_size, channels, width, ss_granularity, upsample)
        self.nm = nn.Linear(z_dim + n_classes, self.nm_out_features)

    @property
    def nm_out_features(self) -> int:
        return self.ic.in_channels * self.ic.in_size**2

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Images for noise ``z`` (n, z_dim) and class indices ``labels`` (n,)."""
        return self.ic(self.nm(self.nm_input(z, labels)))

    def nm_input(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """NM's input: ``z`` (..., z_dim) concatenated with the one-hot ``labels`` (...)."""
        return torch.cat([z, F.one_hot(labels, self.n_classes).to(z.dtype)], dim=-1)


@torch.no_grad()
def calibrate_batchnorm(
    generator: Generator, batches: int, batch_size: int, rng: torch.Generator
) -> None:
    """Record IC's BatchNorm statistics as exact averages over generated batches.

    Pretraining normalises with batch statistics; afterwards IC runs in eval mode on these
    recorded ones, so it is a fixed function and generated images do not depend on the batch.
    With ``batches=0`` the running averages of pretraining are kept.
    """
    generator.eval()
    if batches == 0:
        return
    norms = [m for m in generator.ic.modules() if isinstance(m, nn.BatchNorm2d)]
    device = generator.nm.weight.device
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average
    generator.train()
    for _ in range(batches):
        z = torch.randn(batch_size, generator.z_dim, generator=rng).to(device)
        labels = torch.randint(generator.n_classes, (batch_size,), generator=rng).to(device)
        generator(z, labels)
    for bn in norms:
        bn.momentum = 0.1
    generator.eval()
