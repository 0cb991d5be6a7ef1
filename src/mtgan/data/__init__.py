"""Datasets: a registry of loaders that each return a :class:`ClassDataset`, and episodes.

``load(name, root, split)`` reads one of the registered datasets in its published format;
``load_splits(cfg)`` gives the disjoint train / validation / test classes that a config asks for:
the dataset's own splits (Omniglot's background and evaluation sets, miniImageNet's and FC100's
train / validation / test classes), a class hold-out (``data.test_classes``, for example MNIST
digits), or a seeded split of the classes by ``data.split_fractions``.
"""

from __future__ import annotations

import importlib
import os
import random
from dataclasses import dataclass

from mtgan.config import DataConfig
from mtgan.data.base import ClassDataset
from mtgan.data.episodes import EpisodeSampler, Task, seeded_tasks, split_classes
from mtgan.errors import DataError

__all__ = [
    "DATASETS",
    "ClassDataset",
    "EpisodeSampler",
    "Task",
    "load",
    "load_splits",
    "seeded_tasks",
    "split_classes",
]


@dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset: where its loader lives and which splits it publishes.

    ``splits`` maps our split names (``train``, ``validation``, ``test``) to the dataset's own;
    a dataset without few-shot splits of its own has ``splits`` empty and is split by classes.
    """

    loader: str
    description: str
    files: tuple[str, ...] = ()
    splits: tuple[tuple[str, str], ...] = ()
    needs_root: bool = True
    takes: tuple[str, ...] = ()  # settings the loader itself applies (image_size, ...)
    parts: tuple[str, ...] = ()
    """The dataset's own parts that ``split`` (``--split``) picks from, the default first."""

    def split_names(self) -> dict[str, str]:
        return dict(self.splits)

    def split_text(self) -> str:
        """How the dataset's classes become train, validation and test classes, in words."""
        if self.splits:
            return "splits " + ", ".join(f"{ours}={theirs}" for ours, theirs in self.splits)
        files = (
            f"files {'/'.join(self.parts)} (--split, default {self.parts[0]}); "
            if self.parts
            else ""
        )
        return files + "classes split by data.split_fractions or data.test_classes"


_OWN = (("train", "train"), ("validation", "validation"), ("test", "test"))
DATASETS: dict[str, DatasetInfo] = {
    "glyphs": DatasetInfo(
        "mtgan.data.glyphs:load_glyphs",
        "characters rendered from the installed fonts (embedded, no download)",
        needs_root=False,
        takes=("image_size", "per_class"),
    ),
    "omniglot": DatasetInfo(
        "mtgan.data.omniglot:load_omniglot",
        "Omniglot, 1623 handwritten characters of 50 alphabets, 20 drawings each",
        ("images_background.zip / .npz", "images_evaluation.zip / .npz"),
        (("train", "background"), ("test", "evaluation")),
        parts=("background", "evaluation"),
    ),
    "mnist": DatasetInfo(
        "mtgan.data.idx:load_mnist",
        "MNIST digits (idx files)",
        ("train-images-idx3-ubyte.gz",),
        parts=("train", "test"),
    ),
    "fashion-mnist": DatasetInfo(
        "mtgan.data.idx:load_fashion_mnist",
        "Fashion-MNIST (idx files; Debian's dataset-fashion-mnist is found by itself)",
        ("train-images-idx3-ubyte.gz",),
        needs_root=False,
        parts=("train", "test"),
    ),
    "kmnist": DatasetInfo(
        "mtgan.data.idx:load_kmnist",
        "Kuzushiji-MNIST (idx files)",
        ("train-images-idx3-ubyte.gz",),
        parts=("train", "test"),
    ),
    "notmnist": DatasetInfo(
        "mtgan.data.idx:load_notmnist",
        "notMNIST letters A-J (idx files)",
        ("train-images-idx3-ubyte.gz",),
        parts=("train", "test"),
    ),
    "cifar10": DatasetInfo(
        "mtgan.data.cifar:load_cifar10",
        "CIFAR-10 python pickles",
        ("cifar-10-batches-py/",),
        parts=("train", "test"),
    ),
    "cifar10-subset": DatasetInfo(
        "mtgan.data.cifar:load_cifar10_subset",
        "a CIFAR-10 subset in one npz: images, labels, classes (for example 600 per class)",
        ("cifar10_subset.npz",),
    ),
    "cifar100": DatasetInfo(
        "mtgan.data.cifar:load_cifar100",
        "CIFAR-100 python pickles",
        ("cifar-100-python/",),
        parts=("train", "test"),
    ),
    "fc100": DatasetInfo(
        "mtgan.data.cifar:load_fc100",
        "Fewshot-CIFAR100, split by superclass (60/20/20 classes)",
        ("cifar-100-python/ or FC100_{train,val,test}.pickle",),
        _OWN,
        parts=("train", "validation", "test"),
    ),
    "cifar-fs": DatasetInfo(
        "mtgan.data.cifar:load_cifar_fs",
        "CIFAR-FS (64/16/20 CIFAR-100 classes)",
        ("cifar-100-python/ or CIFAR_FS_{train,val,test}.pickle",),
        _OWN,
        parts=("train", "validation", "test"),
    ),
    "miniimagenet": DatasetInfo(
        "mtgan.data.miniimagenet:load_miniimagenet",
        "miniImageNet (64/16/20 classes, 600 images each, 84x84)",
        ("mini-imagenet-cache-{train,validation,test}.pkl or images/ + {train,val,test}.csv",),
        _OWN,
        parts=("train", "validation", "test"),
    ),
    "figr8": DatasetInfo(
        "mtgan.data.folder:load_folder",
        "FIGR-8 (root/<class>/*.png)",
        ("<class>/*.png",),
        takes=("image_size", "channels", "strict"),
    ),
    "folder": DatasetInfo(
        "mtgan.data.folder:load_folder",
        "any image folder: root/<class>/*.{png,jpg,jpeg}",
        ("<class>/*.png",),
        takes=("image_size", "channels", "strict"),
    ),
}


