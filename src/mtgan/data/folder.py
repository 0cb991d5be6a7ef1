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
    root: str | os.PathLike,
    image_size: int = 32,
    channels: int = 1,
    name: str = "folder",
    strict: bool = False,
) -> ClassDataset:
    """Every subfolder of ``root`` is a class; its images are resized to ``image_size``.

    Images are converted to ``channels`` (1: grey, 3: RGB) and resized to squares; a folder
    mixing grey and colour images, or sizes, gets a note saying so. Unreadable files are
    skipped with a warning that counts them, or refused with ``strict``.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{root} has no class subfolders; put each class's images in root/<class>/")
    images, skipped, seen = {}, [], _Seen()
    for folder in class_dirs:
        arrays = []
        for file in sorted(folder.iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                arrays.append(_read_image(file, image_size, channels, seen))
            except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
                if strict:
                    raise DataError(
                        f"{file} is not a readable image; remove it, or drop --strict to skip it"
                    ) from None
                skipped.append(file)
        if not arrays:
            raise DataError(f"class folder {folder} holds no readable images")
        images[folder.name] = np.stack(arrays)
    if skipped:
        warnings.warn(
            f"skipped {len(skipped)} unreadable image(s), first {skipped[0]}", stacklevel=2
        )
    seen.note(root, image_size, channels)
    return ClassDataset(name, images)


class _Seen:
    """The colour modes and sizes met in a folder, for one note when they are mixed."""

    def __init__(self):
        self.grey: set[bool] = set()
        self.sizes: set[tuple[int, int]] = set()

    def add(self, img: Image.Image) -> None:
        self.grey.add(img.mode in ("1", "L", "LA", "I", "I;16", "F"))
        self.sizes.add(img.size)

    def note(self, root: Path, image_size: int, channels: int) -> None:
        notes = []
        if len(self.grey) > 1:
            notes.append(f"grey and colour images, all converted to {_MODES[channels]}")
        if len(self.sizes) > 1:
            shown = ", ".join(f"{w}x{h}" for w, h in sorted(self.sizes)[:3])
            more = ", ..." if len(self.sizes) > 3 else ""
            notes.append(f"sizes {shown}{more}, all resized to {image_size}x{image_size}")
        if notes:
            warnings.warn(f"{root} mixes {' and '.join(notes)}", stacklevel=3)


_MODES = {1: "grey", 3: "colour"}


def _read_image(path: Path, image_size: int, channels: int, seen: _Seen) -> np.ndarray:
    """One image as uint8 (C, H, W), converted and resized (Lanczos) to a square."""
    with Image.open(path) as img:
        seen.add(img)
        img = img.convert("L" if channels == 1 else "RGB")
        img = img.resize((image_size, image_size), Image.LANCZOS)
        arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)
