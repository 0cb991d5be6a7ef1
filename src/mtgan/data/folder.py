"""An image folder: ``root/<class>/*.{png,jpg,jpeg,...}``, one subfolder per class.

This is the layout of FIGR-8 and of a user's own images (``mtgan adapt --images DIR``).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from mtgan.data.base import ClassDataset
from mtgan.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def load_folder(
    root: str | os.PathLike, image_size: int = 32, channels: int = 1, name: str = "folder"
) -> ClassDataset:
    """Every subfolder of ``root`` is a class; its images are resized to ``image_size``.

    Images are converted to ``channels`` (1: grey, 3: RGB). Unreadable files are skipped
    with a warning that counts them.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{root} has no class subfolders; put each class's images in root/<class>/")
    images, skipped = {}, []
    for folder in class_dirs:
        arrays = []
        for file in sorted(folder.iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                arrays.append(_read_image(file, image_size, channels))
            except (OSError, UnidentifiedImageError, ValueError):
                skipped.append(file)
        if not arrays:
            raise DataError(f"class folder {folder} holds no readable images")
        images[folder.name] = np.stack(arrays)
    if skipped:
        warnings.warn(
            f"skipped {len(skipped)} unreadable image(s), first {skipped[0]}", stacklevel=2
        )
    return ClassDataset(name, images)


def _read_image(path: Path, image_size: int, channels: int) -> np.ndarray:
    """One image as uint8 (C, H, W), converted and resized (Lanczos) to a square."""
    with Image.open(path) as img:
        img = img.convert("L" if channels == 1 else "RGB")
        img = img.resize((image_size, image_size), Image.LANCZOS)
        arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)
