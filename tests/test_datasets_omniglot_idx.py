"""Omniglot and idx (MNIST-family) loaders: tiny files in the published formats, then real data."""

from __future__ import annotations

import gzip
import io
import struct
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from mtgan.data.idx import (
    FASHION_MNIST_DEBIAN,
    load_fashion_mnist,
    load_kmnist,
    load_mnist,
    load_notmnist,
    read_idx,
)
from mtgan.data.omniglot import load_omniglot
from mtgan.errors import DataError
from tests.conftest import SHARED_DATA

OMNIGLOT = SHARED_DATA / "omniglot"
MNIST = SHARED_DATA / "mnist"


def idx_bytes(array: np.ndarray) -> bytes:
    """An idx file of unsigned bytes: magic 0x000008DD, big-endian dims, then the data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_split(root, prefix, images, labels, compress=True):
    """``<prefix>-images-idx3-ubyte[.gz]`` and ``<prefix>-labels-idx1-ubyte[.gz]``."""
    for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
        data = idx_bytes(arr)
        name = f"{prefix}-{kind}-ubyte"
        if compress:
            (root / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (root / name).write_bytes(data)


def toy_idx(n=7, seed=0):
    """n random 28x28 images whose pixel (0, 0) holds their index, labels i % 3."""
    images = np.random.default_rng(seed).integers(0, 256, (n, 28, 28), dtype=np.uint8)
    images[:, 0, 0] = np.arange(n)
    return images, (np.arange(n) % 3).astype(np.uint8)


def png_1bit(strokes: np.ndarray) -> bytes:
    """A 1-bit PNG of black strokes (where ``strokes`` is True) on white, as Omniglot ships."""
    buf = io.BytesIO()
    Image.fromarray(~strokes).convert("1").save(buf, format="PNG")
    return buf.getvalue()


def toy_strokes(alphabet: int, character: int, drawing: int) -> np.ndarray:
    """A 105x105 drawing with a stroke whose row encodes (alphabet, character, drawing)."""
    strokes = np.zeros((105, 105), bool)
    strokes[10 * alphabet + 3 * character + drawing, 5:50] = True
    return strokes


TOY_TREE = {"Alpha": 2, "Beta": 1}  # alphabet -> characters, 2 drawings each


def toy_members():
    """(path inside images_background/, PNG bytes, strokes) of the toy alphabets."""
    for a, (alphabet, count) in enumerate(TOY_TREE.items()):
        for c in range(count):
            for d in range(2):
                strokes = toy_strokes(a, c, d)
                name = f"{alphabet}/character{c + 1:02d}/{c + 1:02d}{a}_{d + 1:02d}.png"
                yield name, png_1bit(strokes), strokes


def check_toy_omniglot(ds):
    """The toy alphabets came back inverted: white strokes on black."""
    assert ds.classes == ["Alpha/character01", "Alpha/character02", "Beta/character01"]
    imgs = ds.images_of("Alpha/character02")
    assert imgs.shape == (2, 1, 105, 105) and imgs.dtype == torch.uint8
    np.testing.assert_array_equal(imgs[1, 0].numpy(), toy_strokes(0, 1, 1) * 255)
    assert set(np.unique(imgs.numpy())) == {0, 255}


# --- idx ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
def test_idx_pixels_land_in_right_image_and_class(tmp_path, compress):
    images, labels = toy_idx()
    write_idx_split(tmp_path, "train", images, labels, compress)
    ds = load_mnist(tmp_path, "train")
    assert ds.classes == ["0", "1", "2"] and len(ds) == 7
    for cls in ds.classes:
        got = ds.images_of(cls).numpy()
        want = images[labels == int(cls)]
        assert got.shape == (len(want), 1, 28, 28)
        np.testing.assert_array_equal(got[:, 0], want)  # no inversion, original order
    assert ds.images_of("2")[1, 0, 0, 0] == 5


def test_idx_test_split_and_other_families(tmp_path):
    images, labels = toy_idx(10)
    labels = np.arange(10, dtype=np.uint8)
    write_idx_split(tmp_path, "t10k", images, labels)
    assert load_mnist(tmp_path, "test").classes == [str(d) for d in range(10)]
    assert load_kmnist(tmp_path, "test").classes[:4] == ["o", "ki", "su", "tsu"]
    assert load_notmnist(tmp_path, "test").classes == list("ABCDEFGHIJ")
    fashion = load_fashion_mnist(tmp_path, "test")
    assert fashion.classes[0] == "T-shirt/top" and fashion.classes[-1] == "Ankle boot"
    np.testing.assert_array_equal(fashion.images_of("Bag")[0, 0].numpy(), images[8])


def test_read_idx_labels(tmp_path):
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.array([3, 1, 4], np.uint8))))
    np.testing.assert_array_equal(read_idx(path), [3, 1, 4])


def test_idx_html_page(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(b"\n<!DOCTYPE html>\n<html><body>Moved</body></html>")
    with pytest.raises(DataError, match="is an HTML page, not the dataset"):
        read_idx(path)


def test_idx_truncated_gz(tmp_path):
    images, labels = toy_idx()
    write_idx_split(tmp_path, "train", images, labels)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz is truncated or corrupt"):
        load_mnist(tmp_path, "train")


def test_idx_short_data(tmp_path):
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(idx_bytes(np.zeros((3, 4, 4), np.uint8))[:-5])
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_idx(path)


def test_idx_wrong_magic(tmp_path):
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(b"\x1f\x00\x08\x03" + bytes(40))
    with pytest.raises(DataError, match="not an idx file"):
        read_idx(path)


def test_idx_missing_and_swapped_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_mnist(tmp_path / "nowhere", "train")
    images, labels = toy_idx()
    write_idx_split(tmp_path, "train", images, labels)
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz does not exist"):
        load_mnist(tmp_path, "test")
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
    with pytest.raises(DataError, match="labels 1"):
        load_mnist(tmp_path, "train")
    with pytest.raises(DataError, match="unknown split"):
        load_mnist(tmp_path, "validation")


def test_idx_count_mismatch(tmp_path):
    images, labels = toy_idx()
    write_idx_split(tmp_path, "train", images, labels[:5])
    with pytest.raises(DataError, match="has 7 images but"):
        load_mnist(tmp_path, "train")


# --- Omniglot ----------------------------------------------------------------------------------


def test_omniglot_zip(tmp_path):
    with zipfile.ZipFile(tmp_path / "images_background.zip", "w") as zf:
        zf.writestr("images_background/", b"")
        for name, data, _ in toy_members():
            zf.writestr(f"images_background/{name}", data)
    check_toy_omniglot(load_omniglot(tmp_path, "train"))


def write_tree(folder):
    for name, data, _ in toy_members():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)


def test_omniglot_folder_tree(tmp_path):
    write_tree(tmp_path / "images_evaluation")
    check_toy_omniglot(load_omniglot(tmp_path, "evaluation"))
    check_toy_omniglot(load_omniglot(tmp_path / "images_evaluation", "test"))


def test_omniglot_npz_with_and_without_alphabets(tmp_path):
    rng = np.random.default_rng(0)
    white = rng.random((3, 2, 105, 105)) > 0.1  # True = white background
    np.savez_compressed(tmp_path / "images_evaluation.npz", images=white, labels=np.zeros((3, 2)))
    ds = load_omniglot(tmp_path, "evaluation")
    assert ds.classes == ["character965", "character966", "character967"]
    np.testing.assert_array_equal(ds.images_of("character966")[1, 0].numpy(), ~white[1, 1] * 255)
    (tmp_path / "alphabet_ranges.csv").write_text(
        "first_char_id,last_char_id,alphabet,set\n1,5,Old,background\n"
        "965,966,Angelic,evaluation\n967,980,ULOG,evaluation\n"
    )
    ds = load_omniglot(tmp_path, "evaluation")
    assert ds.classes == ["Angelic/character01", "Angelic/character02", "ULOG/character01"]


def test_omniglot_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_omniglot(tmp_path / "nowhere")
    with pytest.raises(DataError, match="no background set"):
        load_omniglot(tmp_path)
    with pytest.raises(DataError, match="unknown split"):
        load_omniglot(tmp_path, "validation")
    (tmp_path / "images_background.zip").write_bytes(b"<html><head></head></html>")
    with pytest.raises(DataError, match="images_background.zip is an HTML page"):
        load_omniglot(tmp_path)
    (tmp_path / "images_background.zip").write_bytes(b"PK\x03\x04" + bytes(30))
    with pytest.raises(DataError, match="images_background.zip is truncated or corrupt"):
        load_omniglot(tmp_path)
    np.savez(tmp_path / "images_evaluation.npz", images=np.zeros((2, 105, 105), np.uint8))
    with pytest.raises(DataError, match="expected bool"):
        load_omniglot(tmp_path, "evaluation")
    good = tmp_path / "images_evaluation.npz"
    np.savez_compressed(good, images=np.ones((2, 2, 105, 105), bool))
    good.write_bytes(good.read_bytes()[:100])
    with pytest.raises(DataError, match="images_evaluation.npz is truncated or corrupt"):
        load_omniglot(tmp_path, "evaluation")


def test_omniglot_empty_character_folder(tmp_path):
    write_tree(tmp_path / "images_background")
    (tmp_path / "images_background" / "Beta" / "character02").mkdir()
    with pytest.raises(DataError, match="Beta/character02 holds no PNG drawings"):
        load_omniglot(tmp_path)
    with zipfile.ZipFile(tmp_path / "images_background.zip", "w") as zf:
        zf.writestr("images_background/Alpha/character07/", b"")
    with pytest.raises(DataError, match="Alpha/character07 holds no PNG drawings"):
        load_omniglot(tmp_path)


# --- real data ---------------------------------------------------------------------------------

needs_omniglot = pytest.mark.skipif(
    not (OMNIGLOT / "images_background.npz").is_file(), reason=f"no Omniglot npz in {OMNIGLOT}"
)
needs_mnist = pytest.mark.skipif(
    not (MNIST / "t10k-images-idx3-ubyte.gz").is_file(), reason=f"no MNIST idx files in {MNIST}"
)


@needs_omniglot
@pytest.mark.parametrize(("split", "count"), [("background", 964), ("evaluation", 659)])
def test_real_omniglot(split, count):
    ds = load_omniglot(OMNIGLOT, split)
    assert len(ds.classes) == count and len(ds) == 20 * count
    with np.load(OMNIGLOT / f"images_{split}.npz") as data:
        white = data["images"][0, 0]
    first = ds.images_of(ds.classes[0])
    assert first.shape == (20, 1, 105, 105)
    np.testing.assert_array_equal(first[0, 0].numpy(), np.where(white, 0, 255))
    assert 0 < first[0].float().mean() < 128  # thin white strokes on black
    alphabet = "Arcadian" if split == "background" else "Angelic"
    assert ds.classes[0] == f"{alphabet}/character01"


@needs_mnist
def test_real_mnist():
    train = load_mnist(MNIST, "train")
    test = load_mnist(MNIST, "test")
    assert len(train) == 60_000 and len(test) == 10_000
    counts = [len(train.images_of(c)) for c in train.classes]
    assert train.classes == [str(d) for d in range(10)] and sum(counts) == 60_000
    assert counts[:2] == [5923, 6742]
    assert sum(len(test.images_of(c)) for c in test.classes) == 10_000
    assert len(test.images_of("7")) == 1028
    with gzip.open(MNIST / "t10k-labels-idx1-ubyte.gz") as f:
        assert f.read()[8] == 7  # the first test image is a 7
    with gzip.open(MNIST / "t10k-images-idx3-ubyte.gz") as f:
        first = np.frombuffer(f.read(16 + 784)[16:], np.uint8).reshape(28, 28)
    seven = test.images_of("7")[0, 0].numpy()
    np.testing.assert_array_equal(seven, first)
    assert seven[0, 0] == 0 and seven.max() == 255  # white ink on black, as published


@pytest.mark.skipif(not FASHION_MNIST_DEBIAN.is_dir(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist_debian():
    ds = load_fashion_mnist(split="test")
    assert len(ds) == 10_000 and len(ds.classes) == 10
    assert all(len(ds.images_of(c)) == 1000 for c in ds.classes)
