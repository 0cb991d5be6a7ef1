import math

import pytest
import torch

from mtgan.losses import discriminator_loss, generator_loss


def _log_softmax_row(row):
    z = sum(math.exp(v) for v in row)
    return [v - math.log(z) for v in row]


REAL = [[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]]  # N = 2 classes + fake
FAKE = [[0.0, 1.0, 3.0], [1.0, -1.0, 0.5]]
LABELS = [0, 1]


def test_discriminator_loss_is_eq4_by_hand():
    real_term = -(_log_softmax_row(REAL[0])[0] + _log_softmax_row(REAL[1])[1]) / 2
    fake_term = -(_log_softmax_row(FAKE[0])[2] + _log_softmax_row(FAKE[1])[2]) / 2
    got = discriminator_loss(torch.tensor(REAL), torch.tensor(LABELS), torch.tensor(FAKE))
    assert got.item() == pytest.approx(real_term + fake_term, rel=1e-6)


def test_generator_loss_eq6_by_hand():
    want = -(_log_softmax_row(FAKE[0])[0] + _log_softmax_row(FAKE[1])[1]) / 2
    got = generator_loss(torch.tensor(FAKE), torch.tensor(LABELS), "eq6")
    assert got.item() == pytest.approx(want, rel=1e-6)


def test_generator_loss_eq5_by_hand():
    def not_fake(row):
        p = [math.exp(v) for v in _log_softmax_row(row)]
        return math.log(1 - p[-1])

    want = -(not_fake(FAKE[0]) + not_fake(FAKE[1])) / 2
    got = generator_loss(torch.tensor(FAKE), torch.tensor(LABELS), "eq5")
    assert got.item() == pytest.approx(want, rel=1e-6)


def test_losses_stay_finite_for_extreme_logits():
    logits = torch.tensor([[300.0, -300.0, -300.0]])
    assert torch.isfinite(discriminator_loss(logits, torch.tensor([1]), logits))
    assert torch.isfinite(generator_loss(logits, torch.tensor([1]), "eq5"))
    assert torch.isfinite(generator_loss(-logits, torch.tensor([0]), "eq5"))


def test_unknown_objective():
    with pytest.raises(ValueError):
        generator_loss(torch.zeros(1, 3), torch.tensor([0]), "eq7")
