"""Distances between two sets of features: Frechet distance (FID) and kernel distance (KID).

Both take (n, d) feature tensors, e.g. `Evaluator.features` of generated and real images, and
compute in float64. The smaller, the closer the two sets.
"""

from __future__ import annotations

import torch
from torch import Tensor


def frechet_distance(feats_a: Tensor, feats_b: Tensor) -> float:
    """FID (Heusel et al. 2017) between Gaussians fitted to two feature sets.

    FID = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2)), with unbiased covariances.
    tr((S_a S_b)^(1/2)) is computed as tr((S_a^(1/2) S_b S_a^(1/2))^(1/2)), the square root of a
    symmetric positive semi-definite matrix with the same eigenvalues: eigen-decompositions only,
    no complex intermediate results. Rounding below zero is clipped to 0.

    Args:
        feats_a: (n_a, d) features, n_a >= 2.
        feats_b: (n_b, d) features, n_b >= 2.

    Example:
        >>> x = torch.randn(100, 4, generator=torch.Generator().manual_seed(0))
        >>> frechet_distance(x, x) < 1e-9, frechet_distance(x, x + 1.0) > 3.9
        (True, True)
    """
    a, b = _check_features(feats_a, feats_b, min_rows=2)
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    root_a = _psd_sqrt(cov_a)
    middle = root_a @ cov_b @ root_a
    trace_root = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    mean_term = (a.mean(0) - b.mean(0)).square().sum()
    fid = mean_term + cov_a.trace() + cov_b.trace() - 2 * trace_root
    return max(fid.item(), 0.0)


def kernel_inception_distance(
    feats_a: Tensor,
    feats_b: Tensor,
    subsets: int = 100,
    subset_size: int = 1000,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """KID (Binkowski et al. 2018): unbiased MMD^2 with kernel k(x, y) = (x . y / d + 1)^3.

    On each of `subsets` random subsets of m = min(subset_size, n_a, n_b) rows drawn without
    replacement from each set:
    MMD^2 = sum_{i != j} k(a_i, a_j) / (m (m - 1)) + sum_{i != j} k(b_i, b_j) / (m (m - 1))
            - 2 sum_{i, j} k(a_i, b_j) / m^2.
    Unbiased, so it can be slightly negative for sets from one distribution.

    Args:
        feats_a: (n_a, d) features, n_a >= 2.
        feats_b: (n_b, d) features, n_b >= 2.
        subsets: number of random subsets.
        subset_size: rows per subset, capped at min(n_a, n_b).
        generator: random source of the subsets; None means a fixed seed (0), so that repeated
            calls on the same features agree.

    Returns:
        The mean and the standard deviation (over subsets, denominator `subsets`) of MMD^2.

    Example:
        >>> x = torch.randn(200, 8, generator=torch.Generator().manual_seed(0))
        >>> mean, std = kernel_inception_distance(x, x + 1.0, subsets=10)
        >>> mean > 0.1
        True
    """
    a, b = _check_features(feats_a, feats_b, min_rows=2)
    if subsets < 1 or subset_size < 2:
        raise ValueError(f"need subsets >= 1 and subset_size >= 2, got {subsets}, {subset_size}")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    m = min(subset_size, a.shape[0], b.shape[0])
    values = torch.stack(
        [
            _mmd2_unbiased(
                a[torch.randperm(a.shape[0], generator=generator)[:m]],
                b[torch.randperm(b.shape[0], generator=generator)[:m]],
            )
            for _ in range(subsets)
        ]
    )
    return values.mean().item(), values.std(correction=0).item()


def _mmd2_unbiased(x: Tensor, y: Tensor) -> Tensor:
    m, d = x.shape
    k_xx, k_yy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3
    k_xy = (x @ y.T / d + 1) ** 3
    off_diagonal = (k_xx.sum() - k_xx.trace() + k_yy.sum() - k_yy.trace()) / (m * (m - 1))
    return off_diagonal - 2 * k_xy.mean()


def _psd_sqrt(matrix: Tensor) -> Tensor:
    """Square root of a symmetric positive semi-definite matrix; negative rounding clipped."""
    eigenvalues, eigenvectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return eigenvectors * eigenvalues.clamp(min=0).sqrt() @ eigenvectors.T


def _check_features(feats_a: Tensor, feats_b: Tensor, min_rows: int) -> tuple[Tensor, Tensor]:
    """Validate two (n, d) feature sets with the same d; return them in float64 on the CPU."""
    out = []
    for name, feats in (("feats_a", feats_a), ("feats_b", feats_b)):
        f = torch.as_tensor(feats).detach().to("cpu", torch.float64)
        if f.ndim != 2 or f.shape[0] < min_rows or f.shape[1] == 0:
            raise ValueError(
                f"{name} must have shape (n, d) with n >= {min_rows}, d >= 1, got {tuple(f.shape)}"
            )
        if not torch.isfinite(f).all():
            raise ValueError(f"{name} contains nan or inf")
        out.append(f)
    if out[0].shape[1] != out[1].shape[1]:
        raise ValueError(
            f"feature sets differ in dimension: {out[0].shape[1]} and {out[1].shape[1]}"
        )
    return out[0], out[1]
