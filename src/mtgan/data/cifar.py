"""CIFAR-10, CIFAR-100 and their few-shot splits FC100 and CIFAR-FS.

Published formats read here:

* CIFAR-10, "python version" (``cifar-10-python.tar.gz``, folder ``cifar-10-batches-py``):
  pickles ``data_batch_1`` .. ``data_batch_5`` (train) and ``test_batch`` (test), each a dict
  with ``data`` (N x 3072 uint8: the red, green and blue 32 x 32 planes, row-major) and
  ``labels``; ``batches.meta`` has ``label_names``.
* CIFAR-100, "python version" (folder ``cifar-100-python``): pickles ``train`` and ``test``
  with ``data``, ``fine_labels`` and ``coarse_labels``; ``meta`` has ``fine_label_names``
  and ``coarse_label_names``.
* FC100 (Oreshkin et al. 2018) and CIFAR-FS (Bertinetto et al. 2019): 600 images per
  CIFAR-100 class (train and test merged), split by class. They are built from the CIFAR-100
  folder, or read from the MetaOptNet pickles ``FC100_{train,val,test}.pickle`` /
  ``CIFAR_FS_{train,val,test}.pickle``: dicts with ``data`` (N, 32, 32, 3) uint8 and
  ``labels`` (N,) ints; their classes are then named by the label number.
* A CIFAR-10 subset as ``cifar10_subset.npz``: ``images`` (N, 32, 32, 3) uint8, ``labels``
  int64 and ``classes`` (names).
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mtgan.data.base import ClassDataset
from mtgan.data.safe import CORRUPT_ERRORS, corrupt, require_file, safe_load_pickle
from mtgan.errors import DataError

#: FC100 superclasses per split (Oreshkin et al. 2018, TADAM): 12 / 4 / 4 superclasses.
FC100_SUPERCLASSES = {
    "train": (
        "fish",
        "flowers",
        "food_containers",
        "fruit_and_vegetables",
        "household_electrical_devices",
        "household_furniture",
        "large_man-made_outdoor_things",
        "large_natural_outdoor_scenes",
        "reptiles",
        "trees",
        "vehicles_1",
        "vehicles_2",
    ),
    "validation": (
        "large_carnivores",
        "large_omnivores_and_herbivores",
        "non-insect_invertebrates",
        "small_mammals",
    ),
    "test": ("aquatic_mammals", "insects", "medium_mammals", "people"),
}

#: CIFAR-FS fine classes per split (Bertinetto et al. 2019, ``splits/bertinetto``): 64/16/20.
CIFAR_FS_CLASSES = {
    "train": (
        "dolphin", "seal", "aquarium_fish", "ray", "trout", "orchid", "sunflower", "tulip",
        "bottle", "bowl", "can", "cup", "plate", "apple", "mushroom", "orange", "pear", "clock",
        "keyboard", "chair", "couch", "bee", "caterpillar", "cockroach", "bear", "lion", "tiger",
        "wolf", "bridge", "castle", "house", "road", "skyscraper", "cloud", "forest",
        "mountain", "elephant", "kangaroo", "porcupine", "possum", "raccoon", "skunk",
        "lobster", "spider", "boy", "girl", "dinosaur", "lizard", "snake", "turtle", "hamster",
        "mouse", "rabbit", "shrew", "squirrel", "oak_tree", "palm_tree", "pine_tree",
        "willow_tree", "bus", "train", "lawn_mower", "streetcar", "tank",
    ),
    "validation": (
        "beaver", "otter", "flatfish", "shark", "lamp", "television", "beetle", "butterfly",
        "sea", "camel", "cattle", "crab", "crocodile", "maple_tree", "motorcycle", "tractor",
    ),
    "test": (
        "whale", "poppy", "rose", "sweet_pepper", "telephone", "bed", "table", "wardrobe",
        "leopard", "plain", "chimpanzee", "fox", "snail", "worm", "baby", "man", "woman",
        "bicycle", "pickup_truck", "rocket",
    ),
}  # fmt: skip

_FEW_SHOT_SPLITS = {"train": "train", "validation": "val", "val": "val", "test": "test"}


def load_cifar10(root: str | os.PathLike, split: str = "train") -> ClassDataset:
    """CIFAR-10 from its python-version batches.

    Args:
        root: the folder ``cifar-10-batches-py`` or its parent.
        split: ``"train"`` (the five data batches) or ``"test"`` (``test_batch``).
    """
    folder = _find_folder(root, "cifar-10-batches-py", "batches.meta")
    names = _names(folder / "batches.meta", "label_names")
    files = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
    batches = [_read_batch(folder / f, "labels") for f in files[_check_split(split, files)]]
    images, labels = _concat(batches)
    return _group("cifar10", images, labels, names)


def load_cifar100(root: str | os.PathLike, split: str = "train") -> ClassDataset:
    """CIFAR-100 from its python-version pickles, classes are the 100 fine labels.

    Args:
        root: the folder ``cifar-100-python`` or its parent.
        split: ``"train"`` or ``"test"``.
    """
    folder = _find_folder(root, "cifar-100-python", "meta")
    names = _names(folder / "meta", "fine_label_names")
    split = _check_split(split, ("train", "test"))
    images, labels = _read_batch(folder / split, "fine_labels")
    return _group("cifar100", images, labels, names)


def load_fc100(root: str | os.PathLike, split: str = "train") -> ClassDataset:
    """FC100: CIFAR-100 split by superclass (60 / 20 / 20 fine classes).

    Args:
        root: a folder with ``FC100_<split>.pickle`` (also under ``FC100/``), or with the
            CIFAR-100 python folder.
        split: ``"train"``, ``"validation"`` (or ``"val"``) or ``"test"``.
    """
    return _few_shot_cifar100("fc100", root, split, "FC100", ("FC100",), "coarse")


def load_cifar_fs(root: str | os.PathLike, split: str = "train") -> ClassDataset:
    """CIFAR-FS: CIFAR-100 split by fine class (64 / 16 / 20 classes, Bertinetto et al.).

    Args:
        root: a folder with ``CIFAR_FS_<split>.pickle`` (also under ``CIFAR-FS/``), or with
            the CIFAR-100 python folder.
        split: ``"train"``, ``"validation"`` (or ``"val"``) or ``"test"``.
    """
    folders = ("CIFAR-FS", "CIFAR_FS")
    return _few_shot_cifar100("cifar_fs", root, split, "CIFAR_FS", folders, "fine")


_SPLIT_BY = {"coarse": FC100_SUPERCLASSES, "fine": CIFAR_FS_CLASSES}


def _few_shot_cifar100(name, root, split, prefix, folders, level: str) -> ClassDataset:
    """A few-shot split of CIFAR-100: its ``<prefix>_<split>.pickle`` when present, else the
    images of the CIFAR-100 python folder (train and test merged) whose ``level`` (``coarse``:
    superclass, ``fine``: class) label belongs to the split."""
    short = _FEW_SHOT_SPLITS[_check_split(split, _FEW_SHOT_SPLITS)]
    pickled = _find_split_pickle(root, folders, f"{prefix}_{short}.pickle")
    if pickled is not None:
        return _load_split_pickle(name, pickled)
    folder = _find_folder(root, "cifar-100-python", "meta", also=f"{prefix}_{short}.pickle")
    images, fine, coarse = _cifar100_all(folder)
    meta = folder / "meta"
    fine_names = _names(meta, "fine_label_names")
    names = fine_names if level == "fine" else _names(meta, "coarse_label_names")
    wanted = _SPLIT_BY[level][_long_split(short)]
    missing = sorted(set(wanted) - set(names))
    if missing:
        what = "classes" if level == "fine" else "superclasses"
        raise DataError(f"{meta} lacks CIFAR-100 {what} {missing}; is it CIFAR-100?")
    mask = np.isin(fine if level == "fine" else coarse, [names.index(w) for w in wanted])
    return _group(name, images[mask], fine[mask], fine_names)


def load_cifar10_subset(root: str | os.PathLike, split: str = "train") -> ClassDataset:
    """A CIFAR-10 subset stored as ``cifar10_subset.npz``.

    Args:
        root: the npz file or the folder holding ``cifar10_subset.npz``.
        split: only ``train``: the subset is drawn from CIFAR-10's training set.
    """
    _check_split(split, ("train",))
    root = Path(root)
    path = require_file(root / "cifar10_subset.npz" if root.is_dir() else root)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in ("images", "labels", "classes") if k in npz.files}
    except (*CORRUPT_ERRORS, OSError, zipfile.BadZipFile):
        raise corrupt(path) from None
    for key in ("images", "labels", "classes"):
        if key not in arrays:
            raise DataError(f"{path} has no array {key!r}; expected images, labels, classes")
    images = _check_images(path, arrays["images"], (32, 32, 3)).transpose(0, 3, 1, 2)
    names = [str(c) for c in arrays["classes"]]
    return _group("cifar10_subset", images, _labels(path, arrays["labels"], images), names)


def _check_split(split: str, allowed) -> str:
    if split not in allowed:
        raise DataError(f"unknown split {split!r}; use one of {', '.join(allowed)}")
    return split


def _long_split(short: str) -> str:
    return "validation" if short == "val" else short


def _find_folder(root: str | os.PathLike, folder: str, marker: str, also: str = "") -> Path:
    """``root/folder`` or ``root`` itself, whichever holds the marker file."""
    root = Path(root)
    for candidate in (root / folder, root):
        if (candidate / marker).is_file():
            return candidate
    alternative = f" or {also}" if also else ""
    raise DataError(f"{root} holds no {folder}/{marker}{alternative}; download the dataset there")


def _find_split_pickle(root: str | os.PathLike, subfolders: Sequence[str], name: str):
    """The split's pickle in ``root`` or one of its subfolders, or None."""
    root = Path(root)
    for candidate in (root / name, *(root / sub / name for sub in subfolders)):
        if candidate.is_file():
            return candidate
    return None


