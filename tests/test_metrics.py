"""Tests of mtgan.metrics: scores against hand-computed values, distances against closed forms."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mtgan.metrics import (
    Evaluator,
    class_fidelity,
    copy_ratio,
    extract_features,
    frechet_distance,
    inception_score,
    kernel_inception_distance,
    mean_confidence_interval,
    mode_score,
    mode_score_che,
    nearest_distance,
    pairwise_diversity,
    predict_probs,
    train_evaluator,
)

# Two images, two classes: p(y|x1) = (1, 0), p(y|x2) = (1/2, 1/2), so p(y) = (3/4, 1/4).
PROBS = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
# E_x KL(p(y|x) || p(y)) = (log(1 / 0.75) + 0.5 log(0.5 / 0.75) + 0.5 log(0.5 / 0.25)) / 2
MEAN_KL = (math.log(1 / 0.75) + 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)) / 2


def _random_probs(n, c, seed):
    g = torch.Generator().manual_seed(seed)
    return (3 * torch.randn(n, c, generator=g, dtype=torch.float64)).softmax(1)


# Inception Score and Mode Score


def test_inception_score_hand_computed():
    assert inception_score(PROBS) == pytest.approx(math.exp(MEAN_KL), rel=1e-12)
    assert inception_score(PROBS) == pytest.approx(1.2408064788027995, rel=1e-12)


def test_mode_score_hand_computed():
    real = torch.tensor([[0.5, 0.5], [0.0, 1.0], [1.0, 0.0]])  # p(y*) = (1/2, 1/2)
    # KL(p(y) || p(y*)) = 0.75 log(0.75 / 0.5) + 0.25 log(0.25 / 0.5)
    kl_marginals = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert mode_score(PROBS, real) == pytest.approx(math.exp(MEAN_KL - kl_marginals), rel=1e-12)
    assert mode_score(PROBS, real) == pytest.approx(1.0886621079036347, rel=1e-12)


def test_mode_score_is_inception_score_discounted_by_marginal_kl():
    probs, real = _random_probs(50, 6, seed=0), _random_probs(80, 6, seed=1)
    p, q = probs.mean(0), real.mean(0)
    kl = (p * (p / q).log()).sum().item()
    assert mode_score(probs, real) == pytest.approx(inception_score(probs) * math.exp(-kl))


def test_confident_even_predictions_score_n():
    probs = torch.eye(5).repeat(4, 1)  # 20 one-hot rows, 4 per class
    assert inception_score(probs) == pytest.approx(5.0, rel=1e-12)
    assert mode_score(probs, torch.eye(5)) == pytest.approx(5.0, rel=1e-12)


def test_single_class_generator_scores_about_one():
    probs = torch.tensor([0.97, 0.01, 0.01, 0.01]).repeat(30, 1)
    assert inception_score(probs) == pytest.approx(1.0, abs=1e-12)
    noisy = (torch.tensor([8.0, 0, 0, 0]) + 0.3 * torch.randn(30, 4)).softmax(1)
    assert 1.0 <= inception_score(noisy) < 1.01
    # The real images are spread evenly: MS = IS * exp(-KL((1, 0, 0, 0) || uniform)) = 1 / 4.
    one_class = torch.tensor([1.0, 0, 0, 0]).repeat(10, 1)
    assert mode_score(one_class, torch.eye(4)) == pytest.approx(0.25, rel=1e-12)


def test_mode_score_che_hand_computed():
    real = torch.tensor([[0.9, 0.1]])  # p(y*) = (0.9, 0.1)
    # E_x KL(p(y|x) || p(y*)) = (log(1 / 0.9) + 0.5 log(0.5 / 0.9) + 0.5 log(0.5 / 0.1)) / 2
    first = (math.log(1 / 0.9) + 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)) / 2
    # KL(p(y) || p(y*)) = 0.75 log(0.75 / 0.9) + 0.25 log(0.25 / 0.1)
    second = 0.75 * math.log(0.75 / 0.9) + 0.25 * math.log(0.25 / 0.1)
    assert mode_score_che(PROBS, real) == pytest.approx(math.exp(first - second), rel=1e-12)
    # ... which is the Inception Score, whatever p(y*) (see the docstring).
    assert mode_score_che(PROBS, real) == pytest.approx(inception_score(PROBS), rel=1e-12)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 20), c=st.integers(1, 8), seed=st.integers(0, 10_000))
def test_score_bounds(n, c, seed):
    probs, real = _random_probs(n, c, seed), _random_probs(7, c, seed + 1)
    score = inception_score(probs)
    assert 1.0 - 1e-9 <= score <= min(n, c) + 1e-9
    assert 0.0 < mode_score(probs, real) <= score * (1 + 1e-9)
    assert mode_score_che(probs, real) == pytest.approx(score, rel=1e-9)


@pytest.mark.parametrize(
    ("probs", "message"),
    [
        (torch.ones(3), "shape"),
        (torch.zeros(0, 3), "shape"),
        (torch.tensor([[0.5, 0.4]]), "sum to 1"),
        (torch.tensor([[2.0, -1.0]]), "negative"),
        (torch.tensor([[math.nan, 1.0]]), "nan"),
    ],
)
def test_invalid_probabilities_are_rejected(probs, message):
    with pytest.raises(ValueError, match=message):
        inception_score(probs)


def test_mode_score_needs_the_same_classes():
    with pytest.raises(ValueError, match="same classes"):
        mode_score(torch.eye(3), torch.eye(4))


def test_class_fidelity():
    probs = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4], [0.6, 0.3, 0.1]])
    assert class_fidelity(probs, torch.tensor([0, 1, 2, 1])) == 0.75
    with pytest.raises(ValueError, match="lie in"):
        class_fidelity(probs, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="shape"):
        class_fidelity(probs, torch.tensor([0, 1]))


# Confidence intervals


def test_mean_confidence_interval_hand_computed():
    mean, half = mean_confidence_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    # s = sqrt(10 / 4), t_{0.975, 4} = 2.776445: half = 2.776445 * s / sqrt(5)
    assert mean == 3.0
    assert half == pytest.approx(2.776445 * math.sqrt(2.5) / math.sqrt(5), rel=1e-6)
    _, half_99 = mean_confidence_interval(torch.tensor([1.0, 2.0, 3.0]), confidence=0.99)
    assert half_99 == pytest.approx(9.924843 * 1.0 / math.sqrt(3), rel=1e-6)


def test_mean_confidence_interval_edge_cases():
    mean, half = mean_confidence_interval([4.0])
    assert mean == 4.0 and math.isnan(half)
    assert mean_confidence_interval([2.0, 2.0, 2.0]) == (2.0, 0.0)
    with pytest.raises(ValueError):
        mean_confidence_interval([])
    with pytest.raises(ValueError):
        mean_confidence_interval([1.0, 2.0], confidence=1.0)


# FID and KID


def _with_exact_moments(mean, std, n=64, seed=0):
    """n points whose sample mean is `mean` and sample covariance diag(std^2), exactly."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, len(mean), generator=g, dtype=torch.float64)
    z = z - z.mean(0)
    z = z @ torch.linalg.inv(torch.linalg.cholesky(torch.cov(z.T))).T  # sample covariance I
    return torch.tensor(mean, dtype=torch.float64) + z * torch.tensor(std, dtype=torch.float64)


