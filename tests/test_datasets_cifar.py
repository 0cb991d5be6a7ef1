"""CIFAR, FC100, CIFAR-FS and miniImageNet loaders on tiny files in the published layouts."""

from __future__ import annotations

import csv
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from mtgan.data.cifar import (
    CIFAR_FS_CLASSES,
    FC100_SUPERCLASSES,
    load_cifar10,
    load_cifar10_subset,
    load_cifar100,
    load_cifar_fs,
    load_fc100,
)
from mtgan.data.miniimagenet import load_miniimagenet
from mtgan.data.safe import check_not_html, safe_load_pickle
from mtgan.errors import DataError
from tests.conftest import SHARED_DATA

#: CIFAR-100 superclass -> its five fine classes (the published CIFAR-100 class hierarchy).
CIFAR100_SUPERCLASSES = {
    "aquatic_mammals": ("beaver", "dolphin", "otter", "seal", "whale"),
    "fish": ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    "flowers": ("orchid", "poppy", "rose", "sunflower", "tulip"),
    "food_containers": ("bottle", "bowl", "can", "cup", "plate"),
    "fruit_and_vegetables": ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
    "household_electrical_devices": ("clock", "keyboard", "lamp", "telephone", "television"),
    "household_furniture": ("bed", "chair", "couch", "table", "wardrobe"),
    "insects": ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    "large_carnivores": ("bear", "leopard", "lion", "tiger", "wolf"),
    "large_man-made_outdoor_things": ("bridge", "castle", "house", "road", "skyscraper"),
    "large_natural_outdoor_scenes": ("cloud", "forest", "mountain", "plain", "sea"),
    "large_omnivores_and_herbivores": ("camel", "cattle", "chimpanzee", "elephant", "kangaroo"),
    "medium_mammals": ("fox", "porcupine", "possum", "raccoon", "skunk"),
    "non-insect_invertebrates": ("crab", "lobster", "snail", "spider", "worm"),
    "people": ("baby", "boy", "girl", "man", "woman"),
    "reptiles": ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    "small_mammals": ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    "trees": ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),
    "vehicles_1": ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    "vehicles_2": ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
}
COARSE = sorted(CIFAR100_SUPERCLASSES)
FINE = sorted(f for fines in CIFAR100_SUPERCLASSES.values() for f in fines)
COARSE_OF = {f: c for c, fines in CIFAR100_SUPERCLASSES.items() for f in fines}
CIFAR10_NAMES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip
HTML = b"  \n<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></html>"


def _dump(path, obj, protocol=2):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


def _cifar10(root, per_batch=3):
    """Batches as in cifar-10-batches-py: protocol 2 dicts with bytes keys."""
    folder = root / "cifar-10-batches-py"
    names = [n.encode() for n in CIFAR10_NAMES]
    _dump(folder / "batches.meta", {b"num_cases_per_batch": per_batch, b"label_names": names})
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        labels = [(i + j) % 10 for j in range(per_batch)]
        data = np.zeros((per_batch, 3072), np.uint8)
        data[:, 1] = [10 * i + j for j in range(per_batch)]  # red plane, row 0, column 1
        batch = {
            b"batch_label": f"batch {i}".encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [f"img_{i}_{j}.png".encode() for j in range(per_batch)],
        }
        _dump(folder / name, batch)
    return folder


def _cifar100(root):
    """cifar-100-python with one train and one test image per fine class, filled with its index."""
    folder = root / "cifar-100-python"
    meta = {
        b"fine_label_names": [n.encode() for n in FINE],
        b"coarse_label_names": [n.encode() for n in COARSE],
    }
    _dump(folder / "meta", meta)
    for split, offset in (("train", 0), ("test", 100)):
        order = np.random.default_rng(offset).permutation(100)
        data = np.repeat(order.astype(np.uint8)[:, None], 3072, axis=1)
        data[:, :1024] = offset  # the red plane tells train from test
        batch = {
            b"filenames": [f"{i}.png".encode() for i in order],
            b"batch_label": split.encode(),
            b"fine_labels": order.tolist(),
            b"coarse_labels": [COARSE.index(COARSE_OF[FINE[i]]) for i in order],
            b"data": data,
        }
        _dump(folder / split, batch)
    return folder


def _split_pickle(path, labels):
    """A MetaOptNet split pickle: data (N, 32, 32, 3) uint8 with a red image, labels."""
    data = np.zeros((len(labels), 32, 32, 3), np.uint8)
    data[0, ..., 0] = 255
    data[:, 0, 1, 2] = np.arange(len(labels))
    return _dump(path, {"data": data, "labels": list(labels)})


