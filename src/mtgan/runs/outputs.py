"""Generated images as files a user can use: one PNG per image under a folder per class, an
npz of arrays, or a labelled grid to look at.

``--out`` decides which: a path ending in ``.npz`` is an npz (``images`` uint8 (classes,
per_class, channels, H, W), ``classes`` their names), one ending in ``.png`` is the grid alone,
and anything else is a folder with ``<class>/<i>.png`` and ``grid.png``. Nothing is replaced
without ``overwrite``, and a replaced folder is swapped in whole.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from mtgan.errors import MtganError
from mtgan.files import atomic_write, umask
from mtgan.report import labelled_grid, save_png, to_pil

KINDS = (".npz", ".png")
GRID = "grid.png"
"""The labelled grid in a folder of images: the mark of a folder this module wrote."""
"""The file suffixes ``--out`` may end in; any other path without a suffix is a folder."""


def check_out(out: str | Path, overwrite: bool) -> Path:
    """``out`` checked before any work is done: of a kind we write, and not replaced unless
    ``overwrite`` (and then only a folder that this module wrote)."""
    folder = str(out).endswith(("/", "\\"))
    out = Path(out)
    suffix = "" if folder else out.suffix.lower()
    if suffix and suffix not in KINDS:
        raise MtganError(
            f"--out {out}: write a folder (one PNG per image), a .png (the grid) or a .npz"
        )
    if suffix in KINDS and out.is_dir():
        raise MtganError(f"--out {out} is a folder; give a file name ending in {suffix}")
    if not suffix and out.is_file():
        raise MtganError(f"--out {out} is a file; give a folder, a .png or a .npz")
    taken = out.is_file() or (out.is_dir() and any(out.iterdir()))
    if taken and not overwrite:
        raise MtganError(f"{out} exists; pass --overwrite to replace it")
    if taken and out.is_dir() and not (out / GRID).is_file():
        raise MtganError(f"{out} is a folder that mtgan did not write; give another --out")
    return out


def write_images(
    images: torch.Tensor, slots: torch.Tensor, classes: list[str], out: Path, per_row: int = 10
) -> Path:
    """Write generated uint8 ``images`` (n, C, H, W) of class slots ``slots`` to ``out`` (see
    the module's docstring); returns what was written."""
    suffix = out.suffix.lower()
    if suffix == ".npz":
        atomic_write(out, _npz(images, slots, classes))
    elif suffix == ".png":
        save_png(labelled_grid(images, slots, classes, per_row), out)
    else:
        _folder(images, slots, classes, out, per_row)
    return out


def _npz(images: torch.Tensor, slots: torch.Tensor, classes: list[str]) -> bytes:
    per_class = [images[slots == s].numpy() for s in range(len(classes))]
    buf = io.BytesIO()
    np.savez_compressed(buf, images=np.stack(per_class), classes=np.array(classes))
    return buf.getvalue()


def _folder(
    images: torch.Tensor, slots: torch.Tensor, classes: list[str], out: Path, per_row: int
) -> None:
    """The folder is written beside ``out`` and renamed into place, replacing an old one."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        os.chmod(tmp, 0o777 & ~umask())  # mkdtemp's 0700 would hide the images from others
        for name, slot in zip(folder_names(classes), range(len(classes)), strict=True):
            for i, image in enumerate(images[slots == slot]):
                save_png(to_pil(image), tmp / name / f"{i:04d}.png")
        save_png(labelled_grid(images, slots, classes, per_row), tmp / GRID)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_folder(tmp, out)


def replace_folder(new: Path, out: Path) -> None:
    """Move the finished folder ``new`` to ``out``; an old ``out`` stays whole until the new one
    is in place, then goes."""
    old = new.with_name(new.name + ".old")
    try:
        if out.exists():
            out.rename(old)
        new.rename(out)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        if old.exists() and not out.exists():
            old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def folder_names(classes: list[str]) -> list[str]:
    """Class names made safe as folder names (no separators, no leading dot), kept unique.

    Example:
        >>> folder_names(["cat", "a/b", ".x", "cat", ""])
        ['cat', 'a_b', '_x', 'cat_3', 'class_4']
    """
    names: list[str] = []
    for i, name in enumerate(classes):
        safe = re.sub(r'[/\\\x00:*?"<>|]', "_", name).strip()
        safe = "_" + safe[1:] if safe.startswith(".") else safe
        safe = safe or f"class_{i}"
        unique, n = safe, i
        while unique in names:
            unique, n = f"{safe}_{n}", n + 1
        names.append(unique)
    return names
