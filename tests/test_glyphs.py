"""Tests of the glyphs dataset: images, determinism, cache, homoglyphs and font exclusion."""

from __future__ import annotations

import os
import re
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from fontTools.ttLib import TTFont
from PIL import Image, ImageDraw, ImageFont

import mtgan.data.glyphs as glyphs_module
from mtgan.data.glyphs import find_fonts, load_glyphs
from mtgan.errors import DataError

MPL_FONTS = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
SMALL_FONTS = [
    str(MPL_FONTS / f"DejaVu{family}{style}.ttf")
    for family in ("Sans", "Serif")
    for style in ("", "-Bold", "-Oblique" if family == "Sans" else "-Italic")
]
SMALL = dict(image_size=16, per_class=3, min_faces=5, fonts=SMALL_FONTS)


def _codepoint(name: str) -> int:
    return int(name.split()[0][2:], 16)


def _stack(ds) -> np.ndarray:
    return np.stack([ds.images_of(c).numpy() for c in ds.classes])


def _no_render(*args, **kwargs):
    raise AssertionError("rendered although the cache holds the dataset")


@pytest.fixture(scope="module")
def default(tmp_path_factory):
    """The dataset with the default settings and fonts (rendered once, ~10 s)."""
    return load_glyphs(cache_dir=tmp_path_factory.mktemp("default-cache"))


@pytest.fixture(scope="module")
def small_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("small-cache")


@pytest.fixture(scope="module")
def small(small_cache):
    """A quick dataset from six DejaVu faces."""
    return load_glyphs(cache_dir=small_cache, **SMALL)


def test_default_settings_give_hundreds_of_classes(default):
    assert len(default.classes) >= 200
    assert default.name == "glyphs"


def test_images_are_uint8_squares_with_exactly_per_class_images(default):
    for cls in default.classes:
        images = default.images_of(cls)
        assert images.dtype.is_floating_point is False
        assert str(images.dtype) == "torch.uint8"
        assert tuple(images.shape) == (20, 1, 32, 32)


def test_small_settings_are_honoured(small):
    assert {tuple(small.images_of(c).shape) for c in small.classes} == {(3, 1, 16, 16)}


def test_class_names_are_sorted_code_points_with_their_character(default):
    codepoints = [_codepoint(c) for c in default.classes]
    assert codepoints == sorted(set(codepoints))
    for name in default.classes:
        assert re.fullmatch(r"U\+[0-9A-F]{4,6} .", name)
        assert name[-1] == chr(_codepoint(name))
    latin = {chr(c) for c in codepoints if c < 0x7F}
    assert set("ABCXYZabcxyz0123456789?&") <= latin


def test_glyphs_are_white_on_black_centred_and_not_blank(default):
    x = _stack(default)[:, :, 0].reshape(-1, 32, 32)
    assert x.min() == 0 and x.max() == 255
    corners = x[:, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners == 0).all(axis=1).mean() > 0.99  # black background
    assert (x.reshape(len(x), -1).max(axis=1) >= 128).all()  # some full-strength ink
    border = np.concatenate([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], axis=1)
    assert (border.max(axis=1) > 64).mean() < 0.01  # glyphs stay inside the frame
    for image in x[::97]:
        rows, cols = np.nonzero(image > 0)  # the whole ink box, faint strokes included
        centre = ((rows.min() + rows.max()) / 2, (cols.min() + cols.max()) / 2)
        assert np.allclose(centre, 15.5, atol=3.5)


def test_images_within_a_class_vary(default):
    x = _stack(default)
    differs = (x != x[:, :1]).any(axis=(2, 3, 4))  # class, image: unlike the class's first
    assert differs[:, 1:].all(), np.array(default.classes)[~differs[:, 1:].all(axis=1)]
    assert x.astype(np.float32).std(axis=1).mean() > 10  # not just a pixel here and there


def test_known_homoglyphs_keep_only_the_latin_letter(default):
    classes = {chr(_codepoint(c)) for c in default.classes}
    # Latin, then Greek and Cyrillic look-alikes
    groups = ["AΑА", "BΒВ", "EΕЕ", "HΗН", "IΙІ", "MΜМ", "OΟО", "PΡР", "TΤТ", "XΧХ", "aа", "cс"]
    groups += ["eе", "oοо", "pр", "xх", "jј", "sѕ", "SЅ", "JЈ"]
    for group in groups:
        assert classes & set(group) == {group[0]}, group
    assert "Б" in classes and "λ" in classes  # not every Greek or Cyrillic letter goes


