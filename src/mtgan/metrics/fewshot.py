"""Few-shot classification, the measure of whether generated images help a classifier.

The classifier is the field's simplest strong one: a linear probe on a frozen embedding
(Chen et al. 2019, "A closer look at few-shot classification"; Tian et al. 2020, "Rethinking
few-shot image classification: a good embedding is all you need"). A network trained by
cross-entropy on the training classes (never the test classes) gives the features; for each
task a multinomial logistic regression on the L2-normalised features is trained on the K shots
plus whatever augments them, and scored on the task's query images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mtgan.metrics.evaluator import random_affine, to_model_input

PROBE_ITERATIONS = 100
"""L-BFGS iterations of the logistic regression (it converges well within them)."""


def classic_copies(
    support: Tensor, labels: Tensor, per_class: int, flip: bool, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """``per_class`` augmented copies of every class's support images, the standard
    augmentation of few-shot classifiers: each copy a random shift (up to 2 pixels), rotation
    (up to 10 degrees) and scaling (0.9 to 1.1) of a support image, taken in turn, and mirrored
    left-right with probability 1/2 when ``flip``.

    Args:
        support: uint8 (n, C, H, W).
        labels: (n,) class slots.
        per_class: copies per class.
        flip: mirror half the copies (natural images; not characters, whose mirror image is
            another character).
        generator: seeds the warps.

    Returns:
        uint8 copies, class by class in slot order, and their slots.

    Example:
        >>> images = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
        >>> copies, slots = classic_copies(images, torch.tensor([0, 0, 1, 1]), 3, False,
        ...                                torch.Generator().manual_seed(0))
        >>> tuple(copies.shape), slots.tolist()
        ((6, 1, 8, 8), [0, 0, 0, 1, 1, 1])
    """
    picked = []
    for slot in labels.unique().tolist():
        own = support[labels == slot]
        picked.append(own[torch.arange(per_class) % len(own)])
    originals = to_model_input(torch.cat(picked))
    warped = random_affine(originals, generator)
    if flip:
        mirror = torch.rand(len(warped), generator=generator) < 0.5
        warped[mirror] = warped[mirror].flip(-1)
    slots = labels.unique().repeat_interleave(per_class)
    return warped.add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8), slots


def first_per_class(features: Tensor, labels: Tensor, per_class: int) -> tuple[Tensor, Tensor]:
    """The first ``per_class`` rows of every class (rows kept in order).

    Example:
        >>> f, y = first_per_class(torch.arange(6.0)[:, None], torch.tensor([0, 1, 0, 1, 0, 1]), 2)
        >>> f.flatten().tolist(), y.tolist()
        ([0.0, 2.0, 1.0, 3.0], [0, 0, 1, 1])
    """
    keep = torch.cat([(labels == c).nonzero().flatten()[:per_class] for c in labels.unique()])
    return features[keep], labels[keep]


def probe_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    query_features: Tensor,
    query_labels: Tensor,
    n_classes: int,
) -> float:
    """Query accuracy of a logistic regression trained on ``train_features``.

    The features are L2-normalised; the regression minimises the mean cross-entropy plus
    ``|W|^2 / (2 n)`` over its weights W (n training rows; scikit-learn's default C = 1) with
    full-batch L-BFGS, so the result is deterministic.

    Example:
        >>> x = torch.tensor([[1.0, 0.1], [0.9, -0.1], [-1.0, 0.2], [-0.8, 0.0]])
        >>> y = torch.tensor([0, 0, 1, 1])
        >>> probe_accuracy(x, y, torch.tensor([[2.0, 0.0], [-3.0, 1.0]]), torch.tensor([0, 1]), 2)
        1.0
    """
    x, q = F.normalize(train_features.float(), dim=1), F.normalize(query_features.float(), dim=1)
    weight = torch.zeros(n_classes, x.shape[1], requires_grad=True)
    bias = torch.zeros(n_classes, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], lr=1, max_iter=PROBE_ITERATIONS, line_search_fn="strong_wolfe"
    )

    def objective() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight.T + bias, train_labels)
        loss = loss + weight.pow(2).sum() / (2 * len(x))
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(objective)
    with torch.no_grad():
        predicted = (q @ weight.T + bias).argmax(1)
    return (predicted == query_labels).double().mean().item()