def load(
    name: str,
    root: str | os.PathLike | None = None,
    split: str | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    per_class: int = 20,
    strict: bool = False,
) -> ClassDataset:
    """A registered dataset, optionally conformed to ``image_size`` and ``channels``.

    Args:
        name: one of :data:`DATASETS`.
        root: the folder (or file) holding the published files.
        split: one of the dataset's own splits (``background``/``evaluation`` for Omniglot,
            ``train``/``test`` for the idx and CIFAR files, ``train``/``validation``/``test``
            for miniImageNet, FC100 and CIFAR-FS); None for its default.
        image_size, channels: resize and convert every image when given.
        per_class: images per class of the glyph dataset.
        strict: refuse unreadable images of an image folder instead of skipping them.

    Example:
        >>> ds = load("mnist", root="data/mnist", split="test")  # doctest: +SKIP
        >>> ds.classes[:3], len(ds)  # doctest: +SKIP
        (['0', '1', '2'], 10000)
    """
    info = DATASETS.get(name)
    if info is None:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    if info.needs_root and root is None:
        raise DataError(
            f"dataset {name!r} needs the folder of its files ({', '.join(info.files)}): "
            "--root DIR for mtgan data, data.root (--set data.root=DIR) for a run"
        )
    settings = {
        "image_size": image_size or 32,
        "channels": channels or 1,
        "per_class": per_class,
        "strict": strict,
    }
    kwargs = {k: settings[k] for k in info.takes}
    if split is not None:
        kwargs["split"] = split
    module, function = info.loader.split(":")
    loader = getattr(importlib.import_module(module), function)
    ds = loader(**kwargs) if root is None else loader(root, **kwargs)
    if image_size is not None:
        ds = ds.conformed(image_size, channels or ds.images_of(ds.classes[0]).shape[1])
    return ds


def load_splits(cfg: DataConfig) -> dict[str, ClassDataset]:
    """The disjoint train, validation and test classes that ``cfg`` asks for.

    - ``cfg.test_classes`` set: those classes (of the split ``cfg.split``) are the test
      classes and the rest train (no validation classes);
    - else a dataset with splits of its own uses them;
    - else the classes are shuffled with ``cfg.split_seed`` and cut by ``cfg.split_fractions``.

    Where the split has no validation classes, ``cfg.validation_classes`` of the training
    classes (shuffled with ``cfg.split_seed``) become them. With ``cfg.train_per_class``, each
    training class keeps its first that many images.
    """
    splits = _split(cfg)
    if cfg.validation_classes and not splits.get("validation"):
        splits = _hold_out_validation(splits, cfg.validation_classes, cfg.split_seed)
    if cfg.train_per_class:
        splits["train"] = splits["train"].first(cfg.train_per_class)
    return splits


def _split(cfg: DataConfig) -> dict[str, ClassDataset]:

    def read(split: str | None) -> ClassDataset:
        return load(
            cfg.name, cfg.root, split, cfg.image_size, cfg.channels, cfg.per_class, cfg.strict
        )

    own = DATASETS[cfg.name].split_names() if cfg.name in DATASETS else {}
    if cfg.test_classes:
        ds = read(cfg.split)
        missing = [c for c in cfg.test_classes if c not in ds.classes]
        if missing:
            raise DataError(
                f"data.test_classes {missing} are not classes of {cfg.name}: {ds.classes[:12]}"
            )
        train = [c for c in ds.classes if c not in cfg.test_classes]
        return {"train": ds.subset(train), "test": ds.subset(cfg.test_classes)}
    if own:
        return {ours: read(theirs) for ours, theirs in own.items()}
    ds = read(cfg.split)
    parts = split_classes(ds.classes, cfg.split_fractions, cfg.split_seed)
    return {k: ds.subset(p) for k, p in zip(("train", "validation", "test"), parts, strict=True)}


def _hold_out_validation(
    splits: dict[str, ClassDataset], count: int, seed: int
) -> dict[str, ClassDataset]:
    train = splits["train"]
    if count >= len(train.classes):
        raise DataError(
            f"data.validation_classes={count} leaves no training class of {len(train.classes)}"
        )
    order = sorted(train.classes)
    random.Random(seed).shuffle(order)
    held = set(order[:count])
    return splits | {
        "train": train.subset([c for c in train.classes if c not in held]),
        "validation": train.subset([c for c in train.classes if c in held]),
    }
