"""An image folder: ``root/<class>/*.{png,jpg,jpeg,...}``, one subfolder per class.

This is the layout of FIGR-8 and of a user's own images (``mtgan adapt --images DIR``).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mtgan.data.base import ClassDataset
from mtgan.data.safe import require_folder
from mtgan.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
"""The files read as images, whatever the case of their suffix (``.PNG`` too)."""


def load_folder(
    root: str | os.PathLike,
    image_size: int = 32,
    channels: int = 1,
    name: str = "folder",
    strict: bool = False,
) -> ClassDataset:
    """Every subfolder of ``root`` is a class; its images are resized to ``image_size``.

    Images are turned upright by their EXIF orientation, brought to 8 bits (16-bit and 32-bit
    grey scaled, not clipped), composited over black where they are transparent (grey+alpha,
    RGBA, palettes with transparency), converted to ``channels`` (1: grey, 3: RGB) and resized
    to squares; a folder mixing grey and colour images, or sizes, gets a note saying so.
    Unreadable files are skipped with a warning that counts them, or refused with ``strict``.
    """
    root = require_folder(root, "image folder", "give a folder of <class>/ subfolders")
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
        self.grey.add(img.mode in ("1", "L", "LA", "La", "F") or img.mode.startswith("I"))
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
        img = _opaque(_eight_bit(ImageOps.exif_transpose(img)))
        img = img.convert("L" if channels == 1 else "RGB")
        img = img.resize((image_size, image_size), Image.LANCZOS)
        arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def _eight_bit(img: Image.Image) -> Image.Image:
    """Grey images of more than 8 bits scaled to 0..255 (Pillow's own conversion clips them).

    16-bit modes divide by 257 (65535 -> 255); 32-bit integers are read as 16-bit values when
    they exceed 255; floats as 0..1 when they stay within it, else as 0..255.
    """
    if not img.mode.startswith(("I", "F")):
        return img
    arr = np.asarray(img, dtype=np.float64)
    if img.mode.startswith("I;16") or (img.mode == "I" and arr.max() > 255):
        arr = arr / 257
    elif img.mode == "F" and arr.max() <= 1:
        arr = arr * 255
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")


def _opaque(img: Image.Image) -> Image.Image:
    """A transparent image composited over black (the background the models draw on)."""
    if img.mode in ("P", "L", "RGB") and "transparency" in img.info:
        img = img.convert("LA" if img.mode == "L" else "RGBA")
    if img.mode not in ("LA", "La", "PA", "RGBA", "RGBa"):
        return img
    grey = img.mode in ("LA", "La")
    rgba = img.convert("RGBA")
    flat = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    return flat.convert("L" if grey else "RGB")