def _views(codepoints: list[int], font_file: str, em: int = 32) -> dict[int, np.ndarray]:
    """Each covered character drawn at a fixed size, centred by its ink box (no fitting)."""
    cmap = TTFont(font_file).getBestCmap()
    font = ImageFont.truetype(font_file, em)
    views = {}
    for cp in codepoints:
        canvas = Image.new("L", (3 * em, 3 * em))
        ImageDraw.Draw(canvas).text((em, em), chr(cp), fill=255, font=font)
        box = canvas.getbbox()
        if cp in cmap and box is not None:
            ink = canvas.crop(box)
            view = Image.new("L", (2 * em, 2 * em))
            view.paste(ink, (em - ink.width // 2, em - ink.height // 2))
            views[cp] = np.asarray(view, np.float32).ravel() / 255
    return views


def _identical_share(codepoints: list[int]) -> np.ndarray:
    """For each pair, the share of six matplotlib faces drawing both that draw them identically
    (0 where fewer than 3 faces draw both)."""
    faces = ["DejaVuSans", "DejaVuSerif", "DejaVuSansMono", "DejaVuSans-Bold"]
    faces += ["DejaVuSerif-Italic", "STIXGeneral"]
    index = {cp: i for i, cp in enumerate(codepoints)}
    same = np.zeros((len(codepoints),) * 2)
    shared = np.zeros_like(same)
    for face in faces:
        views = _views(codepoints, str(MPL_FONTS / f"{face}.ttf"))
        rows = [index[cp] for cp in views]
        x = np.stack(list(views.values()))
        sq = (x * x).sum(1)
        diff = 1 - 2 * (x @ x.T) / (sq[:, None] + sq[None, :])
        same[np.ix_(rows, rows)] += diff < 0.01
        shared[np.ix_(rows, rows)] += 1
    share = np.where(shared >= 3, same / np.maximum(shared, 1), 0)
    np.fill_diagonal(share, 0)
    return share


def test_no_two_classes_are_drawn_alike(default):
    # the checker itself sees homoglyphs ...
    probe = _identical_share([ord(c) for c in "AΑАoοоBВ"])
    assert probe[0, 1] >= 0.6 and probe[0, 2] >= 0.6 and probe[3, 5] >= 0.6
    # ... and finds none among the classes
    codepoints = [_codepoint(c) for c in default.classes]
    share = _identical_share(codepoints)
    worst = np.unravel_index(share.argmax(), share.shape)
    pair = "".join(chr(codepoints[i]) for i in worst)
    assert share.max() < 0.6, f"{pair} drawn alike in {share.max():.0%} of faces"


def test_same_seed_gives_the_same_images_and_another_seed_others(small, tmp_path):
    again = load_glyphs(cache_dir=tmp_path / "a", **SMALL)
    other = load_glyphs(cache_dir=tmp_path / "b", **{**SMALL, "seed": 1})
    assert again.classes == small.classes == other.classes
    assert np.array_equal(_stack(again), _stack(small))
    assert not np.array_equal(_stack(other), _stack(small))


def test_cache_hit_reads_the_file(small, small_cache, monkeypatch):
    files = list(Path(small_cache).glob("*.npz"))
    assert len(files) == 1 and not list(Path(small_cache).glob("*.tmp"))
    monkeypatch.setattr(glyphs_module, "_render", _no_render)
    cached = load_glyphs(cache_dir=small_cache, **SMALL)
    assert cached.classes == small.classes
    assert np.array_equal(_stack(cached), _stack(small))
    monkeypatch.setenv("MTGAN_CACHE", str(small_cache))  # the default folder
    assert load_glyphs(**SMALL).classes == small.classes


def test_corrupt_cache_file_is_rendered_again(small, small_cache):
    (path,) = Path(small_cache).glob("*.npz")
    path.write_bytes(path.read_bytes()[:1000])
    recovered = load_glyphs(cache_dir=small_cache, **SMALL)
    assert np.array_equal(_stack(recovered), _stack(small))
    with np.load(path) as data:  # and the file is whole again
        assert data["images"].shape[0] == len(small.classes)


def test_find_fonts_leaves_out_symbol_and_placeholder_fonts():
    fonts = find_fonts()
    names = {Path(f).name for f in fonts}
    assert {"cmr10.ttf", "STIXGeneral.ttf", "DejaVuSerif-Bold.ttf"} <= names
    assert (MPL_FONTS / "LastResortHE-Regular.ttf").exists()
    excluded = re.compile(r"LastResort|cmex10|cmsy10|STIXSiz|STIXNonUni|D050000L|Symbol", re.I)
    assert not [n for n in names if excluded.search(n)]
    assert len(fonts) == len(set(fonts))
    dejavu = [f for f in fonts if Path(f).name == "DejaVuSans.ttf"]
    assert len(dejavu) == 1 and Path(dejavu[0]).parent == MPL_FONTS.resolve()  # matplotlib's copy


def test_excluded_fonts_given_explicitly_are_not_used():
    symbol = [MPL_FONTS / n for n in ("LastResortHE-Regular.ttf", "cmsy10.ttf", "cmex10.ttf")]
    symbol += [MPL_FONTS / "STIXSizOneSymReg.ttf", MPL_FONTS / "DejaVuSans.ttf"]
    with pytest.raises(DataError, match="1 usable font"):
        load_glyphs(fonts=[str(p) for p in symbol])


def test_glyphs_that_a_face_names_as_another_character_do_not_count(tmp_path):
    # cmr10, cmb10, cmss10 and cmti10 draw ¡ at "<"; cmmi10 draws a triangle at "."
    cm = [str(MPL_FONTS / f"cm{n}10.ttf") for n in ("r", "b", "ss", "ti", "tt", "mi")]
    ds = load_glyphs(image_size=8, per_class=1, min_faces=5, cache_dir=tmp_path, fonts=cm)
    assert "U+0041 A" in ds.classes and "U+002E ." in ds.classes
    assert "U+003C <" not in ds.classes and "U+005C \\" not in ds.classes


def test_too_few_fonts_or_no_class_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="usable font"):
        load_glyphs(cache_dir=tmp_path, fonts=[str(MPL_FONTS / "DejaVuSans.ttf")])
    with pytest.raises(DataError, match="no character"):
        load_glyphs(cache_dir=tmp_path, min_faces=99, fonts=SMALL_FONTS)
    assert not os.listdir(tmp_path)
