"""MNIST-family datasets in the idx format of LeCun et al.

An idx file is big-endian: a magic number ``0x0000TTDD`` (``TT`` the element type, 0x08 for
unsigned bytes; ``DD`` the number of dimensions), one uint32 per dimension, then the elements in
C order. Image files have magic 0x00000803 and shape (n, rows, cols); label files 0x00000801 and
shape (n,). Each split is a pair of files, usually gzip-compressed:

- train: ``train-images-idx3-ubyte.gz`` and ``train-labels-idx1-ubyte.gz``
- test: ``t10k-images-idx3-ubyte.gz`` and ``t10k-labels-idx1-ubyte.gz``

MNIST, Fashion-MNIST, KMNIST and the idx variant of notMNIST all use these names. Their images
are published as bright ink on a dark background, which is what every loader returns, unchanged.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from mtgan.data.base import ClassDataset
from mtgan.data.safe import require_folder
from mtgan.errors import DataError

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")

MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
KMNIST_CLASSES = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")
NOTMNIST_CLASSES = tuple("ABCDEFGHIJ")

_SPLIT_PREFIX = {"train": "train", "test": "t10k"}


def check_download(path: Path) -> None:
    """Raise DataError when ``path`` is missing or is an HTML page saved in place of a dataset.

    Args:
        path: the file to check.
    """
    if not path.is_file():
        raise DataError(f"{path} does not exist; download the dataset file there")
    with open(path, "rb") as f:
        head = f.read(512).lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")) or b"<html" in head:
        raise DataError(
            f"{path} is an HTML page, not the dataset (a failed download); download it again"
        )


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """One idx file, gzip-compressed (``.gz``) or raw, as a uint8 array of its stored shape.

    Args:
        path: the idx file.

    Returns:
        uint8 array: (n, rows, cols) for an image file, (n,) for a label file.
    """
    path = Path(path)
    check_download(path)
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path} is truncated or corrupt ({e}); download it again") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08 or data[3] == 0:
        raise DataError(
            f"{path} is not an idx file of bytes (magic 0x{data[:4].hex() or '-'}, expected "
            f"0x00000803 images or 0x00000801 labels); download it again"
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = tuple(int(d) for d in np.frombuffer(data[4:header], dtype=">u4"))
    size = int(np.prod(dims))
    if len(dims) != ndim or len(data) != header + size:
        raise DataError(
            f"{path} holds {max(len(data) - header, 0)} bytes of data, expected {size} for shape "
            f"{dims}: truncated or corrupt; download it again"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _find(root: Path, prefix: str, kind: str, ndim: int) -> Path:
    """The first existing idx file of a split, e.g. ``train-images-idx3-ubyte[.gz]``."""
    names = [
        f"{prefix}-{kind}{sep}idx{ndim}-ubyte{ext}" for sep in ("-", ".") for ext in (".gz", "")
    ]
    for name in names:
        if (root / name).is_file():
            return root / name
    raise DataError(f"{root / names[0]} does not exist; download it (or its unzipped form) there")


def load_idx_dataset(
    root: str | os.PathLike, split: str, name: str, class_names: tuple[str, ...]
) -> ClassDataset:
    """The images of one split, grouped by label, classes in label order.

    Args:
        root: the folder holding the four idx files.
        split: ``train`` or ``test`` (the ``t10k`` files).
        name: the dataset's name, for messages.
        class_names: the name of label 0, 1, ...

    Returns:
        a ClassDataset of uint8 (n, 1, rows, cols) images; labels without images are left out.
    """
    if split not in _SPLIT_PREFIX:
        raise DataError(f"{name}: unknown split {split!r}; use train or test")
    root = require_folder(root, f"{name}: folder", "download the idx files there")
    images_path = _find(root, _SPLIT_PREFIX[split], "images", 3)
    labels_path = _find(root, _SPLIT_PREFIX[split], "labels", 1)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1:
        raise DataError(f"{images_path} or {labels_path} is swapped: images need 3 dims, labels 1")
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)}"
        )
    if len(labels) and labels.max() >= len(class_names):
        raise DataError(f"{labels_path} has label {labels.max()}; {name} has {len(class_names)}")
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels, minlength=len(class_names))
    groups = np.split(images[order][:, None], np.cumsum(counts)[:-1])
    return ClassDataset(name, {c: g for c, g in zip(class_names, groups, strict=True) if len(g)})


def load_mnist(root: str | os.PathLike, split: str = "train") -> ClassDataset:
    """MNIST digits, classes ``"0"`` to ``"9"``; see :func:`load_idx_dataset`."""
    return load_idx_dataset(root, split, "mnist", MNIST_CLASSES)


def load_fashion_mnist(root: str | os.PathLike | None = None, split: str = "train") -> ClassDataset:
    """Fashion-MNIST (Xiao et al.); ``root`` None reads Debian's ``dataset-fashion-mnist``.

    Args:
        root: the folder of the idx files, or None for ``/usr/share/datasets/fashion-mnist``.
        split: ``train`` or ``test``.
    """
    if root is None:
        if not FASHION_MNIST_DEBIAN.is_dir():
            raise DataError(
                f"Fashion-MNIST is not in {FASHION_MNIST_DEBIAN}; run "
                "'apt-get install dataset-fashion-mnist' or give the folder of its idx files"
            )
        root = FASHION_MNIST_DEBIAN
    return load_idx_dataset(root, split, "fashion-mnist", FASHION_MNIST_CLASSES)


def load_kmnist(root: str | os.PathLike, split: str = "train") -> ClassDataset:
    """Kuzushiji-MNIST (Clanuwat et al.), ten hiragana named in romaji (``o`` to ``wo``)."""
    return load_idx_dataset(root, split, "kmnist", KMNIST_CLASSES)


def load_notmnist(root: str | os.PathLike, split: str = "train") -> ClassDataset:
    """notMNIST in its idx variant, the letters ``A`` to ``J`` in many fonts."""
    return load_idx_dataset(root, split, "notmnist", NOTMNIST_CLASSES)