def test_cifar10_train_and_test(tmp_path):
    _cifar10(tmp_path)
    train = load_cifar10(tmp_path, "train")
    assert len(train) == 15 and train.classes == CIFAR10_NAMES[:7]
    # data_batch_2 (i=1) row 0 has label 1 and red pixel (0, 1) = 10.
    automobile = train.images_of("automobile")
    assert automobile.shape[1:] == (3, 32, 32)
    assert 10 in automobile[:, 0, 0, 1].tolist()
    assert automobile[:, 1:].sum() == 0
    test = load_cifar10(tmp_path / "cifar-10-batches-py", "test")
    assert test.classes == ["dog", "frog", "horse"]
    assert test.images_of("dog")[0, 0, 0, 1] == 50


def test_cifar100_classes_and_orientation(tmp_path):
    _cifar100(tmp_path)
    ds = load_cifar100(tmp_path, "train")
    assert ds.classes == FINE
    worm = ds.images_of("worm")
    assert worm.shape == (1, 3, 32, 32)
    assert (worm[0, 0] == 0).all() and (worm[0, 1:] == FINE.index("worm")).all()
    assert (load_cifar100(tmp_path, "test").images_of("apple")[0, 0] == 100).all()


@pytest.mark.parametrize("split,n", [("train", 60), ("validation", 20), ("val", 20), ("test", 20)])
def test_fc100_from_cifar100_selects_superclasses(tmp_path, split, n):
    _cifar100(tmp_path)
    ds = load_fc100(tmp_path, split)
    long = "validation" if split == "val" else split
    assert len(ds.classes) == n
    assert {COARSE_OF[c] for c in ds.classes} == set(FC100_SUPERCLASSES[long])
    for cls in ds.classes:
        images = ds.images_of(cls)
        assert images.shape == (2, 3, 32, 32)  # train and test merged
        assert (images[:, 1:] == FINE.index(cls)).all()


@pytest.mark.parametrize("split,n", [("train", 64), ("validation", 16), ("test", 20)])
def test_cifar_fs_from_cifar100(tmp_path, split, n):
    _cifar100(tmp_path)
    ds = load_cifar_fs(tmp_path / "cifar-100-python", split)
    assert len(ds.classes) == n and set(ds.classes) == set(CIFAR_FS_CLASSES[split])
    assert (ds.images_of(ds.classes[0])[:, 1:] == FINE.index(ds.classes[0])).all()


def test_published_split_lists_partition_cifar100():
    fs = [c for split in CIFAR_FS_CLASSES.values() for c in split]
    assert sorted(fs) == FINE
    assert sorted(s for split in FC100_SUPERCLASSES.values() for s in split) == COARSE


def test_fc100_test_pickle_alone(tmp_path):
    _split_pickle(tmp_path / "FC100_test.pickle", [7, 3, 7])
    ds = load_fc100(tmp_path, "test")
    assert ds.classes == ["3", "7"] and len(ds.images_of("7")) == 2
    red = ds.images_of("7")[0]
    assert (red[0] == 255).all() and (red[1:, 1:] == 0).all()
    assert ds.images_of("3")[0, 2, 0, 1] == 1  # (row 0, column 1, blue) of the second image
    with pytest.raises(DataError, match="FC100_train.pickle"):
        load_fc100(tmp_path, "train")


def test_cifar_fs_val_pickle_in_subfolder(tmp_path):
    _split_pickle(tmp_path / "CIFAR-FS" / "CIFAR_FS_val.pickle", [4, 5, 6])
    assert load_cifar_fs(tmp_path, "validation").classes == ["4", "5", "6"]


def test_miniimagenet_cache(tmp_path):
    data = np.zeros((4, 84, 84, 3), np.uint8)
    data[2, :, :, 0] = 255
    data[1, 0, 5, 1] = 9
    cache = {"image_data": data, "class_dict": {"n01532829": [0, 2], "n01558993": [1, 3]}}
    _dump(tmp_path / "mini-imagenet-cache-validation.pkl", cache, protocol=4)
    ds = load_miniimagenet(tmp_path, "val")
    assert ds.classes == ["n01532829", "n01558993"] and len(ds) == 4
    assert (ds.images_of("n01532829")[1, 0] == 255).all()
    assert ds.images_of("n01558993")[0, 1, 0, 5] == 9
    with pytest.raises(DataError, match="mini-imagenet-cache-train.pkl"):
        load_miniimagenet(tmp_path, "train")


