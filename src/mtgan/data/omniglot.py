"""Omniglot (Lake et al.): 1,623 handwritten characters of 50 alphabets, 20 drawings each.

The background set (964 characters, 30 alphabets) is for training, the evaluation set
(659 characters, 20 alphabets) for testing. Each set is read from the first of these found
under ``root`` (``<set>`` is ``background`` or ``evaluation``):

1. ``images_<set>.npz``: ``images`` bool (characters, 20, 105, 105), True = white background,
   and ``labels`` (characters, 20). Character ``c`` is Omniglot id ``c + 1`` in the background
   set and ``c + 965`` in the evaluation set; ``alphabet_ranges.csv``
   (``first_char_id,last_char_id,alphabet,set``) beside it names their alphabets.
2. ``images_<set>.zip``, the official archive: ``images_<set>/<Alphabet>/characterNN/*.png``,
   105x105 1-bit PNGs of black strokes on white; read in place, not extracted.
3. ``images_<set>/<Alphabet>/characterNN/*.png``, the extracted archive (or ``root`` itself
   being that folder).

Images come out as uint8 (n, 1, 105, 105) with white strokes (255) on black (0), in classes
named ``<Alphabet>/characterNN``.
"""

from __future__ import annotations

import csv
import io
import os
import zipfile
from collections import defaultdict
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from mtgan.data.base import ClassDataset
from mtgan.data.idx import check_download
from mtgan.data.safe import CORRUPT_ERRORS, require_folder
from mtgan.errors import DataError

SPLITS = {
    "background": "background",
    "train": "background",
    "evaluation": "evaluation",
    "test": "evaluation",
}
FIRST_ID = {"background": 1, "evaluation": 965}
_READ_ERRORS = (*CORRUPT_ERRORS, OSError)


def load_omniglot(root: str | os.PathLike, split: str = "background") -> ClassDataset:
    """One Omniglot set from ``root`` in any of the three layouts above.

    Args:
        root: the folder holding the npz files, the zips or the extracted folders.
        split: ``background`` (or ``train``) or ``evaluation`` (or ``test``).

    Returns:
        a ClassDataset of uint8 (20, 1, 105, 105) images per character, white on black.
    """
    if split not in SPLITS:
        raise DataError(f"omniglot: unknown split {split!r}; use background or evaluation")
    part = SPLITS[split]
    root = require_folder(root, "omniglot: folder", "download Omniglot there")
    stem = f"images_{part}"
    if (root / f"{stem}.npz").exists():
        return _load_npz(root / f"{stem}.npz", part)
    if (root / f"{stem}.zip").exists():
        return _load_zip(root / f"{stem}.zip")
    if (root / stem).is_dir():
        return _load_tree(root / stem)
    if root.name == stem or (not root.name.startswith("images_") and _is_alphabet_tree(root)):
        return _load_tree(root)
    raise DataError(
        f"omniglot: no {part} set in {root}; put {stem}.npz, {stem}.zip or the extracted "
        f"{stem}/ folder there (from github.com/brendenlake/omniglot)"
    )


def _load_npz(path: Path, part: str) -> ClassDataset:
    """The npz layout: a bool array, True = white background, inverted to white ink."""
    check_download(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            images = data["images"]
    except _READ_ERRORS as e:
        raise DataError(f"{path} is truncated or corrupt ({e}); download it again") from None
    if not isinstance(images, np.ndarray) or images.ndim != 4 or images.dtype != np.bool_:
        raise DataError(
            f"{path}: 'images' is {getattr(images, 'dtype', type(images).__name__)} "
            f"{getattr(images, 'shape', '')}, expected bool (characters, drawings, height, width)"
        )
    ink = np.logical_not(images).view(np.uint8)
    ink *= 255
    names = _character_names(path.parent / "alphabet_ranges.csv", part, len(ink))
    return ClassDataset("omniglot", {n: ink[c, :, None] for c, n in enumerate(names)})


def _character_names(csv_path: Path, part: str, count: int) -> list[str]:
    """``<Alphabet>/characterNN`` from ``alphabet_ranges.csv``, else ``character<id>``."""
    ids = range(FIRST_ID[part], FIRST_ID[part] + count)
    if not csv_path.is_file():
        return [f"character{i}" for i in ids]
    try:
        with open(csv_path, newline="") as f:
            rows = [
                (int(r["first_char_id"]), int(r["last_char_id"]), r["alphabet"])
                for r in csv.DictReader(f)
            ]
    except (KeyError, ValueError, TypeError) as e:
        raise DataError(
            f"{csv_path} is malformed ({e}); it needs first_char_id,last_char_id,alphabet,set"
        ) from None
    names = []
    for i in ids:
        match = [(first, alphabet) for first, last, alphabet in rows if first <= i <= last]
        if not match:
            raise DataError(f"{csv_path} names no alphabet for character id {i}")
        first, alphabet = match[0]
        names.append(f"{alphabet}/character{i - first + 1:02d}")
    return names


def _load_zip(path: Path) -> ClassDataset:
    """The official archive, read member by member without extracting it."""
    check_download(path)
    try:
        with zipfile.ZipFile(path) as zf:
            members: dict[str, list[str]] = defaultdict(list)
            for info in zf.infolist():
                parts = PurePosixPath(info.filename).parts
                if info.is_dir() and len(parts) == 3:
                    members.setdefault("/".join(parts[1:]), [])
                elif len(parts) == 4 and parts[3].lower().endswith(".png"):
                    members["/".join(parts[1:3])].append(info.filename)
            images = {
                cls: np.stack([_read_png(zf.read(m), f"{path}:{m}") for m in sorted(files)])
                for cls, files in sorted(members.items())
                if _nonempty(files, f"{path}:{cls}")
            }
    except _READ_ERRORS as e:
        raise DataError(f"{path} is truncated or corrupt ({e}); download it again") from None
    if not images:
        raise DataError(f"{path} holds no <Alphabet>/characterNN/*.png images")
    return ClassDataset("omniglot", images)


def _load_tree(folder: Path) -> ClassDataset:
    """The extracted archive: ``folder/<Alphabet>/characterNN/*.png``."""
    images = {}
    for alphabet in _subdirs(folder):
        for character in _subdirs(alphabet):
            files = sorted(p for p in character.iterdir() if p.suffix.lower() == ".png")
            _nonempty(files, str(character))
            images[f"{alphabet.name}/{character.name}"] = np.stack(
                [_read_png(p.read_bytes(), str(p)) for p in files]
            )
    if not images:
        raise DataError(f"{folder} holds no <Alphabet>/characterNN/*.png images")
    return ClassDataset("omniglot", images)


def _nonempty(files: list, where: str) -> bool:
    """True, or a DataError naming the character folder that holds no PNG drawings."""
    if not files:
        raise DataError(f"character folder {where} holds no PNG drawings; extract it again")
    return True


def _read_png(data: bytes, where: str) -> np.ndarray:
    """One drawing, black strokes on white, as uint8 (1, H, W) white strokes on black."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            grey = np.asarray(img.convert("L"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise DataError(f"{where} is not a readable PNG ({e})") from None
    return (255 - grey)[None]


def _subdirs(folder: Path) -> list[Path]:
    """The visible subfolders of ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _is_alphabet_tree(folder: Path) -> bool:
    """Whether ``folder`` looks like ``<Alphabet>/characterNN/`` folders."""
    return any(_subdirs(a) for a in _subdirs(folder))
