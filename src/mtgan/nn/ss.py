"""Scale and shift (SS): the meta-learned re-purposing of frozen convolution layers.

Every convolution of the image constructor and the feature extractor computes
``(S1 * W) x + b + S2`` (Sec. 3.2 of the paper), where ``W`` and ``b`` are the pretrained,
frozen weight and bias and only ``S1`` (``ss_scale``, starting at 1) and ``S2`` (``ss_shift``,
starting at 0) are meta-learned.

Granularity of S1 and S2:

- ``layer``: one scalar scale and one scalar shift per layer (the paper);
- ``channel``: one scale and one shift per output channel;
- ``kernel``: one scale per (output, input) channel pair and one shift per output channel
  (Meta-Transfer Learning, Sun et al. 2019).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mtgan.choices import Granularity, allowed
from mtgan.nn.spectral import SpectralNorm

GRANULARITIES = allowed(Granularity)


def _scale_shape(
    granularity: Granularity, weight_shape: torch.Size, transposed: bool
) -> tuple[int, ...]:
    """Shape of S1, broadcastable against the conv weight."""
    # Conv2d weights are (out, in, kh, kw); ConvTranspose2d weights are (in, out, kh, kw).
    out_dim = 1 if transposed else 0
    if granularity == "layer":
        return (1, 1, 1, 1)
    if granularity == "channel":
        shape = [1, 1, 1, 1]
        shape[out_dim] = weight_shape[out_dim]
        return tuple(shape)
    if granularity == "kernel":
        return (weight_shape[0], weight_shape[1], 1, 1)
    raise ValueError(f"unknown SS granularity {granularity!r}; choose one of {GRANULARITIES}")


class _SSConvBase(nn.Module):
    """A convolution with frozen ``weight``/``bias`` and learnable ``ss_scale``/``ss_shift``;
    with ``spectral``, ``W`` is spectrally normalised (:mod:`mtgan.nn.spectral`), its estimate
    of the largest singular value refined at every call while ``W`` trains."""

    transposed = False

    def __init__(self, conv: nn.Module, granularity: Granularity, spectral: bool = False):
        super().__init__()
        self.stride, self.padding = conv.stride, conv.padding
        self.weight = nn.Parameter(conv.weight.detach().clone())
        self.bias = nn.Parameter(conv.bias.detach().clone())
        self.granularity = granularity
        shape = _scale_shape(granularity, self.weight.shape, self.transposed)
        n_out = self.bias.shape[0]
        self.ss_scale = nn.Parameter(torch.ones(shape))
        self.ss_shift = nn.Parameter(torch.zeros(1 if granularity == "layer" else n_out))
        self.spectral = SpectralNorm(self.weight.shape[0]) if spectral else None

    def scaled(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. of Sec. 3.2: the effective weight ``S1 * W`` and bias ``b + S2`` (``W`` divided
        by its largest singular value when spectrally normalised)."""
        weight = self.weight
        if self.spectral is not None:
            weight = self.spectral(weight, refine=self.training and weight.requires_grad)
        return self.ss_scale * weight, self.bias + self.ss_shift

    def extra_repr(self) -> str:
        return f"weight={tuple(self.weight.shape)}, stride={self.stride}, ss={self.granularity}"


class SSConv2d(_SSConvBase):
    """``Conv2d`` with scale and shift: ``(S1 * W) x + b + S2``.

    Example:
        >>> conv = nn.Conv2d(3, 8, 4, 2, 1)
        >>> ss = SSConv2d(conv, "channel")
        >>> x = torch.randn(2, 3, 16, 16)
        >>> torch.equal(ss(x), conv(x))
        True
    """

    def __init__(
        self, conv: nn.Conv2d, granularity: Granularity = "channel", spectral: bool = False
    ):
        super().__init__(conv, granularity, spectral)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.scaled()
        return F.conv2d(x, weight, bias, self.stride, self.padding)


# Nearest-neighbour doubling then a 3x3 convolution (padding 1) is a stride-2 transposed
# convolution (padding 1) whose 4x4 kernel is tied to the 3x3 one: output row 2i reads input
# rows i - 1 and i with kernel rows 3 and 1, output row 2i + 1 rows i and i + 1 with kernel rows 2
# and 0, and the doubled map gives those taps the 3x3 kernel's rows 0, 1 + 2, 0 + 1 and 2. The
# rows of TIED_ROWS are kernel rows 0-3, its columns the 3x3 kernel's rows (the same for columns).
TIED_ROWS = torch.tensor(
    [[0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
)  # fmt: skip


class SSResizeConv2d(SSConv2d):
    """Nearest-neighbour doubling, then a 3x3 ``Conv2d`` with scale and shift (padding 1).

    Computed without building the doubled map, as the stride-2 transposed convolution with the
    tied 4x4 kernel ``TIED_ROWS (S1 * W) TIED_ROWS^T`` (equal to float rounding, with the same
    parameters and the multiply-adds of a transposed convolution, under half those of resizing
    first).

    Example:
        >>> conv = nn.Conv2d(3, 2, 3, padding=1)
        >>> x = torch.randn(1, 3, 5, 5, dtype=torch.float64)
        >>> ss = SSResizeConv2d(conv.double(), "channel")
        >>> plain = conv(F.interpolate(x, scale_factor=2))
        >>> bool(torch.allclose(ss(x), plain))
        True
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.scaled()
        rows = TIED_ROWS.to(weight)
        kernel = torch.einsum("yk,xl,oikl->ioyx", rows, rows, weight)
        return F.conv_transpose2d(x, kernel, bias, stride=2, padding=1)

    def extra_repr(self) -> str:
        return f"nearest x2, then {super().extra_repr()}"


class SSConvTranspose2d(_SSConvBase):
    """``ConvTranspose2d`` with scale and shift: ``(S1 * W) x + b + S2``."""

    transposed = True

    def __init__(self, conv: nn.ConvTranspose2d, granularity: Granularity = "channel"):
        super().__init__(conv, granularity)
        self.output_padding = conv.output_padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.scaled()
        return F.conv_transpose2d(x, weight, bias, self.stride, self.padding, self.output_padding)


def is_ss_parameter(name: str) -> bool:
    """Whether a parameter name is a scale or shift of the SS layers."""
    return name.endswith(("ss_scale", "ss_shift"))


def ss_movement(module: nn.Module) -> dict[str, dict[str, float]]:
    """How far meta-learning moved each layer's scale and shift from identity: the mean of
    ``|S1 - 1|`` and of ``|S2|`` over the layer's entries, by layer name.

    Example:
        >>> ss = SSConv2d(nn.Conv2d(1, 2, 3), "channel")
        >>> with torch.no_grad():
        ...     _ = ss.ss_scale.fill_(1.5)
        >>> ss_movement(nn.Sequential(ss))
        {'0': {'scale': 0.5, 'shift': 0.0}}
    """
    return {
        name: {
            "scale": (layer.ss_scale - 1).abs().mean().item(),
            "shift": layer.ss_shift.abs().mean().item(),
        }
        for name, layer in module.named_modules()
        if isinstance(layer, _SSConvBase)
    }