def test_miniimagenet_csv_layout(tmp_path):
    (tmp_path / "images").mkdir()
    rows = [("n0153282900000005.jpg", "n01532829"), ("n0155899300000007.jpg", "n01558993")]
    Image.new("RGB", (84, 84), (255, 0, 0)).save(tmp_path / "images" / rows[0][0])
    Image.new("L", (100, 90), 128).save(tmp_path / "images" / rows[1][0])
    with open(tmp_path / "test.csv", "w", newline="") as f:
        csv.writer(f).writerows([("filename", "label"), *rows])
    ds = load_miniimagenet(tmp_path, "test")
    assert ds.classes == ["n01532829", "n01558993"]
    red = ds.images_of("n01532829")[0].int()
    assert red.shape == (3, 84, 84) and red[0].min() > 240 and red[1:].max() < 15
    grey = ds.images_of("n01558993")[0].int()
    assert grey.shape == (3, 84, 84) and abs(grey.float().mean().item() - 128) < 3


def test_cifar10_subset_npz(tmp_path):
    images = np.zeros((4, 32, 32, 3), np.uint8)
    images[1, ..., 0] = 255
    labels = np.array([0, 1, 1, 0], np.int64)
    np.savez(tmp_path / "cifar10_subset.npz", images=images, labels=labels, classes=["a", "b"])
    ds = load_cifar10_subset(tmp_path)
    assert ds.classes == ["a", "b"] and (ds.images_of("b")[0, 0] == 255).all()


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"shared data absent at {SHARED_DATA}")
def test_real_cifar10_subset():
    ds = load_cifar10_subset(SHARED_DATA / "cifar10-subset" / "cifar10_subset.npz")
    assert len(ds.classes) == 10
    assert all(ds.images_of(c).shape == (600, 3, 32, 32) for c in ds.classes)


def test_html_page_instead_of_data(tmp_path):
    (tmp_path / "FC100_test.pickle").write_bytes(HTML)
    with pytest.raises(DataError, match="FC100_test.pickle is an HTML page"):
        load_fc100(tmp_path, "test")
    (tmp_path / "cifar10_subset.npz").write_bytes(b"<HTML><body>quota</body></HTML>")
    with pytest.raises(DataError, match="HTML page"):
        load_cifar10_subset(tmp_path)


def test_check_not_html_accepts_pickles(tmp_path):
    check_not_html(_dump(tmp_path / "ok.pkl", {"a": 1}))


def test_truncated_files(tmp_path):
    folder = _cifar10(tmp_path)
    batch = folder / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:200])
    with pytest.raises(DataError, match="data_batch_3 is truncated or corrupt"):
        load_cifar10(tmp_path)
    np.savez_compressed(tmp_path / "c.npz", images=np.zeros((50, 32, 32, 3), np.uint8))
    (tmp_path / "cifar10_subset.npz").write_bytes((tmp_path / "c.npz").read_bytes()[:300])
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_cifar10_subset(tmp_path)


def test_missing_files_and_wrong_keys(tmp_path):
    with pytest.raises(DataError, match="cifar-10-batches-py/batches.meta"):
        load_cifar10(tmp_path / "nowhere")
    folder = _cifar10(tmp_path)
    (folder / "data_batch_5").unlink()
    with pytest.raises(DataError, match="data_batch_5 does not exist"):
        load_cifar10(tmp_path)
    _dump(folder / "test_batch", {b"data": np.zeros((2, 3072), np.uint8)})
    with pytest.raises(DataError, match=r"test_batch lacks keys \['labels'\]"):
        load_cifar10(tmp_path, "test")
    _dump(folder / "test_batch", {"data": np.zeros((2, 32, 32), np.uint8), "labels": [0, 1]})
    with pytest.raises(DataError, match="expected N x 3072 uint8"):
        load_cifar10(tmp_path, "test")
    with pytest.raises(DataError, match="unknown split"):
        load_cifar10(tmp_path, "validation")


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = _dump(tmp_path / "FC100_test.pickle", {"data": _Evil(marker), "labels": [0]})
    with pytest.raises(DataError, match=r"refusing to unpickle (posix|nt|os)\.system"):
        safe_load_pickle(evil)
    with pytest.raises(DataError, match="refusing to unpickle"):
        load_fc100(tmp_path, "test")
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_safe_pickle_round_trips_arrays(tmp_path, protocol):
    obj = {b"a": np.arange(6, dtype=np.uint8).reshape(2, 3), "b": [np.int64(3), 1.5, "x", b"y"]}
    out = safe_load_pickle(_dump(tmp_path / "p.pkl", obj, protocol))
    assert set(out) == {"a", "b"}
    np.testing.assert_array_equal(out["a"], obj[b"a"])
    assert out["b"] == [3, 1.5, "x", b"y"]


def test_miniimagenet_csv_missing_or_broken_image(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    (tmp_path / "train.csv").write_text("filename,label\na.jpg,n01\nb.jpg,n01\n")
    with pytest.raises(DataError, match="a.jpg is truncated or corrupt"):
        load_miniimagenet(tmp_path, "train")
    (tmp_path / "images" / "a.jpg").unlink()
    with pytest.raises(DataError, match="a.jpg does not exist"):
        load_miniimagenet(tmp_path, "train")
