"""Learned inner learning rates for NM and CF (Meta-SGD, Li et al. 2017).

Meta-SGD replaces the inner loop's scalar step size alpha by a vector of the parameters' shape,
learned in the outer loop: theta' = theta - alpha * grad L. Here alpha = lr * exp(r), with r the
log-multipliers held by :class:`HeadRates`. The class columns of NM and the class rows of CF
share one multiplier per element across the class slots (a slot's class is arbitrary), so
the same rates serve N-way heads of any N.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mtgan.choices import NmPart


class HeadRates(nn.Module):
    """Log-multipliers of the learning rates of NM's and CF's weights; zero (the start, and
    what a model without meta-learned rates keeps) leaves every learning rate as it is.

    Example:
        >>> rates = HeadRates(z_dim=2, nm_out=3, features=4)
        >>> [tuple(v.shape) for v in rates.expanded(5).values()]  # NM's weight, bias; CF's
        [(3, 7), (3,), (6, 4), (6,)]
    """

    def __init__(self, z_dim: int, nm_out: int, features: int):
        super().__init__()
        self.nm_noise = nn.Parameter(torch.zeros(nm_out, z_dim), requires_grad=False)
        self.nm_class = nn.Parameter(torch.zeros(nm_out, 1), requires_grad=False)
        self.nm_bias = nn.Parameter(torch.zeros(nm_out), requires_grad=False)
        self.cf_class = nn.Parameter(torch.zeros(1, features), requires_grad=False)
        self.cf_fake = nn.Parameter(torch.zeros(1, features), requires_grad=False)
        self.cf_bias = nn.Parameter(torch.zeros(2), requires_grad=False)  # class rows', fake's

    def expanded(self, n_classes: int, own: dict[str, torch.Tensor] | None = None):
        """The log-multipliers shaped like the parameters of ``n_classes``-way NM and CF, by
        parameter name; ``own`` replaces this module's tensors (to differentiate through)."""
        r = dict(self.named_parameters()) if own is None else own
        n = n_classes
        return {
            "generator.nm.weight": torch.cat([r["nm_noise"], r["nm_class"].expand(-1, n)], 1),
            "generator.nm.bias": r["nm_bias"],
            "discriminator.cf.weight": torch.cat([r["cf_class"].expand(n, -1), r["cf_fake"]]),
            "discriminator.cf.bias": torch.cat([r["cf_bias"][:1].expand(n), r["cf_bias"][1:]]),
        }

    def multipliers(self, n_classes: int, nm: NmPart = "all") -> dict[str, torch.Tensor]:
        """exp(r) shaped like the heads: what multiplies each learning rate; parameters whose
        multipliers are all 1 (nothing learned) are left out, so their steps cost nothing.
        ``nm="classes"`` makes the multipliers of NM's noise columns and bias 0 (``adapt.nm``).

        Example:
            >>> m = HeadRates(z_dim=2, nm_out=3, features=4).multipliers(5, nm="classes")
            >>> m["generator.nm.weight"][0].tolist(), m["generator.nm.bias"].tolist()
            ([0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0])
        """
        logs = self.expanded(n_classes)
        if nm == "classes":
            weight, z_dim = logs["generator.nm.weight"], self.nm_noise.shape[1]
            noise_columns = torch.arange(z_dim, device=weight.device)
            logs["generator.nm.weight"] = weight.index_fill(1, noise_columns, -math.inf)
            logs["generator.nm.bias"] = torch.full_like(logs["generator.nm.bias"], -math.inf)
        return {k: v.detach().exp() for k, v in logs.items() if v.any()}

    def summary(self) -> dict[str, dict[str, float]]:
        """The learned multipliers exp(r) of each part: geometric mean, least and most."""
        return {
            name: {k: getattr(r, k)().exp().item() for k in ("mean", "min", "max")}
            for name, r in self.named_parameters()
        }

    def gradient(self, head_grads: dict[str, torch.Tensor], n_classes: int):
        """The gradient with respect to this module's tensors (in ``named_parameters`` order)
        of a loss whose gradient with respect to the expanded log-multipliers is
        ``head_grads`` (a leading task dimension is summed over)."""
        leaves = {k: v.detach().requires_grad_() for k, v in self.named_parameters()}
        expanded = self.expanded(n_classes, leaves)
        outputs = [expanded[k] for k in head_grads]
        grads = [g.reshape(-1, *expanded[k].shape).sum(0) for k, g in head_grads.items()]
        return torch.autograd.grad(outputs, list(leaves.values()), grads)
