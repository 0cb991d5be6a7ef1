"""Uploaded images checked against limits and stored under the workspace, never by the names
they came with: class names become safe folder names and files are numbered."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from mtgan.errors import MtganError
from mtgan.files import atomic_write
from mtgan.runs.outputs import folder_names

SUFFIXES = {
    "PNG": ".png", "JPEG": ".jpg", "MPO": ".jpg", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif"
}  # fmt: skip
"""The image formats accepted, by Pillow's name, and the suffix they are stored with."""


@dataclass(frozen=True)
class Limits:
    """What one Adapt request may send."""

    max_classes: int = 20
    max_images_per_class: int = 50
    max_file_bytes: int = 10 * 2**20
    max_request_bytes: int = 100 * 2**20
    max_pixels: int = 4096 * 4096
    max_per_class: int = 500
    max_name_length: int = 64
    max_queued: int = 8


class UploadError(MtganError):
    """An upload the server refuses: the page shows its message."""


def check_image(data: bytes, label: str, limits: Limits) -> str:
    """The format of an uploaded image, or UploadError saying why it is refused: empty, too
    large in bytes or pixels (decompression bombs), or not an image of an accepted format."""
    if not data:
        raise UploadError(f"{label} is empty")
    if len(data) > limits.max_file_bytes:
        raise UploadError(f"{label} is larger than {limits.max_file_bytes // 2**20} MB")
    try:  # only the accepted formats are tried: no other decoder sees the bytes
        with Image.open(io.BytesIO(data), formats=list(SUFFIXES)) as img:
            width, height = img.size
            if width * height > limits.max_pixels:
                raise UploadError(f"{label} has {width}x{height} pixels, more than allowed")
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img.load()
            kind = img.format
    except UploadError:
        raise
    except UnidentifiedImageError:
        raise UploadError(f"{label} is not a PNG, JPEG, GIF, BMP or TIFF image") from None
    except Exception:  # whatever a corrupt file makes a decoder raise
        raise UploadError(f"{label} is not a readable image") from None
    return kind


def store_support(
    classes: list[tuple[str, list[tuple[str, bytes]]]], folder: Path, limits: Limits
) -> list[str]:
    """Check every class's uploaded files, then write them as ``folder/<class>/<i>.<ext>``.

    ``classes``: (class name, [(file name, bytes), ...]) in the page's order. Nothing is written
    unless every file passes. Returns the folder names of the classes.
    """
    if not classes:
        raise UploadError("name at least one class and add its images")
    if len(classes) > limits.max_classes:
        raise UploadError(f"at most {limits.max_classes} classes at once")
    names = [name.strip() for name, _ in classes]
    if any(not n for n in names) or len(set(names)) < len(names):
        raise UploadError("every class needs a name of its own")
    if max(len(n) for n in names) > limits.max_name_length:
        raise UploadError(f"class names may have at most {limits.max_name_length} characters")
    checked = []
    for name, files in classes:
        if not files:
            raise UploadError(f"class {name!r} has no images")
        if len(files) > limits.max_images_per_class:
            raise UploadError(f"class {name!r}: at most {limits.max_images_per_class} images")
        kinds = [check_image(data, f"{file!r} of class {name!r}", limits) for file, data in files]
        checked.append([(SUFFIXES[k], data) for k, (_, data) in zip(kinds, files, strict=True)])
    safe = folder_names(names)
    for name, files in zip(safe, checked, strict=True):
        for i, (suffix, data) in enumerate(files):
            atomic_write(folder / name / f"{i:03d}{suffix}", data)
    return safe
