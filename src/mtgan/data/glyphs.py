"""Glyphs: the embedded few-shot dataset, rendered from the fonts on this machine.

Each class is one character (a Unicode code point) and each image of a class is that
character drawn by one font face, so a class's images differ in style (serif, sans,
monospace, italic, bold ...) but not in identity, which is what few-shot generation needs.
Nothing is downloaded: matplotlib's wheel ships DejaVu, STIX and Computer Modern faces, and
any fonts found on the system (``fc-list``, or the usual font folders) add more.

How the dataset is made:

* Fonts: symbol fonts that put other pictures on letter code points, size variants and
  placeholder fonts (LastResort) are left out, and so is every face's mapping of a code
  point to a glyph whose name says it is another character (the Computer Modern fonts put
  TeX's encoding on ASCII, e.g. ``<`` is drawn as ``¡``). Coverage comes from the font's
  cmap (fontTools), never from Pillow, which draws a box for a missing glyph; a glyph that
  renders blank does not count either.
* Characters: letters, digits, punctuation and symbols of the Latin, Greek, Cyrillic,
  Armenian, Hebrew and Georgian scripts and of some symbol blocks, without precomposed
  (accented) or compatibility characters. A character is a class when at least
  ``min_faces`` faces cover it. Homoglyphs (Latin A, Greek Alpha, Cyrillic A; Latin o and
  Greek omicron ...) are found by comparing their renderings in the faces that cover both;
  of each such group only the character most faces cover (then the lowest code point) is
  kept, which is the Latin letter where there is one.
* Images: grayscale uint8, white glyph (255) on black (0), ``image_size`` square. The glyph
  is drawn at four times the size, centred by its ink bounding box and scaled so that it
  fits in 72% of the square; glyphs smaller than a capital letter (``.``, ``-``, ``o``) are
  not magnified beyond a capital's scale, so that they keep their size relative to the
  others. Each image gets a small random rotation, scale, shift and stroke weight, then is
  downsampled with a box filter. A class's ``per_class`` images cycle through its faces in a
  seeded random order.

The result is cached as an ``.npz`` file under ``$MTGAN_CACHE``, else
``$XDG_CACHE_HOME/mtgan``, else ``~/.cache/mtgan``, keyed by the fonts (path, size, mtime),
the repertoire, the settings and the renderer's versions.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
import unicodedata
import warnings
import zipfile
import zlib
from collections import Counter
from pathlib import Path

import fontTools
import numpy as np
import PIL
from fontTools import agl
from fontTools.ttLib import TTFont, TTLibError
from PIL import Image, ImageDraw, ImageFont, features

from mtgan.data.base import ClassDataset
from mtgan.errors import DataError
from mtgan.files import cache_dir as default_cache_dir

FORMAT_VERSION = 1

FONT_SUFFIXES = (".ttf", ".otf", ".ttc")
SYSTEM_FONT_DIRS = (
    "/usr/share/fonts",
    "/usr/local/share/fonts",
    "~/.fonts",
    "~/.local/share/fonts",
)
# Lower-case substrings of a font's file name or family/PostScript name that mark it as a
# symbol, size-variant or placeholder font (spaces, hyphens and underscores removed).
EXCLUDED_FONTS = (
    "lastresort",
    "d050000l",
    "dingbats",
    "symbol",
    "cmex10",
    "cmsy10",
    "stixsiz",
    "stixnonuni",
    "wingdings",
    "webdings",
    "marlett",
    "emoji",
    "notomusic",
)
OPAQUE_GLYPH_NAME = re.compile(r"(cid|glyph|gid|g|index)\d+")
# Unicode blocks the classes are drawn from (inclusive ranges).
BLOCKS = (
    (0x0021, 0x007E),  # Basic Latin
    (0x00A1, 0x024F),  # Latin-1 Supplement, Latin Extended-A and -B
    (0x0370, 0x03FF),  # Greek
    (0x0400, 0x04FF),  # Cyrillic
    (0x0531, 0x058A),  # Armenian
    (0x05D0, 0x05EA),  # Hebrew
    (0x10A0, 0x10FF),  # Georgian
    (0x2010, 0x205E),  # General Punctuation
    (0x20A0, 0x20C0),  # Currency Symbols
    (0x2100, 0x214F),  # Letterlike Symbols
    (0x2190, 0x21FF),  # Arrows
    (0x2200, 0x22FF),  # Mathematical Operators
    (0x25A0, 0x25FF),  # Geometric Shapes
    (0x2600, 0x26FF),  # Miscellaneous Symbols
)

OVERSAMPLE = 4  # glyphs are drawn at this multiple of the image size, then box-downsampled
FILL = 0.72  # the share of the image side that an unjittered glyph's larger side spans
CAP_EM = 0.7  # glyphs smaller than this share of the em are scaled like one this big
ANALYSIS_SIZE = 16  # image side for the coverage and homoglyph checks
HOMOGLYPH_DIFF = 0.02  # normalised squared difference below which two views are the same
HOMOGLYPH_SHARE = 0.5  # two characters look alike when this share of their faces draw them same
MAX_ROTATION = 4.0  # degrees
MAX_SCALE = 0.1  # relative
MAX_SHIFT = 1.5 / 32  # of the image side
STROKES = (-1, 0, 1, 2)  # stroke weight changes: pixels of the oversampled image per side
MIN_LIGHTENED = 0.6  # share of the ink that lightening must keep (hairline faces stay as they are)


def find_fonts() -> list[str]:
    """The usable font files: matplotlib's and the system's, symbol and placeholder fonts left out.

    A file is usable when fontTools reads it, it has outlines and a Unicode cmap, and its name
    matches none of ``EXCLUDED_FONTS``. Of several files with the same PostScript name (the
    same face installed twice) matplotlib's copy is kept, else the first path. For a collection
    (``.ttc``) the first face is used.

    Returns:
        Absolute paths, ordered by PostScript name (so the same fonts give the same dataset
        wherever the environment lies).

    Example:
        >>> fonts = find_fonts()
        >>> any(Path(f).name == "DejaVuSans.ttf" for f in fonts)
        True
    """
    return _usable_fonts(_matplotlib_font_files() + _system_font_files())


def load_glyphs(
    image_size: int = 32,
    per_class: int = 20,
    min_faces: int = 6,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    fonts: list[str] | None = None,
) -> ClassDataset:
    """The glyphs dataset: one class per character, one image per (face, jitter) draw.

    The first call renders it (seconds) and caches it; later calls read the cache.

    Args:
        image_size: side of the square images, in pixels.
        per_class: images per class.
        min_faces: a character is a class only when at least this many faces cover it.
        seed: seed of the face order and the jitter; the same seed gives the same images.
        cache_dir: folder of the cache file; default ``$MTGAN_CACHE``, else
            ``$XDG_CACHE_HOME/mtgan``, else ``~/.cache/mtgan``.
        fonts: font files to use instead of ``find_fonts()`` (unusable ones are left out).

    Returns:
        ``ClassDataset("glyphs", ...)`` with classes such as ``"U+0041 A"``, sorted by code
        point, each a uint8 array (per_class, image_size, image_size).

    Raises:
        DataError: fewer than 2 usable fonts, or no character covered by min_faces faces.

    Example:
        >>> ds = load_glyphs(image_size=16, per_class=4)
        >>> ds.classes[0], tuple(ds.images_of("U+0041 A").shape)
        ('U+0021 !', (4, 1, 16, 16))
    """
    if image_size < 4 or per_class < 1 or min_faces < 1:
        raise DataError(
            f"glyphs: need image_size >= 4, per_class >= 1, min_faces >= 1, got "
            f"{image_size}, {per_class}, {min_faces}"
        )
    paths = _usable_fonts(fonts) if fonts is not None else find_fonts()
    if len(paths) < 2:
        raise DataError(f"glyphs: found {len(paths)} usable font(s), need at least 2")
    settings = dict(image_size=image_size, per_class=per_class, min_faces=min_faces, seed=seed)
    path = _cache_file(cache_dir, paths, settings)
    cached = _read_cache(path, per_class, image_size)
    if cached is None:
        cached = _render(paths, image_size, per_class, min_faces, seed)
        _write_cache(path, *cached)
    codepoints, images = cached
    return ClassDataset(
        "glyphs", {_class_name(c): im for c, im in zip(codepoints, images, strict=True)}
    )


# ---------------------------------------------------------------------------- font discovery


def _matplotlib_font_files() -> list[str]:
    """The .ttf files that ship with matplotlib."""
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return [str(p) for p in folder.glob("*") if p.suffix.lower() in FONT_SUFFIXES]


def _system_font_files() -> list[str]:
    """Font files that fontconfig lists, or that lie in the usual font folders."""
    if shutil.which("fc-list"):
        try:
            out = subprocess.run(
                ["fc-list", ":", "file"], capture_output=True, text=True, timeout=30, check=True
            ).stdout
            files = [line.split(":")[0].strip() for line in out.splitlines()]
            return [f for f in files if f.lower().endswith(FONT_SUFFIXES)]
        except (OSError, subprocess.SubprocessError):
            pass
    files = []
    for folder in SYSTEM_FONT_DIRS:
        for root, _, names in os.walk(os.path.expanduser(folder)):
            files += [os.path.join(root, n) for n in names if n.lower().endswith(FONT_SUFFIXES)]
    return files


def _usable_fonts(paths: list[str]) -> list[str]:
    """Absolute paths of the usable fonts, one file per PostScript name, ordered by that name.

    Of two copies of a face, matplotlib's wins, so that the dataset does not depend on where
    the virtual environment lies.
    """
    import matplotlib

    mpl = os.path.realpath(matplotlib.get_data_path())
    by_name: dict[str, str] = {}
    for path in sorted(
        {os.path.realpath(p) for p in paths}, key=lambda p: (not p.startswith(mpl), p)
    ):
        name = _usable_face_name(path)
        if name is not None:
            by_name.setdefault(name, path)
    return [by_name[name] for name in sorted(by_name)]


def _usable_face_name(path: str) -> str | None:
    """The face's PostScript name, or None when the file is unreadable, bitmap-only,
    without a Unicode cmap, or excluded by name."""
    try:
        with TTFont(path, fontNumber=0, lazy=True) as font:
            names = [font["name"].getDebugName(i) or "" for i in (1, 4, 6)]
            outlines = any(t in font for t in ("glyf", "CFF ", "CFF2"))
            unicode_cmap = any(t.isUnicode() for t in font["cmap"].tables)
    except (OSError, TTLibError, KeyError, AssertionError, ValueError):
        return None
    keys = [Path(path).name, *names]
    if any(_squash(ex) in _squash(k) for k in keys for ex in EXCLUDED_FONTS):
        return None
    return (names[2] or names[1] or Path(path).stem) if outlines and unicode_cmap else None


def _squash(text: str) -> str:
    return text.lower().replace(" ", "").replace("-", "").replace("_", "")


# ----------------------------------------------------------------------------- characters


def _repertoire() -> list[int]:
    """Code points of the candidate classes: graphic characters of BLOCKS that are neither
    precomposed, compatibility nor modifier characters (ASCII is kept whole)."""
    return [
        cp
        for lo, hi in BLOCKS
        for cp in range(lo, hi + 1)
        if cp < 0x7F or _is_base_character(chr(cp))
    ]


def _is_base_character(ch: str) -> bool:
    category = unicodedata.category(ch)
    return (
        category[0] in "LNPS" and category not in ("Lm", "Sk") and not unicodedata.decomposition(ch)
    )


def _class_name(codepoint: int) -> str:
    return f"U+{codepoint:04X} {chr(codepoint)}"


def _coverage(path: str, repertoire: set[int]) -> set[int]:
    """The code points of the repertoire whose glyph in this face is named as that character
    (or has a name that says nothing, e.g. ``glyph12``)."""
    with TTFont(path, fontNumber=0, lazy=True) as font:
        cmap = font.getBestCmap() or {}
        return {
            cp
            for cp, glyph in cmap.items()
            if cp in repertoire and glyph != ".notdef" and _name_agrees(glyph, cp)
        }


def _name_agrees(glyph: str, codepoint: int) -> bool:
    """Whether a glyph's name says it is the character of the code point mapped to it.

    A name that the Adobe Glyph List decodes must decode to the character (up to NFKC);
    any other name must be a tool-made index such as ``cid01234`` or ``glyph12``: a
    descriptive name unknown to the list (``triangleright`` on ``.`` in cmmi10) is a glyph
    for something else.
    """
    named = agl.toUnicode(glyph)
    if not named:
        return OPAQUE_GLYPH_NAME.fullmatch(glyph) is not None
    nfkc = unicodedata.normalize
    return nfkc("NFKC", named) == nfkc("NFKC", chr(codepoint))


# ------------------------------------------------------------------------------ rendering


def _font(path: str, em: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, em, index=0, layout_engine=ImageFont.Layout.BASIC)


def _glyph(font: ImageFont.FreeTypeFont, ch: str) -> Image.Image | None:
    """The character's ink, cropped to its bounding box; None when it is blank."""
    left, top, right, bottom = font.getbbox(ch)
    if right <= left or bottom <= top:
        return None
    canvas = Image.new("L", (right - left + 2, bottom - top + 2))
    ImageDraw.Draw(canvas).text((1 - left, 1 - top), ch, fill=255, font=font)
    box = canvas.getbbox()
    return canvas.crop(box) if box else None


