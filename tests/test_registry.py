"""The dataset registry and the splits a config asks for."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mtgan.config import load_config
from mtgan.data import DATASETS, load, load_splits
from mtgan.errors import DataError
from tests.conftest import SHARED_DATA

NAMES = (
    "omniglot mnist fashion-mnist kmnist notmnist cifar10 cifar100 fc100 cifar-fs "
    "miniimagenet figr8 folder glyphs"
).split()


def test_every_name_of_the_issue_is_registered_and_importable():
    import importlib

    assert set(NAMES) <= set(DATASETS)
    for info in DATASETS.values():
        module, function = info.loader.split(":")
        assert callable(getattr(importlib.import_module(module), function))


def _folder(root, classes=6, per_class=4, size=12):
    rs = np.random.RandomState(1)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray((rs.rand(size, size) * 255).astype(np.uint8)).save(
                root / f"c{c}/{i}.png"
            )
    return root


def test_load_conforms_size_and_channels(tmp_path):
    ds = load("folder", _folder(tmp_path / "f"), image_size=16, channels=3)
    assert ds.classes == [f"c{c}" for c in range(6)]
    assert tuple(ds.images_of("c0").shape) == (4, 3, 16, 16)


def test_class_hold_out_split(tmp_path):
    cfg = load_config(
        overrides=[
            "data.name=folder",
            f"data.root={_folder(tmp_path / 'f')}",
            "data.test_classes=[c1, c4]",
            "data.image_size=16",
        ]
    ).data
    splits = load_splits(cfg)
    assert splits["test"].classes == ["c1", "c4"]
    assert splits["train"].classes == ["c0", "c2", "c3", "c5"]


def test_unknown_hold_out_class_is_named(tmp_path):
    cfg = load_config(
        overrides=[
            "data.name=folder",
            f"data.root={_folder(tmp_path / 'f')}",
            "data.test_classes=[c9]",
        ]
    ).data
    with pytest.raises(DataError, match="c9"):
        load_splits(cfg)


def test_unknown_dataset_and_missing_root():
    with pytest.raises(DataError, match="known: glyphs"):
        load("imagenet21k")
    with pytest.raises(DataError, match="needs the folder of its files"):
        load("mnist")


@pytest.mark.skipif(not (SHARED_DATA / "omniglot").is_dir(), reason="../shared/data is absent")
def test_omniglot_uses_its_own_background_and_evaluation_sets():
    cfg = load_config(
        overrides=["data.name=omniglot", f"data.root={SHARED_DATA / 'omniglot'}"]
    ).data
    splits = load_splits(cfg)
    assert len(splits["train"].classes) == 964 and len(splits["test"].classes) == 659
    assert not set(splits["train"].classes) & set(splits["test"].classes)
    assert tuple(splits["test"].images_of(splits["test"].classes[0]).shape) == (20, 1, 32, 32)


@pytest.mark.skipif(not (SHARED_DATA / "mnist").is_dir(), reason="../shared/data is absent")
def test_mnist_preset_holds_out_three_digits():
    cfg = load_config("configs/mnist-3w10s.yaml", [f"data.root={SHARED_DATA / 'mnist'}"]).data
    splits = load_splits(cfg)
    assert splits["test"].classes == ["7", "8", "9"] and len(splits["train"].classes) == 7


def test_data_commands(tmp_path):
    def mtgan(*args):
        cmd = [sys.executable, "-m", "mtgan", "data", *args]
        return subprocess.run(cmd, capture_output=True, text=True)

    r = mtgan("list")
    assert r.returncode == 0 and all(name in r.stdout for name in NAMES)
    r = mtgan("info", "folder", "--root", str(_folder(tmp_path / "f")))
    assert r.returncode == 0 and "6 classes, 24 images" in r.stdout
    r = mtgan("info", "folder", "--root", str(tmp_path / "missing"))
    assert (
        r.returncode == 2 and r.stderr.startswith("mtgan: error:") and "Traceback" not in r.stderr
    )
