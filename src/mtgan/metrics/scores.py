"""Classifier-based scores: Inception Score (eq. 2), Mode Score (eq. 3), class fidelity.

Every score takes class probabilities p_M(y|x) from an external classifier M (see
`mtgan.metrics.evaluator`), one row per image, and is computed in float64. Also here: a Student's t
confidence interval for averaging any score over test tasks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import scipy.stats
import torch
from torch import Tensor

_ROW_SUM_TOLERANCE = 1e-3


def inception_score(probs: Tensor) -> float:
    """Eq. 2: IS = exp(E_x KL(p(y|x) || p(y))), p(y) the mean of the rows of probs.

    Ranges from 1 (every image gets the same prediction) to C (confident predictions spread
    evenly over the C classes).

    Args:
        probs: (n, C) class probabilities p(y|x) of n generated images; rows sum to 1.

    Example:
        >>> round(inception_score(torch.eye(3)), 6)
        3.0
    """
    p = _check_probs(probs, "probs")
    return math.exp(_mean_kl(p, p.mean(0)))


def mode_score(probs: Tensor, real_probs: Tensor) -> float:
    """Eq. 3 as the paper writes it: exp(E_x KL(p(y|x) || p(y)) - KL(p(y) || p(y*))).

    p(y) is the marginal over generated images, p(y*) the marginal over real images. It equals
    IS * exp(-KL(p(y) || p(y*))): the Inception Score discounted by how far the generated class
    marginal is from the real one. Upper bound C.

    Args:
        probs: (n, C) class probabilities of n generated images.
        real_probs: (m, C) class probabilities of m real images of the same classes.

    Example:
        >>> round(mode_score(torch.eye(2), torch.full((4, 2), 0.5)), 6)
        2.0
    """
    p, p_real = _check_pair(probs, real_probs)
    marginal = p.mean(0)
    return math.exp(_mean_kl(p, marginal) - _kl(marginal, p_real.mean(0)))


def mode_score_che(probs: Tensor, real_probs: Tensor) -> float:
    """Che et al. 2017: exp(E_x KL(p(y|x) || p(y*)) - KL(p(y) || p(y*))).

    p(y) is the marginal over generated images, p(y*) the marginal over real images. Note the
    identity E_x KL(p(y|x) || q) = E_x KL(p(y|x) || p(y)) + KL(p(y) || q), valid for any q when
    p(y) is the mean of the p(y|x): with the empirical marginal this form always equals the
    Inception Score, whatever the real images. It is computed literally here; it is nan when p(y*)
    is zero on a class that p(y) uses (both terms infinite). Prefer `mode_score` (eq. 3).

    Args:
        probs: (n, C) class probabilities of n generated images.
        real_probs: (m, C) class probabilities of m real images.

    Example:
        >>> round(mode_score_che(torch.eye(2), torch.tensor([[0.9, 0.1]])), 6)
        2.0
    """
    p, p_real = _check_pair(probs, real_probs)
    real_marginal = p_real.mean(0)
    return math.exp(_mean_kl(p, real_marginal) - _kl(p.mean(0), real_marginal))


def class_fidelity(probs: Tensor, labels: Tensor) -> float:
    """Share of images whose most probable class is the class they were generated for.

    Args:
        probs: (n, C) class probabilities (or logits: only the argmax matters).
        labels: (n,) intended class of each image, integers in [0, C).

    Example:
        >>> class_fidelity(torch.eye(3), torch.tensor([0, 1, 0]))
        0.6666666666666666
    """
    if probs.ndim != 2 or probs.shape[0] == 0:
        raise ValueError(f"probs must have shape (n, C) with n >= 1, got {tuple(probs.shape)}")
    labels = torch.as_tensor(labels)
    if labels.shape != probs.shape[:1] or labels.is_floating_point():
        raise ValueError(
            f"labels must be integers of shape ({probs.shape[0]},), got {labels.dtype} "
            f"of shape {tuple(labels.shape)}"
        )
    if labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise ValueError(f"labels must lie in [0, {probs.shape[1]}), got {labels.tolist()}")
    return (probs.argmax(1).cpu() == labels.cpu()).double().mean().item()


def mean_confidence_interval(
    values: Sequence[float] | Tensor, confidence: float = 0.95
) -> tuple[float, float]:
    """Mean and half width of its Student's t confidence interval.

    half_width = t_{(1 + confidence) / 2, n - 1} * s / sqrt(n), s the sample standard deviation
    (n - 1 in the denominator). With a single value the interval is undefined: half width nan.

    Args:
        values: n >= 1 numbers, e.g. one score per test task.
        confidence: coverage of the interval, in (0, 1).

    Example:
        >>> mean, half = mean_confidence_interval([1.0, 2.0, 3.0])
        >>> mean, round(half, 4)  # t_{0.975, 2} = 4.3027, s = 1
        (2.0, 2.4841)
    """
    x = torch.as_tensor(values, dtype=torch.float64).flatten()
    if x.numel() == 0:
        raise ValueError("mean_confidence_interval needs at least one value")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    n = x.numel()
    if n == 1:
        return x.item(), math.nan
    t = float(scipy.stats.t.ppf((1.0 + confidence) / 2.0, n - 1))
    return x.mean().item(), t * x.std().item() / math.sqrt(n)


def _kl(p: Tensor, q: Tensor) -> float:
    """KL(p || q) = sum_y p(y) log(p(y) / q(y)), with 0 log 0 = 0 (inf where q = 0 < p)."""
    return (torch.special.xlogy(p, p) - torch.special.xlogy(p, q)).sum().item()


def _mean_kl(p: Tensor, q: Tensor) -> float:
    """E_x KL(p(y|x) || q) over the rows of p."""
    return (torch.special.xlogy(p, p) - torch.special.xlogy(p, q)).sum(1).mean().item()


def _check_pair(probs: Tensor, real_probs: Tensor) -> tuple[Tensor, Tensor]:
    p, p_real = _check_probs(probs, "probs"), _check_probs(real_probs, "real_probs")
    if p.shape[1] != p_real.shape[1]:
        raise ValueError(
            f"probs and real_probs must cover the same classes, got {p.shape[1]} and "
            f"{p_real.shape[1]} columns"
        )
    return p, p_real


def _check_probs(probs: Tensor, name: str) -> Tensor:
    """Validate an (n, C) table of probabilities; return it in float64 with exact row sums."""
    p = torch.as_tensor(probs).detach().to("cpu", torch.float64)
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] == 0:
        raise ValueError(f"{name} must have shape (n, C) with n, C >= 1, got {tuple(p.shape)}")
    if not torch.isfinite(p).all():
        raise ValueError(f"{name} contains nan or inf")
    if (p < 0).any():
        raise ValueError(f"{name} contains negative values: pass probabilities, not logits")
    sums = p.sum(1)
    worst = (sums - 1.0).abs().max().item()
    if worst > _ROW_SUM_TOLERANCE:
        raise ValueError(
            f"rows of {name} must sum to 1 (softmax probabilities), worst row sums to "
            f"{sums[(sums - 1.0).abs().argmax()].item():.6f}"
        )
    return p / sums.unsqueeze(1)