def test_fid_of_a_set_with_itself_is_zero():
    x = torch.randn(200, 16, generator=torch.Generator().manual_seed(0))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)


def test_fid_grows_with_a_shift():
    x = torch.randn(300, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    near, far = frechet_distance(x, x + 0.5), frechet_distance(x, x + 1.0)
    assert 0 < near < far
    assert near == pytest.approx(8 * 0.5**2) and far == pytest.approx(8 * 1.0**2)


def test_fid_against_closed_form_for_diagonal_gaussians():
    mean_a, std_a = [0.0, 1.0, -2.0], [1.0, 2.0, 0.5]
    mean_b, std_b = [1.0, 1.0, 0.0], [3.0, 0.5, 0.5]
    a, b = _with_exact_moments(mean_a, std_a, seed=1), _with_exact_moments(mean_b, std_b, seed=2)
    # Diagonal covariances commute: tr(S_a + S_b - 2 (S_a S_b)^(1/2)) = sum (s_a - s_b)^2.
    expected = sum((ma - mb) ** 2 for ma, mb in zip(mean_a, mean_b, strict=True)) + sum(
        (sa - sb) ** 2 for sa, sb in zip(std_a, std_b, strict=True)
    )  # 1 + 0 + 4 + 4 + 2.25 + 0 = 11.25
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    assert expected == 11.25


def test_fid_with_fewer_samples_than_dimensions():
    g = torch.Generator().manual_seed(0)
    value = frechet_distance(torch.randn(10, 64, generator=g), torch.randn(12, 64, generator=g))
    assert math.isfinite(value) and value > 0


@pytest.mark.parametrize(
    ("a", "b"),
    [(torch.zeros(1, 4), torch.zeros(5, 4)), (torch.zeros(5, 4), torch.zeros(5, 3))],
)
def test_fid_rejects_bad_shapes(a, b):
    with pytest.raises(ValueError):
        frechet_distance(a, b)


def test_kid_hand_computed():
    # m = 2, d = 1, k(x, y) = (x y + 1)^3.  xx: k(0, 1) = 1; yy: k(1, 2) = 27;
    # xy: k(0, 1) + k(0, 2) + k(1, 1) + k(1, 2) = 1 + 1 + 8 + 27 = 37.
    # MMD^2 = 2 * 1 / 2 + 2 * 27 / 2 - 2 * 37 / 4 = 9.5 on every subset (each holds both rows).
    x, y = torch.tensor([[0.0], [1.0]]), torch.tensor([[1.0], [2.0]])
    mean, std = kernel_inception_distance(x, y, subsets=3, subset_size=10)
    assert mean == pytest.approx(9.5) and std == pytest.approx(0.0)


def test_kid_near_zero_for_one_distribution_and_positive_when_shifted():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(400, 16, generator=g), torch.randn(400, 16, generator=g)
    same, _ = kernel_inception_distance(x, y, subsets=20, subset_size=200)
    shifted, _ = kernel_inception_distance(x, y + 1.0, subsets=20, subset_size=200)
    assert abs(same) < 0.02
    assert shifted > 0.5
    assert kernel_inception_distance(x, y, subsets=5) == kernel_inception_distance(x, y, subsets=5)


# Diversity and copying


def test_pairwise_diversity():
    assert pairwise_diversity(torch.ones(6, 3, 8, 8)) == 0.0
    triangle = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])  # sides 3, 4, 5
    assert pairwise_diversity(triangle) == pytest.approx(4.0)
    with pytest.raises(ValueError):
        pairwise_diversity(torch.ones(1, 3))


