"""N-way K-shot tasks: support and query sets of N classes drawn from one split.

Every time a task is sampled its N classes are put into one-hot slots 0..N-1 in a fresh random
order, so that NM and CF learn nothing about slot order.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mtgan.data.base import ClassDataset
from mtgan.errors import DataError


@dataclass
class Task:
    """One N-way task. Images are uint8 (n, C, H, W); labels are slots 0..N-1.

    ``classes[s]`` is the class name in slot ``s``. Support and query images are ordered by
    slot, K (or Q) images per slot.
    """

    classes: list[str]
    support: torch.Tensor
    support_labels: torch.Tensor
    query: torch.Tensor
    query_labels: torch.Tensor

    @property
    def n_way(self) -> int:
        return len(self.classes)


def split_classes(
    classes: Sequence[str], fractions: Sequence[float], seed: int = 0
) -> list[list[str]]:
    """Disjoint class lists (for example train, validation, test) from one class list.

    The classes are shuffled with ``seed`` and cut by ``fractions`` (which must sum to 1);
    every part gets at least one class.

    Example:
        >>> [len(p) for p in split_classes([str(i) for i in range(10)], [0.6, 0.2, 0.2])]
        [6, 2, 2]
    """
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise DataError(f"split fractions {list(fractions)} must sum to 1")
    order = sorted(classes)
    random.Random(seed).shuffle(order)
    bounds = [round(sum(fractions[:i]) * len(order)) for i in range(len(fractions) + 1)]
    parts = [order[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    if any(not p for p in parts):
        raise DataError(
            f"{len(order)} classes are too few to split by {list(fractions)}: a part is empty"
        )
    return parts


class EpisodeSampler:
    """Seeded N-way K-shot tasks with Q query images per class from ``dataset``'s classes.

    Args:
        dataset: the split's classes (use :meth:`ClassDataset.subset` to restrict).
        n_way, k_shot, q_query: classes per task, support and query images per class.
        seed: the same seed gives the same sequence of tasks.

    Example:
        >>> import numpy as np
        >>> ds = ClassDataset("toy", {str(c): np.full((6, 4, 4), c, np.uint8) for c in range(5)})
        >>> task = EpisodeSampler(ds, n_way=3, k_shot=2, q_query=1, seed=0).sample()
        >>> tuple(task.support.shape), tuple(task.query.shape)
        ((6, 1, 4, 4), (3, 1, 4, 4))
    """

    def __init__(self, dataset: ClassDataset, n_way: int, k_shot: int, q_query: int, seed: int):
        check_task_fits(dataset, n_way, k_shot, q_query)
        self.dataset, self.n_way, self.k_shot, self.q_query = dataset, n_way, k_shot, q_query
        self.rng = random.Random(seed)

    def sample(self) -> Task:
        classes = self.rng.sample(self.dataset.classes, self.n_way)
        support, query = [], []
        for cls in classes:
            images = self.dataset.images_of(cls)
            picks = self.rng.sample(range(len(images)), self.k_shot + self.q_query)
            support.append(images[picks[: self.k_shot]])
            query.append(images[picks[self.k_shot :]])
        slots = torch.arange(self.n_way)
        return Task(
            classes=classes,
            support=torch.cat(support),
            support_labels=slots.repeat_interleave(self.k_shot),
            query=torch.cat(query),
            query_labels=slots.repeat_interleave(self.q_query),
        )


def seeded_tasks(
    dataset: ClassDataset, n_way: int, k_shot: int, q_query: int, seed: int, count: int
) -> list[Task]:
    """The first ``count`` tasks of :class:`EpisodeSampler` with ``seed``: the fixed tasks that
    an evaluation, a validation or a benchmark scores every method on."""
    sampler = EpisodeSampler(dataset, n_way, k_shot, q_query, seed)
    return [sampler.sample() for _ in range(count)]


def check_task_fits(dataset: ClassDataset, n_way: int, k_shot: int, q_query: int) -> None:
    """Raise a one-line DataError when the dataset cannot supply the asked tasks."""
    if n_way < 1 or k_shot < 1 or q_query < 0:
        raise DataError(
            f"need n_way >= 1, k_shot >= 1, q_query >= 0; got {n_way}, {k_shot}, {q_query}"
        )
    if n_way > len(dataset.classes):
        raise DataError(
            f"{dataset.name}: N = {n_way} ways but the split has only "
            f"{len(dataset.classes)} classes"
        )
    need = k_shot + q_query
    for cls in dataset.classes:
        have = len(dataset.images_of(cls))
        if have < need:
            raise DataError(
                f"{dataset.name}: class {cls!r} has {have} images, fewer than K + Q = {need}"
            )
