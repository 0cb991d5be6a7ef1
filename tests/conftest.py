"""Shared fixtures: tiny configs and datasets so that tests run in seconds."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mtgan.config import load_config
from mtgan.data.base import ClassDataset
from mtgan.phases.common import resolve_device

SHARED_DATA = Path(
    os.environ.get("MTGAN_SHARED_DATA", Path(__file__).parents[2] / "shared" / "data")
)

TINY = [
    "data.image_size=16",
    "model.z_dim=4",
    "model.g_width=4",
    "model.d_width=4",
    "task.n_way=3",
    "task.k_shot=2",
    "task.q_query=2",
    "pretrain.steps=3",
    "pretrain.batch_size=8",
    "pretrain.bn_calibration_batches=2",
    "meta.steps=2",
    "meta.meta_batch=2",
    "meta.inner_steps=2",
    "adapt.steps=3",
]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep the glyph cache of tests apart from the user's."""
    monkeypatch.setenv("MTGAN_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    torch.set_num_threads(1)


@pytest.fixture
def tiny_cfg():
    return load_config(overrides=TINY)


@pytest.fixture
def toy_dataset():
    return make_toy_dataset()


def make_toy_dataset() -> ClassDataset:
    """Eight classes of 16x16 images, each class a bright square at its own place."""
    rs = np.random.RandomState(0)
    images = {}
    for c in range(8):
        x = (rs.rand(8, 16, 16) * 60).astype(np.uint8)
        r, col = divmod(c, 4)
        x[:, 2 + 6 * r : 8 + 6 * r, 1 + 3 * col : 4 + 3 * col] = 255
        images[f"class{c}"] = x
    return ClassDataset("toy", images)


def image_folder(root: Path, classes: int, per_class: int, size: int = 20) -> Path:
    """``root/k<c>/<i>.png``: grey noise images, the layout of ``data.name=folder``."""
    rs = np.random.RandomState(0)
    for c in range(classes):
        (root / f"k{c}").mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray((rs.rand(size, size) * 255).astype(np.uint8)).save(
                root / f"k{c}" / f"{i}.png"
            )
    return root


def tiny_run(root: Path, out: str | Path = "run") -> Path:
    """A whole tiny ``mtgan run`` (one test task) on a folder of noise images under ``root``;
    returns the run folder (``root / out``)."""
    from mtgan.cli import main

    data = image_folder(root / "imgs", classes=16, per_class=6)
    sets = [*TINY, "data.name=folder", f"data.root={data}", "eval.tasks=1"]
    argv = ["run", "--out", str(root / out), "--no-progress"]
    assert main(argv + [a for s in sets for a in ("--set", s)]) == 0
    return root / out


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    """Each device of this machine in turn: the CPU, and CUDA where a GPU is visible. On CUDA
    the test runs with deterministic kernels, as a run that must repeat bit for bit would."""
    yield resolve_device(request.param)  # on CUDA: deterministic kernels, cuBLAS's workspace
    torch.use_deterministic_algorithms(False)