def test_nearest_distance():
    ref = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    x = torch.tensor([[1.0, 0.0], [10.0, 2.0], [0.0, 0.0]])
    assert nearest_distance(x, ref).tolist() == [1.0, 2.0, 0.0]


def test_copy_ratio_zero_for_copies_and_one_for_new_samples():
    g = torch.Generator().manual_seed(0)
    support = torch.randn(5, 1, 2, 2, generator=g)  # image-shaped rows are flattened
    heldout = torch.randn(3000, 1, 2, 2, generator=g)
    new = torch.randn(3000, 1, 2, 2, generator=g)
    assert copy_ratio(support.repeat(4, 1, 1, 1), support, heldout) == 0.0
    assert copy_ratio(new, support, heldout) == pytest.approx(1.0, abs=0.05)
    assert copy_ratio(support + 0.01, support, heldout) < 0.05


# The evaluator network


@pytest.mark.parametrize("size", [28, 32, 64, 84])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("stem_stride", [1, 2])
def test_evaluator_shapes(size, channels, stem_stride):
    model = Evaluator(n_classes=7, in_channels=channels, stem_stride=stem_stride).eval()
    x = torch.rand(2, channels, size, size) * 2 - 1
    assert model(x).shape == (2, 7)
    assert model.features(x).shape == (2, 128)


