"""miniImageNet (Vinyals et al. 2016, split of Ravi & Larochelle 2017): 64 / 16 / 20 classes.

Two published layouts are read:

* the pickled cache ``mini-imagenet-cache-{train,validation,test}.pkl``: a dict with
  ``image_data`` (N, 84, 84, 3) uint8 and ``class_dict`` (synset -> list of row indices);
* the Ravi & Larochelle folder: ``images/*.jpg`` with ``train.csv``, ``val.csv`` and
  ``test.csv``, each with the header ``filename,label`` (label: the class's synset). Images
  are converted to RGB and resized to 84 x 84 when they are not already.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from mtgan.data.base import ClassDataset
from mtgan.data.safe import check_not_html, corrupt, require_file, safe_load_pickle
from mtgan.errors import DataError

IMAGE_SIZE = 84
_SPLITS = {"train": "train", "validation": "validation", "val": "validation", "test": "test"}
_CSV_NAMES = {"train": "train.csv", "validation": "val.csv", "test": "test.csv"}


def load_miniimagenet(root: str | os.PathLike, split: str = "train") -> ClassDataset:
    """miniImageNet from the pickled cache or from the csv + images folder.

    Args:
        root: the folder holding ``mini-imagenet-cache-<split>.pkl``, or ``images/`` and the
            split csv files.
        split: ``"train"``, ``"validation"`` (or ``"val"``) or ``"test"``.
    """
    if split not in _SPLITS:
        raise DataError(f"unknown split {split!r}; use one of {', '.join(_SPLITS)}")
    split = _SPLITS[split]
    root = Path(root)
    cache = root / f"mini-imagenet-cache-{split}.pkl"
    if cache.is_file():
        return _load_cache(cache)
    listing = root / _CSV_NAMES[split]
    if listing.is_file():
        return _load_csv(listing, root / "images")
    raise DataError(
        f"{root} holds neither {cache.name} nor {listing.name} with images/; "
        "download miniImageNet there"
    )


def _load_cache(path: Path) -> ClassDataset:
    """The pickled cache: ``image_data`` rows grouped by ``class_dict``."""
    obj = safe_load_pickle(path)
    if not isinstance(obj, dict) or not {"image_data", "class_dict"} <= obj.keys():
        raise DataError(f"{path} is not a miniImageNet cache (needs image_data and class_dict)")
    data = np.asarray(obj["image_data"])
    if data.dtype != np.uint8 or data.ndim != 4 or data.shape[-1] != 3:
        raise DataError(
            f"{path}: image_data has shape {data.shape} and dtype {data.dtype}, "
            "expected (N, 84, 84, 3) uint8"
        )
    classes = obj["class_dict"]
    if not isinstance(classes, dict):
        raise DataError(f"{path}: class_dict is not a dict of synset -> indices")
    images = {}
    for synset, indices in classes.items():
        idx = np.asarray(indices, dtype=np.int64)
        if idx.ndim != 1 or (len(idx) and (idx.min() < 0 or idx.max() >= len(data))):
            raise DataError(f"{path}: class {synset!r} has indices outside image_data")
        images[str(synset)] = data[idx].transpose(0, 3, 1, 2)
    return ClassDataset("miniimagenet", images)


def _load_csv(listing: Path, image_dir: Path) -> ClassDataset:
    """The Ravi & Larochelle layout: ``filename,label`` rows naming files in ``images/``."""
    files_by_class: dict[str, list[Path]] = {}
    for filename, label in _read_listing(listing):
        files_by_class.setdefault(label, []).append(image_dir / filename)
    images = {
        label: np.stack([_read_image(f) for f in files]) for label, files in files_by_class.items()
    }
    return ClassDataset("miniimagenet", images)


def _read_listing(listing: Path) -> list[tuple[str, str]]:
    """The (filename, label) rows of a split csv."""
    check_not_html(listing)
    try:
        with open(listing, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or not {"filename", "label"} <= set(reader.fieldnames):
                raise DataError(f"{listing} lacks the header 'filename,label'")
            rows = [(row["filename"], row["label"]) for row in reader]
    except (UnicodeDecodeError, csv.Error):
        raise corrupt(listing) from None
    if not rows or any(not name or not label for name, label in rows):
        raise DataError(f"{listing} has no rows or rows without filename or label")
    return rows


def _read_image(path: Path) -> np.ndarray:
    """One image as uint8 (3, 84, 84)."""
    require_file(path)
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if img.size != (IMAGE_SIZE, IMAGE_SIZE):
                img = img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise corrupt(path) from None
