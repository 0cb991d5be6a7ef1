"""DiffAugment of D's inputs: what each policy does to an image, and its use in adaptation."""

import pytest
import torch

from mtgan.augment import Augment, color, cutout, parse_policies, translation
from mtgan.config import load_config
from mtgan.data.episodes import EpisodeSampler
from mtgan.phases.adapt import adapt
from mtgan.phases.pretrain import build_gan
from tests.conftest import TINY


def _dot(h=16, w=16, y=8, x=8, channels=1, batch=1):
    image = torch.full((batch, channels, h, w), -1.0)
    image[..., y, x] = 1.0
    return image


def test_translation_moves_a_dot_by_at_most_an_eighth_and_covers_every_shift():
    rng = torch.Generator().manual_seed(0)
    seen = set()
    moved = translation(_dot(batch=400), rng)
    for image in moved[:, 0]:
        ((y, x),) = (image == 1).nonzero().tolist()  # the dot is still there, once
        assert abs(y - 8) <= 2 and abs(x - 8) <= 2
        seen.add((y, x))
    assert len(seen) == 25, "every shift in [-2, 2] x [-2, 2] occurs"
    assert set(moved.unique().tolist()) == {-1.0, 1.0}, "entering pixels repeat the edge"


def test_translation_repeats_the_edge_rows():
    rng = torch.Generator().manual_seed(3)
    ramp = torch.arange(16.0).view(1, 1, 16, 1).expand(64, 1, 16, 16)
    out = translation(ramp, rng)
    assert out.min() == 0 and out.max() == 15
    for image in out[:, 0]:
        column = image[:, 0]
        assert torch.all(column.diff() >= 0) and torch.all(column.diff() <= 1)


def test_cutout_blanks_one_square_of_half_the_size_at_most():
    rng = torch.Generator().manual_seed(1)
    out = cutout(torch.ones(200, 1, 16, 16), rng)
    for image in out[:, 0]:
        rows, cols = (image == 0).nonzero().unbind(1)
        assert 0 < len(rows) <= 64
        height, width = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        assert height <= 8 and width <= 8 and height * width == len(rows), "one rectangle"
    assert (out == 0).sum(dim=(1, 2, 3)).max() == 64, "whole squares occur away from edges"


def test_color_shifts_brightness_and_scales_contrast_per_image():
    rng = torch.Generator().manual_seed(2)
    images = torch.rand(50, 3, 8, 8) * 2 - 1
    out = color(images, rng)
    assert out.shape == images.shape
    assert not torch.allclose(out.mean((1, 2, 3)), images.mean((1, 2, 3)))
    grey = torch.rand(50, 1, 8, 8)
    spread = color(grey, rng).std((1, 2, 3)) / grey.std((1, 2, 3))
    assert torch.all(spread >= 0.5 - 1e-5) and torch.all(spread <= 1.5 + 1e-5)


def test_augment_is_differentiable_seeded_and_keeps_leading_dimensions():
    policies = ("translation", "cutout", "color")
    images = torch.randn(2, 3, 3, 16, 16, requires_grad=True)
    out = Augment(policies, torch.Generator().manual_seed(4))(images)
    assert out.shape == images.shape
    out.square().sum().backward()
    assert images.grad.abs().sum() > 0
    again = Augment(policies, torch.Generator().manual_seed(4))(images.detach().flatten(0, 1))
    assert torch.equal(out.detach().flatten(0, 1), again)


def test_unknown_policy_is_refused():
    assert parse_policies(" translation, cutout ") == ("translation", "cutout")
    assert parse_policies("") == ()
    with pytest.raises(ValueError, match="unknown augmentation 'flip'"):
        parse_policies("translation,flip")
    with pytest.raises(Exception, match="adapt.augment"):
        load_config(overrides=["adapt.augment=flip"])


def test_adaptation_with_augmentation_is_seeded_and_differs_from_without(toy_dataset, device):
    cfg = load_config(overrides=TINY)
    augmented = load_config(overrides=[*TINY, "adapt.augment=translation,cutout"])
    torch.manual_seed(0)
    gan = build_gan(cfg, 3).eval()
    task = EpisodeSampler(toy_dataset, 3, 2, 0, seed=1).sample()
    shots = task.support, task.support_labels
    plain = adapt(gan, *shots, cfg, device, seed=7)[0].state_dict()
    one, two = (adapt(gan, *shots, augmented, device, seed=7)[0].state_dict() for _ in range(2))
    assert all(torch.equal(one[k], two[k]) for k in one)
    assert not torch.equal(one["discriminator.cf.weight"], plain["discriminator.cf.weight"])