def _place(
    glyph: Image.Image, em: int, size: int, rng: np.random.Generator | None = None
) -> np.ndarray:
    """The glyph centred and scaled into a size x size uint8 image (drawn at OVERSAMPLE times
    the size); with rng, randomly rotated, scaled, shifted and made bolder or lighter."""
    big = size * OVERSAMPLE
    w, h = glyph.size
    scale = FILL * big / max(w, h, CAP_EM * em)
    angle, shift, stroke = 0.0, (0.0, 0.0), 0
    if rng is not None:
        angle = math.radians(rng.uniform(-MAX_ROTATION, MAX_ROTATION))
        scale *= 1 + rng.uniform(-MAX_SCALE, MAX_SCALE)
        shift = tuple(rng.uniform(-MAX_SHIFT, MAX_SHIFT, 2) * big)
        stroke = STROKES[rng.integers(len(STROKES))]
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    cx, cy = big / 2 + shift[0], big / 2 + shift[1]
    inverse = (cos, sin, w / 2 - cos * cx - sin * cy, -sin, cos, h / 2 + sin * cx - cos * cy)
    image = glyph.transform((big, big), Image.Transform.AFFINE, inverse, Image.Resampling.BILINEAR)
    if stroke:
        image = Image.fromarray(_reweight(np.asarray(image), stroke))
    return np.asarray(image.resize((size, size), Image.Resampling.BOX))