def test_evaluator_rejects_wrong_channels():
    with pytest.raises(ValueError, match="expected images"):
        Evaluator(3, in_channels=3)(torch.zeros(1, 1, 28, 28))


def test_predict_probs_rows_and_subsets():
    torch.manual_seed(0)
    model = Evaluator(n_classes=6)
    images = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    probs = predict_probs(model, images, batch_size=2)
    assert probs.shape == (5, 6)
    assert torch.allclose(probs.sum(1), torch.ones(5))
    assert model.training  # mode restored
    subset = predict_probs(model, images, class_subset=[4, 1, 2])
    logits = model.eval()(images.float() / 127.5 - 1)
    assert torch.allclose(subset, logits[:, [4, 1, 2]].softmax(1), atol=1e-6)
    assert torch.allclose(subset.sum(1), torch.ones(5))
    floats = predict_probs(model, images.float() / 127.5 - 1)
    assert torch.allclose(floats, probs, atol=1e-6)
    assert extract_features(model, images).shape == (5, 128)
    with pytest.raises(ValueError, match="distinct"):
        predict_probs(model, images, class_subset=[1, 1])
    with pytest.raises(ValueError, match="lie in"):
        predict_probs(model, images, class_subset=[6])


def _easy_shapes(per_class, size=28, seed=0):
    """4 classes of dark shapes on a light background at random places, with noise."""
    g = torch.Generator().manual_seed(seed)
    images = torch.full((4 * per_class, 1, size, size), 230.0)
    labels = torch.arange(4).repeat_interleave(per_class)
    for i, cls in enumerate(labels.tolist()):
        r, c = torch.randint(4, size - 16, (2,), generator=g).tolist()
        patch = images[i, 0, r : r + 12, c : c + 12]
        if cls == 0:
            patch[5:8, :] = 20  # horizontal bar
        elif cls == 1:
            patch[:, 5:8] = 20  # vertical bar
        elif cls == 2:
            patch[:] = 20  # filled square
        else:
            patch.fill_diagonal_(20)  # diagonal line
    images += 25 * torch.randn(images.shape, generator=g)
    return images.clamp(0, 255).to(torch.uint8), labels


def test_train_evaluator_learns_an_easy_problem():
    images, labels = _easy_shapes(per_class=30)
    seen = []
    model, info = train_evaluator(
        images, labels, 4, epochs=8, batch_size=16, lr=3e-3, seed=0, progress=seen.append
    )  # 48 steps; seeds 0-2 all reach 1.0
    assert info["heldout_accuracy"] >= 0.9
    assert [s["epoch"] for s in seen] == list(range(1, 9))
    assert not model.training
    train, heldout = set(info["train_indices"].tolist()), set(info["heldout_indices"].tolist())
    assert not train & heldout and train | heldout == set(range(120))
    assert (info["n_train"], info["n_heldout"]) == (96, 24)
    assert torch.bincount(labels[info["heldout_indices"]]).tolist() == [6, 6, 6, 6]


def test_train_evaluator_halves_large_images_in_the_stem():
    images = torch.randint(0, 256, (6, 3, 64, 64), dtype=torch.uint8)
    model, info = train_evaluator(images, torch.arange(6) % 2, 2, epochs=1, augment=False)
    assert model.stem_stride == 2 and info["n_heldout"] == 2
    small, _ = train_evaluator(images[:, :, :32, :32], torch.arange(6) % 2, 2, epochs=1)
    assert small.stem_stride == 1


def test_train_evaluator_validates_inputs():
    images = torch.zeros(8, 1, 28, 28, dtype=torch.uint8)
    with pytest.raises(ValueError, match="uint8"):
        train_evaluator(images.float(), torch.zeros(8, dtype=torch.long), 2, epochs=1)
    with pytest.raises(ValueError, match="lie in"):
        train_evaluator(images, torch.full((8,), 5), 2, epochs=1)
    with pytest.raises(ValueError, match="holdout_fraction"):
        train_evaluator(images, torch.zeros(8, dtype=torch.long), 2, holdout_fraction=1.0)