def _load_split_pickle(name: str, path: Path) -> ClassDataset:
    """A MetaOptNet-style split pickle: ``data`` (N, 32, 32, 3) uint8 and ``labels`` (N,)."""
    obj = _dict_with(path, safe_load_pickle(path), ("data", "labels"))
    images = _check_images(path, obj["data"], (32, 32, 3)).transpose(0, 3, 1, 2)
    labels = _labels(path, obj["labels"], images)
    return ClassDataset(name, {str(c): images[labels == c] for c in np.unique(labels)})


def _cifar100_all(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train and test merged: images, fine labels and coarse labels (600 images per class)."""
    parts = []
    for split in ("train", "test"):
        path = folder / split
        obj = _dict_with(path, safe_load_pickle(path), ("data", "fine_labels", "coarse_labels"))
        images = _flat_images(path, obj["data"])
        fine, coarse = (_labels(path, obj[k], images) for k in ("fine_labels", "coarse_labels"))
        parts.append((images, fine, coarse))
    return tuple(np.concatenate(arrays) for arrays in zip(*parts, strict=True))


def _read_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR python batch: images (N, 3, 32, 32) and labels (N,)."""
    obj = _dict_with(path, safe_load_pickle(path), ("data", label_key))
    images = _flat_images(path, obj["data"])
    return images, _labels(path, obj[label_key], images)


def _flat_images(path: Path, data: object) -> np.ndarray:
    """N x 3072 rows of R, G, B planes -> (N, 3, 32, 32)."""
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(
            f"{path}: data has shape {data.shape} and dtype {data.dtype}, expected N x 3072 uint8"
        )
    return data.reshape(-1, 3, 32, 32)


def _check_images(path: Path, data: object, shape: tuple[int, ...]) -> np.ndarray:
    """An (N, *shape) uint8 array, or DataError naming the file."""
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.shape[1:] != shape:
        raise DataError(
            f"{path}: images have shape {data.shape} and dtype {data.dtype}, "
            f"expected (N, {', '.join(map(str, shape))}) uint8"
        )
    return data


def _labels(path: Path, labels: object, images: np.ndarray) -> np.ndarray:
    """Integer labels, one per image."""
    labels = np.asarray(labels)
    if (
        labels.ndim != 1
        or len(labels) != len(images)
        or not np.issubdtype(labels.dtype, np.integer)
    ):
        raise DataError(f"{path}: expected {len(images)} integer labels, got shape {labels.shape}")
    return labels.astype(np.int64)


def _names(path: Path, key: str) -> list[str]:
    """A list of class names from a meta pickle."""
    obj = _dict_with(path, safe_load_pickle(path), (key,))
    names = obj[key]
    if not isinstance(names, list | tuple):
        raise DataError(f"{path}: {key!r} is not a list of names")
    return [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]


def _dict_with(path: Path, obj: object, keys: Sequence[str]) -> dict:
    """The object, checked to be a dict holding the keys."""
    if not isinstance(obj, dict):
        raise DataError(f"{path} holds a {type(obj).__name__}, expected a dict")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise DataError(f"{path} lacks keys {missing}; found {sorted(map(str, obj))}")
    return obj


def _concat(batches: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def _group(name: str, images: np.ndarray, labels: np.ndarray, names: list[str]) -> ClassDataset:
    """Images grouped by label and named by ``names[label]``; labels without images left out."""
    present = np.unique(labels)
    if len(present) and (present[0] < 0 or present[-1] >= len(names)):
        raise DataError(f"{name}: labels run to {present[-1]} but there are {len(names)} names")
    return ClassDataset(name, {names[c]: images[labels == c] for c in present})