def _reweight(image: np.ndarray, radius: int) -> np.ndarray:
    """The glyph made bolder (radius > 0) or lighter (radius < 0); a glyph that lightening
    would wipe out (keeping less than MIN_LIGHTENED of its ink) is left as it is."""
    out = _morph(image, radius)
    if radius < 0 and out.sum(dtype=np.int64) < MIN_LIGHTENED * image.sum(dtype=np.int64):
        return image
    return out


def _morph(image: np.ndarray, radius: int) -> np.ndarray:
    """Grey dilation (radius > 0) or erosion (radius < 0) by a square of side 2|radius| + 1."""
    op, r = (np.maximum, radius) if radius > 0 else (np.minimum, -radius)
    h, w = image.shape
    padded = np.pad(image, r)
    rows = op.reduce([padded[i : i + h] for i in range(2 * r + 1)])
    return op.reduce([rows[:, j : j + w] for j in range(2 * r + 1)])


def _render(
    paths: list[str], image_size: int, per_class: int, min_faces: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Code points (K,) and images (K, per_class, image_size, image_size) of the classes."""
    faces = _select_classes(paths, min_faces)
    if not faces:
        raise DataError(f"glyphs: no character is covered by {min_faces} of the {len(paths)} fonts")
    em = image_size * OVERSAMPLE
    fonts = [_font(p, em) for p in paths]
    codepoints = sorted(faces)
    images = np.stack(
        [
            _render_class(cp, [fonts[i] for i in faces[cp]], em, image_size, per_class, seed)
            for cp in codepoints
        ]
    )
    return np.array(codepoints, dtype=np.int32), images


def _render_class(
    codepoint: int,
    fonts: list[ImageFont.FreeTypeFont],
    em: int,
    size: int,
    per_class: int,
    seed: int,
) -> np.ndarray:
    """per_class jittered images of one character, cycling through its faces in random order."""
    rng = np.random.default_rng([seed, codepoint])
    glyphs = []
    for face in rng.permutation(len(fonts)):
        glyph = _glyph(fonts[face], chr(codepoint))
        glyphs += [glyph] if glyph is not None else []
        if len(glyphs) == per_class:
            break
    return np.stack([_place(glyphs[i % len(glyphs)], em, size, rng) for i in range(per_class)])


# ------------------------------------------------------------------------ class selection


def _select_classes(paths: list[str], min_faces: int) -> dict[int, list[int]]:
    """Code point -> indices of the faces that draw it, for the characters that at least
    min_faces faces draw (non-blank), homoglyphs removed."""
    views = _canonical_views(paths, min_faces)
    kept = _drop_homoglyphs(views, len(paths)) if views else []
    return {cp: sorted(views[cp]) for cp in kept}


def _canonical_views(paths: list[str], min_faces: int) -> dict[int, dict[int, np.ndarray]]:
    """Code point -> face index -> the unjittered ANALYSIS_SIZE image, for the characters of
    the repertoire that at least min_faces faces draw (blank renderings do not count)."""
    repertoire = set(_repertoire())
    covers = [_coverage(p, repertoire) for p in paths]
    counts = Counter(cp for covered in covers for cp in covered)
    em = ANALYSIS_SIZE * OVERSAMPLE
    views: dict[int, dict[int, np.ndarray]] = {}
    for face, (path, covered) in enumerate(zip(paths, covers, strict=True)):
        font = _font(path, em)
        for cp in (cp for cp in covered if counts[cp] >= min_faces):
            glyph = _glyph(font, chr(cp))
            if glyph is not None:
                views.setdefault(cp, {})[face] = _place(glyph, em, ANALYSIS_SIZE)
    return {cp: v for cp, v in views.items() if len(v) >= min_faces}


def _drop_homoglyphs(views: dict[int, dict[int, np.ndarray]], n_faces: int) -> list[int]:
    """The code points left after removing homoglyphs: of characters that look alike, the
    one most faces draw is kept (then the lowest code point), so Latin wins over Greek and
    Cyrillic, and Cyrillic over rare Latin letters such as U+0182 (a B with a top bar).

    Two characters look alike when they are drawn (nearly) the same in at least half of the
    faces that draw both: their canonical views a, b differ by
    ``|a - b|^2 / (|a|^2 + |b|^2) < HOMOGLYPH_DIFF`` (0 for equal views, 1 for disjoint ones).
    """
    codepoints = sorted(views)
    n = len(codepoints)
    drawn = np.array([[f in views[cp] for f in range(n_faces)] for cp in codepoints])
    shared = drawn.astype(np.float32) @ drawn.T.astype(np.float32)
    same = np.zeros(n * n, np.int32)
    for face in range(n_faces):
        rows = np.flatnonzero(drawn[:, face])
        x = np.array([views[codepoints[r]][face].ravel() for r in rows], np.float32) / 255
        sq = (x * x).sum(1)
        diff = 1 - 2 * (x @ x.T) / (sq[:, None] + sq[None, :])
        i, j = np.nonzero(diff < HOMOGLYPH_DIFF)
        np.add.at(same, rows[i] * n + rows[j], 1)
    same = same.reshape(n, n)
    alike = (shared > 0) & (same >= HOMOGLYPH_SHARE * shared)
    faces = [len(views[cp]) for cp in codepoints]
    kept: list[int] = []
    for i in sorted(range(n), key=lambda i: (-faces[i], codepoints[i])):
        if not alike[i, kept].any():
            kept.append(i)
    return sorted(codepoints[i] for i in kept)


# ---------------------------------------------------------------------------------- cache


def _cache_file(cache_dir: str | os.PathLike | None, paths: list[str], settings: dict) -> Path:
    """The cache file for these fonts and settings (its name is a hash of everything that
    changes the result)."""
    if cache_dir is None:
        cache_dir = default_cache_dir()
    stats = [(p, os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in paths]
    key = {
        "format": FORMAT_VERSION,
        "versions": [PIL.__version__, features.version("freetype2"), fontTools.version],
        "fonts": stats,
        "repertoire": _repertoire(),
        "settings": settings,
        "tuning": [OVERSAMPLE, FILL, CAP_EM, ANALYSIS_SIZE, HOMOGLYPH_DIFF, HOMOGLYPH_SHARE],
        "jitter": [MAX_ROTATION, MAX_SCALE, MAX_SHIFT, list(STROKES), MIN_LIGHTENED],
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return Path(cache_dir) / f"glyphs-{digest}.npz"


def _read_cache(path: Path, per_class: int, size: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached (code points, images), or None when the file is missing or malformed."""
    try:
        with np.load(path, allow_pickle=False) as data:
            codepoints, images = data["codepoints"], data["images"]
    except (
        OSError,
        ValueError,
        KeyError,
        EOFError,
        NotImplementedError,
        zipfile.BadZipFile,
        zlib.error,
    ):
        return None
    good = (
        codepoints.ndim == 1
        and codepoints.dtype.kind in "iu"
        and images.dtype == np.uint8
        and images.shape == (len(codepoints), per_class, size, size)
        and len(codepoints) > 0
    )
    return (codepoints, images) if good else None


def _write_cache(path: Path, codepoints: np.ndarray, images: np.ndarray) -> None:
    """Write the cache atomically (a temporary file in the same folder, then a rename); a
    folder that cannot be written only costs a warning."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as f:
            tmp = Path(f.name)
            np.savez_compressed(f, codepoints=codepoints, images=images)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        warnings.warn(f"glyphs: could not write the cache {path}: {e}", stacklevel=3)
        if tmp is not None:
            tmp.unlink(missing_ok=True)
