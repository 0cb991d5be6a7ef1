"""The discriminator D(x): the feature extractor FE, then the classifier CF.

CF has N + 1 outputs under a softmax: the N classes and "fake" (the last output, D_{N+1}).
FE's convolutions carry scale and shift (see :mod:`mtgan.nn.ss`); FE is pretrained once and
frozen afterwards, and CF is replaced for every new set of classes.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from mtgan.choices import Granularity
from mtgan.nn.generator import upsampling_plan
from mtgan.nn.ss import SSConv2d


class FeatureExtractor(nn.Module):
    """FE: stride-2 conv + LeakyReLU(0.2) blocks, mirroring the generator's depth; with
    ``spectral_norm``, every convolution is spectrally normalised (SN-GAN)."""

    def __init__(
        self,
        image_size: int,
        channels: int,
        width: int,
        ss_granularity: Granularity,
        spectral_norm: bool = False,
    ):
        super().__init__()
        depth = len(upsampling_plan(image_size)) - 1
        widths = [channels] + [width * 2**i for i in range(depth)]
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for i in range(depth):
            conv = nn.Conv2d(widths[i], widths[i + 1], 4, stride=2, padding=1)
            layers[f"conv{i + 1}"] = SSConv2d(conv, ss_granularity, spectral_norm)
            layers[f"lrelu{i + 1}"] = nn.LeakyReLU(0.2)
        self.layers = nn.Sequential(layers)
        with torch.no_grad():
            self.out_features = self.layers(
                torch.zeros(1, channels, image_size, image_size)
            ).numel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).flatten(1)


class Discriminator(nn.Module):
    """D(x) = CF(FE(x)): logits over N classes and "fake" (index N).

    Args:
        n_classes: the number of real classes (CF has n_classes + 1 outputs).
        image_size, channels: the images' size and channel count.
        width: the channels of FE's first layer (doubled at every layer).
        ss_granularity: ``layer``, ``channel`` or ``kernel``.
        spectral_norm: FE's convolutions spectrally normalised (Miyato et al. 2018); CF, the
            head every new set of classes replaces, is not.
    """

    def __init__(
        self,
        n_classes: int,
        image_size: int = 32,
        channels: int = 1,
        width: int = 32,
        ss_granularity: Granularity = "channel",
        spectral_norm: bool = False,
    ):
        super().__init__()
        self.n_classes = n_classes
        self.fe = FeatureExtractor(image_size, channels, width, ss_granularity, spectral_norm)
        self.cf = nn.Linear(self.fe.out_features, n_classes + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cf(self.fe(x))
