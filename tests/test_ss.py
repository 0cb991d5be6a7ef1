import pytest
import torch
from torch import nn

from mtgan.nn.ss import GRANULARITIES, SSConv2d, SSConvTranspose2d


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_identity_scale_and_shift_equal_the_frozen_layer_exactly(granularity):
    torch.manual_seed(0)
    conv, tconv = nn.Conv2d(3, 8, 4, 2, 1), nn.ConvTranspose2d(8, 3, 3, 2, 1)
    x, h = torch.randn(5, 3, 16, 16), torch.randn(5, 8, 6, 6)
    assert torch.equal(SSConv2d(conv, granularity)(x), conv(x))
    assert torch.equal(SSConvTranspose2d(tconv, granularity)(h), tconv(h))


@pytest.mark.parametrize("layer_cls", [SSConv2d, SSConvTranspose2d])
@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_output_is_scaled_weight_plus_bias_plus_shift(layer_cls, granularity):
    torch.manual_seed(1)
    base = nn.Conv2d(4, 6, 3, 1, 1) if layer_cls is SSConv2d else nn.ConvTranspose2d(4, 6, 3, 1, 1)
    ss = layer_cls(base, granularity)
    with torch.no_grad():
        ss.ss_scale.uniform_(0.5, 1.5)
        ss.ss_shift.uniform_(-1, 1)
    x = torch.randn(2, 4, 7, 7)
    ref = nn.Conv2d(4, 6, 3, 1, 1) if layer_cls is SSConv2d else nn.ConvTranspose2d(4, 6, 3, 1, 1)
    with torch.no_grad():
        ref.weight.copy_(ss.ss_scale * base.weight)
        ref.bias.copy_(base.bias + ss.ss_shift)
    torch.testing.assert_close(ss(x), ref(x))


def test_granularity_shapes():
    conv = nn.Conv2d(3, 8, 4)
    shapes = {
        g: (SSConv2d(conv, g).ss_scale.numel(), SSConv2d(conv, g).ss_shift.numel())
        for g in GRANULARITIES
    }
    assert shapes == {"layer": (1, 1), "channel": (8, 8), "kernel": (24, 8)}
    tconv = nn.ConvTranspose2d(8, 3, 4)
    assert SSConvTranspose2d(tconv, "channel").ss_scale.shape == (1, 3, 1, 1)


def test_unknown_granularity_is_refused():
    with pytest.raises(ValueError, match="granularity"):
        SSConv2d(nn.Conv2d(1, 1, 1), "pixel")
