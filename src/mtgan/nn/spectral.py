"""Spectral normalisation of a weight (Miyato et al. 2018), for D's convolutions.

A layer computes with ``W / sigma(W)``, where ``sigma(W)`` is W's largest singular value
(eq. 8 of SN-GAN), so that no layer of FE stretches its input by more than 1 and D stays close to
1-Lipschitz. ``sigma`` is estimated as ``u^T W v`` (eq. 9) from a left singular vector ``u``
kept between calls; each training call first refines ``u`` by one step of power iteration
(Algorithm 1), and the gradient flows through ``W`` only, not through ``u`` and ``v``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SpectralNorm(nn.Module):
    """``W / sigma(W)`` for a weight whose first dimension holds ``rows`` output channels.

    Example:
        >>> norm = SpectralNorm(4)
        >>> weight = torch.randn(4, 3, 2, 2)
        >>> for _ in range(50):
        ...     normalised = norm(weight, refine=True)
        >>> bool(abs(torch.linalg.matrix_norm(normalised.flatten(1), 2) - 1) < 1e-4)
        True
    """

    def __init__(self, rows: int):
        super().__init__()
        self.register_buffer("u", torch.full((rows,), rows**-0.5))

    def forward(self, weight: torch.Tensor, refine: bool) -> torch.Tensor:
        matrix = weight.flatten(1)
        if refine:
            with torch.no_grad():
                v = F.normalize(matrix.t() @ self.u.to(matrix), dim=0)
                self.u.copy_(F.normalize(matrix @ v, dim=0))
        u = self.u.to(matrix, copy=True)  # a later call refines self.u in place
        v = F.normalize(matrix.t() @ u, dim=0).detach()
        return weight / (u @ matrix @ v)
