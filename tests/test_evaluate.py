"""Phase (d) as the run uses it: the cached evaluator and the scores of one task."""

from pathlib import Path

import pytest
import torch

from mtgan.config import load_config
from mtgan.data.episodes import EpisodeSampler
from mtgan.files import cache_dir
from mtgan.phases import evaluate
from mtgan.phases.evaluate import evaluator_for, score_task, summarize
from tests.conftest import TINY


@pytest.fixture
def cfg():
    return load_config(overrides=[*TINY, "eval.evaluator_epochs=60"])


def test_evaluator_is_trained_once_then_read_from_the_cache(cfg, toy_dataset, monkeypatch, device):
    model, info = evaluator_for(toy_dataset, cfg, device)
    assert info["heldout_accuracy"] >= 0.9  # the toy classes are easy

    def no_training(*args, **kwargs):
        raise AssertionError("trained again although cached")

    monkeypatch.setattr(evaluate, "train_evaluator", no_training)
    again, info2 = evaluator_for(toy_dataset, cfg, device)
    assert info2["heldout_accuracy"] == info["heldout_accuracy"]
    x = torch.zeros(2, 1, 16, 16, device=device)
    torch.testing.assert_close(again(x), model(x))


def test_corrupt_cache_entry_is_retrained(cfg, toy_dataset, device):
    _, info = evaluator_for(toy_dataset, cfg, device)
    path = cache_dir() / info["cache"]
    assert not Path(info["cache"]).is_absolute()  # results files name no machine's folders
    with open(path, "wb") as f:
        f.write(b"\x00garbage")
    _, info2 = evaluator_for(toy_dataset, cfg, device)
    assert info2["heldout_accuracy"] == pytest.approx(info["heldout_accuracy"])


def test_changed_data_trains_a_new_evaluator(cfg, toy_dataset, device):
    _, info = evaluator_for(toy_dataset, cfg, device)
    _, other = evaluator_for(toy_dataset.subset(toy_dataset.classes[:6]), cfg, device)
    assert other["cache"] != info["cache"]


def test_scores_of_real_images_reach_the_ceiling_and_noise_does_not(cfg, toy_dataset, device):
    model, _ = evaluator_for(toy_dataset, cfg, device)
    task = EpisodeSampler(toy_dataset, 3, 3, 3, seed=0).sample()
    real_like = task.support  # the generator returns its support images: real quality, copies
    scores = score_task(model, toy_dataset.classes, task, real_like, task.support_labels)
    assert scores["fidelity"] == 1.0
    assert scores["mode_score"] > 2.5 and scores["real_mode_score"] > 2.5
    assert scores["copy_ratio"] == 0.0  # every generated image is a support image
    noise = torch.randint(0, 256, task.support.shape, dtype=torch.uint8)
    bad = score_task(model, toy_dataset.classes, task, noise, task.support_labels)
    assert bad["fid"] > scores["fid"] and bad["copy_ratio"] > 0.5


def test_summary_has_mean_and_interval():
    s = summarize([{"a": 1.0, "b": 2.0}, {"a": 3.0, "b": 2.0}, {"a": 2.0, "b": 2.0}])
    assert s["a"]["mean"] == 2.0 and s["a"]["ci95"] == pytest.approx(2.4841, abs=1e-3)
    assert s["b"]["ci95"] == 0.0 and s["a"]["n"] == 3
    assert summarize([{"a": 1.0}])["a"]["ci95"] is None
