"""The allowed values of the settings that name a variant, declared once.

The config checks a value against these types (:mod:`mtgan.config`) and the modules that
implement the variants use the same names, so a new variant is added in one place.

Example:
    >>> allowed(Granularity)
    ('layer', 'channel', 'kernel')
"""

from __future__ import annotations

import typing
from typing import Literal

Granularity = Literal["layer", "channel", "kernel"]
"""Scale and shift: one per layer (the paper), per output channel, or per kernel (MTL)."""

Upsampling = Literal["transposed", "resize"]
"""How IC doubles its maps: stride-2 transposed convolutions (DCGAN), or nearest-neighbour
resizing then a 3x3 convolution, which cannot leave checkerboard patterns (Odena et al. 2016)."""

LrSchedule = Literal["constant", "linear"]
"""Pretraining's learning rate: constant, or constant for the first half of the steps and then
linearly down to 0 at the last (the schedule of pix2pix and CycleGAN)."""

HeadInit = Literal["pretrained", "random"]
"""Fresh NM and CF: from the mean of the pretrained class columns, or PyTorch's default."""

GeneratorLoss = Literal["eq6", "eq5"]
"""The generator loss: eq. 6 (classified as its class) or eq. 5 (classified as not fake)."""

OptimizerKind = Literal["adam", "sgd"]
"""The update rule of an inner loop or of adaptation."""

ClassInit = Literal["heads", "nearest"]
"""Where a new task's class columns of NM and rows of CF start: as the heads give them, or from
the pretrained classes that D recognises in the support images (:mod:`mtgan.nn.bank`)."""

NmPart = Literal["all", "classes"]
"""Which of NM's weights adaptation trains: all of them (eq. 10), or the class columns only."""

HeadUpdate = Literal["average", "reset"]
"""What meta-training does to NM and CF after an outer step: eq. 12's average, or reset."""

SsSides = Literal["both", "g", "d"]
"""Whose scale and shift meta-training's outer step trains: IC's and FE's, IC's only or FE's
only (the other side's stay at identity)."""

OuterGenerator = Literal["eq11", "features"]
"""What meta-training's outer step asks of G's scale and shift: eq. 11's L_G on the query
noise, or that generated images of each class match the query images' mean FE features."""

AugmentPolicy = Literal["translation", "cutout", "color"]
"""DiffAugment's transformations of D's inputs (:mod:`mtgan.augment`)."""

Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["fp32", "bf16"]
Channels = Literal[1, 3]


def allowed(choice: typing.Any) -> tuple:
    """The values a ``Literal`` type admits, in their declared order."""
    return typing.get_args(choice)


def parse_policies(text: str) -> tuple[AugmentPolicy, ...]:
    """``"translation,cutout"`` -> its augmentation policies (empty text: none); unknown names
    raise ValueError.

    Example:
        >>> parse_policies("translation, color")
        ('translation', 'color')
    """
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in allowed(AugmentPolicy)]
    if unknown:
        raise ValueError(
            f"unknown augmentation {unknown[0]!r}; choose from {', '.join(allowed(AugmentPolicy))}"
        )
    return names
