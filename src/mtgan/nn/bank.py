"""The pretrained classes' heads, kept to start new classes from (nearest-class initialisation).

When NM and CF are replaced for new classes, the pretrained class columns of NM and class rows
of CF are kept here. A new class can then start from the training classes that D recognises in
its support images: with p(c | x) D's softmax over the training classes for a support image x,
averaged over the class's K images into P_y(c), the new class y starts with NM column
sum_c P_y(c) w_c and CF row sum_c P_y(c) v_c (bias likewise), instead of the mean of all
classes' (issue #13's new-class path; a matching-networks-style weighting of class prototypes).
"""

from __future__ import annotations

import torch
from torch import nn

from mtgan.errors import MtganError


class ClassBank(nn.Module):
    """NM's class columns (``nm``: out x C) and CF's class rows with their biases (``cf``:
    C x (features + 1)) of C pretrained classes; C = 0 until :meth:`keep` fills it.
    ``closed``: a model loaded from a checkpoint saved before banks existed keeps none (its
    heads may be task heads rather than the pretrained ones)."""

    closed: bool = False

    def __init__(self, nm_out: int, features: int, classes: int = 0):
        super().__init__()
        self.nm = nn.Parameter(torch.zeros(nm_out, classes), requires_grad=False)
        self.cf = nn.Parameter(torch.zeros(classes, features + 1), requires_grad=False)

    def __len__(self) -> int:
        return self.nm.shape[1]

    @torch.no_grad()
    def keep(self, nm: nn.Linear, cf: nn.Linear, z_dim: int) -> None:
        """Keep the class columns of ``nm`` (after the ``z_dim`` noise columns) and the class
        rows of ``cf`` (all but the last, fake, row)."""
        self.nm = nn.Parameter(nm.weight[:, z_dim:].detach().clone(), requires_grad=False)
        rows = torch.cat([cf.weight[:-1], cf.bias[:-1, None]], 1)
        self.cf = nn.Parameter(rows.detach().clone(), requires_grad=False)

    @torch.no_grad()
    def class_weights(
        self,
        features: torch.Tensor,
        labels: torch.Tensor,
        n_classes: int,
        exclude: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """P (..., n_classes, C): row y is D's softmax over the kept classes, averaged over the
        images of slot y. ``features`` (..., n, F) and ``labels`` (..., n) may carry a leading
        task dimension; the kept classes in ``exclude`` (..., k) get no weight."""
        logits = features @ self.cf[:, :-1].T + self.cf[:, -1]
        if exclude is not None:
            where = exclude.unsqueeze(-2).expand(*logits.shape[:-1], exclude.shape[-1])
            logits = logits.scatter(-1, where, float("-inf"))
            if logits.isinf().all():  # every kept class excluded (as many as the ways)
                logits = torch.zeros_like(logits)  # then all weigh alike: their mean
        onehot = nn.functional.one_hot(labels, n_classes).to(logits.dtype)
        counts = onehot.sum(-2).clamp_min(1).unsqueeze(-1)
        return (onehot.transpose(-1, -2) @ logits.softmax(-1)) / counts

    @torch.no_grad()
    def start_near(
        self,
        heads: dict[str, torch.Tensor],
        features: torch.Tensor,
        labels: torch.Tensor,
        z_dim: int,
        exclude: torch.Tensor | None = None,
    ) -> None:
        """Set the class columns of NM and class rows of CF in ``heads`` (tensors by parameter
        name, optionally stacked by task) in place to the kept classes' weighted by
        :meth:`class_weights` of the support images' FE ``features``. Refused when no
        pretrained classes were kept (the starts would be zeros)."""
        if not len(self):
            raise MtganError(
                "adapt.class_init=nearest needs the pretrained class heads, and this model kept "
                "none (it was saved by an older mtgan, or its heads were never replaced); use "
                "adapt.class_init=heads"
            )
        nm = heads["generator.nm.weight"]
        cf_w, cf_b = heads["discriminator.cf.weight"], heads["discriminator.cf.bias"]
        weights = self.class_weights(features, labels, cf_w.shape[-2] - 1, exclude)
        nm[..., z_dim:] = self.nm @ weights.transpose(-1, -2)
        rows = weights @ self.cf
        cf_w[..., :-1, :] = rows[..., :-1]
        cf_b[..., :-1] = rows[..., -1]
