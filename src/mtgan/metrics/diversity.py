"""Diversity within a set and distance to the support set: does the generator copy its K shots?

Mode Score rewards a generator that reproduces its K support images. These measures expose it.
They take images (n, C, H, W) or features (n, d); every row is flattened to a vector and distances
are Euclidean, computed in float64.
"""

from __future__ import annotations

import torch
from torch import Tensor

_CHUNK_ELEMENTS = 1 << 24  # distance-matrix entries computed at once by nearest_distance


def pairwise_diversity(feats: Tensor) -> float:
    """Mean L2 distance between two different rows: sum_{i != j} |x_i - x_j| / (n (n - 1)).

    Args:
        feats: (n, ...) images or features, n >= 2.

    Example:
        >>> pairwise_diversity(torch.tensor([[0.0, 0.0], [3.0, 4.0]]))
        5.0
    """
    x = _flat(feats, "feats", min_rows=2)
    n = x.shape[0]
    distances = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")
    return (distances.sum() / (n * (n - 1))).item()


def nearest_distance(x: Tensor, ref: Tensor) -> Tensor:
    """Each row's L2 distance to its nearest row in ref.

    Args:
        x: (n, ...) images or features.
        ref: (m, ...) with the same trailing shape, m >= 1.

    Returns:
        (n,) float64 distances.

    Example:
        >>> nearest_distance(torch.tensor([[0.0], [5.0]]), torch.tensor([[1.0], [4.5]]))
        tensor([1.0000, 0.5000], dtype=torch.float64)
    """
    a, r = _flat(x, "x", min_rows=1), _flat(ref, "ref", min_rows=1)
    if a.shape[1] != r.shape[1]:
        raise ValueError(f"x and ref differ in size per row: {a.shape[1]} and {r.shape[1]}")
    rows = max(1, _CHUNK_ELEMENTS // r.shape[0])
    return torch.cat(
        [
            torch.cdist(chunk, r, compute_mode="donot_use_mm_for_euclid_dist").amin(1)
            for chunk in a.split(rows)
        ]
    )


def copy_ratio(generated: Tensor, support: Tensor, heldout_real: Tensor) -> float:
    """How close generated images sit to the support set, relative to unseen real images.

    copy_ratio = mean_g min_s |g - s| / mean_h min_s |h - s|, g generated images of a class, s its
    K support images, h real images of the same class that are not in the support set. About 1
    when generated images are as far from the shots as new real images are; far below 1 when the
    generator copies its K shots.

    Args:
        generated: (n, ...) generated images or their features.
        support: (K, ...) the support images the generator was adapted on.
        heldout_real: (m, ...) other real images of the same class(es).

    Example:
        >>> support = torch.tensor([[0.0], [10.0]])
        >>> copy_ratio(support.clone(), support, torch.tensor([[1.0], [12.0]]))
        0.0
    """
    baseline = nearest_distance(heldout_real, support).mean().item()
    if baseline == 0.0:
        raise ValueError("heldout_real coincides with the support set: the ratio is undefined")
    return nearest_distance(generated, support).mean().item() / baseline


def _flat(t: Tensor, name: str, min_rows: int) -> Tensor:
    x = torch.as_tensor(t).detach().to("cpu", torch.float64)
    if x.ndim < 2 or x.shape[0] < min_rows:
        raise ValueError(
            f"{name} must have shape (n, ...) with n >= {min_rows}, got {tuple(x.shape)}"
        )
    return x.flatten(1)
