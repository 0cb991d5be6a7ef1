import numpy as np
import pytest
import torch

from mtgan.data.base import ClassDataset
from mtgan.data.episodes import EpisodeSampler, split_classes
from mtgan.errors import DataError


def _dataset(n_classes=10, per_class=6):
    # every image of class c is filled with the value c, so tasks can be checked pixel-wise
    return ClassDataset(
        "toy", {f"c{c}": np.full((per_class, 4, 4), c, np.uint8) for c in range(n_classes)}
    )


def test_task_has_the_asked_shape_and_slot_labels():
    task = EpisodeSampler(_dataset(), n_way=4, k_shot=3, q_query=2, seed=0).sample()
    assert task.support.shape == (12, 1, 4, 4) and task.query.shape == (8, 1, 4, 4)
    assert task.support_labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert task.query_labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    for slot, name in enumerate(task.classes):
        value = int(name[1:])
        assert (task.support[task.support_labels == slot] == value).all()
        assert (task.query[task.query_labels == slot] == value).all()


def test_no_class_twice_and_support_and_query_disjoint():
    ds = ClassDataset(
        "toy", {f"c{c}": np.arange(6 * 16, dtype=np.uint8).reshape(6, 4, 4) + c for c in range(5)}
    )
    sampler = EpisodeSampler(ds, n_way=5, k_shot=3, q_query=3, seed=1)
    for _ in range(20):
        task = sampler.sample()
        assert len(set(task.classes)) == 5
        s = {tuple(x.flatten().tolist()) for x in task.support}
        q = {tuple(x.flatten().tolist()) for x in task.query}
        assert not s & q


def test_slots_are_assigned_in_a_fresh_random_order():
    sampler = EpisodeSampler(_dataset(n_classes=3), n_way=3, k_shot=1, q_query=1, seed=0)
    orders = {tuple(sampler.sample().classes) for _ in range(40)}
    assert len(orders) == 6  # all permutations of 3 classes appear


def test_same_seed_same_tasks():
    a = [EpisodeSampler(_dataset(), 3, 2, 1, seed=7).sample() for _ in range(1)]
    b = [EpisodeSampler(_dataset(), 3, 2, 1, seed=7).sample() for _ in range(1)]
    assert a[0].classes == b[0].classes and torch.equal(a[0].support, b[0].support)
    c = EpisodeSampler(_dataset(), 3, 2, 1, seed=8).sample()
    assert c.classes != a[0].classes or not torch.equal(c.support, a[0].support)


def test_splits_are_disjoint_and_cover_all_classes():
    classes = [f"k{i}" for i in range(50)]
    train, val, test = split_classes(classes, [0.7, 0.1, 0.2], seed=3)
    assert (len(train), len(val), len(test)) == (35, 5, 10)
    assert not set(train) & set(val) and not set(train) & set(test) and not set(val) & set(test)
    assert sorted(train + val + test) == sorted(classes)
    assert split_classes(classes, [0.7, 0.1, 0.2], seed=3)[2] == test


def test_too_many_ways_or_shots_is_a_data_error():
    with pytest.raises(DataError, match="only 10 classes"):
        EpisodeSampler(_dataset(), n_way=11, k_shot=1, q_query=1, seed=0)
    with pytest.raises(DataError, match="fewer than K \\+ Q = 7"):
        EpisodeSampler(_dataset(), n_way=2, k_shot=5, q_query=2, seed=0)
