from pathlib import Path

import pytest

from mtgan.config import load_config

PRESETS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


def test_there_are_presets():
    assert PRESETS


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_every_preset_loads_and_names_its_dataset(path):
    cfg = load_config(path)
    assert f"name: {cfg.data.name}" in path.read_text()
