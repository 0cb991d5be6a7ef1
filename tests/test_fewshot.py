"""The few-shot classification benchmark: the probe, the classic copies, the validation classes
held out of the training split (and meta-training's validation on them), and `mtgan fewshot` on
a tiny budget."""

from __future__ import annotations

import json

import pytest
import torch

from mtgan.cli import main
from mtgan.config import load_config
from mtgan.data import load_splits
from mtgan.errors import ConfigError, DataError
from mtgan.metrics.fewshot import classic_copies, probe_accuracy
from tests.conftest import TINY, image_folder


def _clusters(n_per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(4, 16) * 3
    labels = torch.arange(4).repeat_interleave(n_per_class)
    return centres[labels] + 0.5 * torch.randn(len(labels), 16, generator=g), labels


def test_the_probe_learns_separable_classes_and_not_shuffled_ones():
    x, y = _clusters(5, seed=0)
    q, qy = _clusters(20, seed=1)
    assert probe_accuracy(x, y, q, qy, 4) == 1.0
    shuffled = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(2))]
    assert probe_accuracy(x, shuffled, q, qy, 4) < 0.6


def test_the_probe_uses_the_extra_rows():
    """Support rows of class 1 sit on class 0's side; correct extra rows fix the decision."""
    x, y = _clusters(5, seed=0)
    misleading = x.clone()
    misleading[y == 1] = x[y == 0]
    q, qy = _clusters(20, seed=1)
    alone = probe_accuracy(misleading, y, q, qy, 4)
    extra, extra_y = _clusters(20, seed=3)
    helped = probe_accuracy(torch.cat([misleading, extra]), torch.cat([y, extra_y]), q, qy, 4)
    assert alone <= 0.8 and helped == 1.0


def _asymmetric(n: int) -> torch.Tensor:
    images = torch.zeros(n, 1, 16, 16, dtype=torch.uint8)
    images[:, :, 4:12, 1:5] = 255  # a bar near the left edge
    return images


def test_classic_copies_are_seeded_warps_of_their_class():
    images, labels = _asymmetric(4), torch.tensor([0, 0, 1, 1])
    images[2:] = 0
    images[2:, :, 1:5, 4:12] = 255  # class 1: a bar near the top
    a, slots = classic_copies(images, labels, 6, False, torch.Generator().manual_seed(0))
    b, _ = classic_copies(images, labels, 6, False, torch.Generator().manual_seed(0))
    assert a.dtype == torch.uint8 and a.shape == (12, 1, 16, 16) and torch.equal(a, b)
    assert slots.tolist() == [0] * 6 + [1] * 6
    assert not torch.equal(a[:6], images[[0, 1, 0, 1, 0, 1]])  # warped, not repeated
    ones = a.float() / 255
    assert ones[:6, :, :, :8].mean() > ones[:6, :, :, 8:].mean() * 3  # still on the left
    assert ones[6:, :, :8].mean() > ones[6:, :, 8:].mean() * 3  # still at the top


def test_classic_copies_mirror_only_when_asked():
    images, labels = _asymmetric(2), torch.tensor([0, 0])
    kept, _ = classic_copies(images, labels, 40, False, torch.Generator().manual_seed(1))
    mirrored, _ = classic_copies(images, labels, 40, True, torch.Generator().manual_seed(1))
    right = lambda x: int((x[..., 8:].float().mean((1, 2, 3)) > 40).sum())  # noqa: E731
    assert right(kept) == 0 and 8 <= right(mirrored) <= 32


def _folder_cfg(tmp_path, *sets: str):
    root = image_folder(tmp_path / "imgs", classes=20, per_class=6, size=16)
    return [*TINY, "data.name=folder", f"data.root={root}", *sets]


def test_validation_classes_are_held_out_of_the_training_split(tmp_path):
    sets = _folder_cfg(tmp_path, "data.test_classes=[k0,k1,k2]", "data.validation_classes=4")
    splits = load_splits(load_config(overrides=sets).data)
    train, validation = splits["train"].classes, splits["validation"].classes
    assert len(train) == 13 and len(validation) == 4 and not set(train) & set(validation)
    assert splits["test"].classes == ["k0", "k1", "k2"]
    too_many = load_config(overrides=[*sets[:-1], "data.validation_classes=17"])
    with pytest.raises(DataError, match="leaves no training class"):
        load_splits(too_many.data)


def test_train_per_class_caps_the_training_classes_only(tmp_path):
    sets = _folder_cfg(tmp_path, "data.test_classes=[k0,k1]", "data.validation_classes=2")
    full = load_splits(load_config(overrides=sets).data)
    capped = load_splits(load_config(overrides=[*sets, "data.train_per_class=4"]).data)
    assert capped["train"].classes == full["train"].classes
    for c in full["train"].classes:
        assert torch.equal(capped["train"].images_of(c), full["train"].images_of(c)[:4])
    for split in ("validation", "test"):
        assert [len(capped[split].images_of(c)) for c in capped[split].classes] == [6, 6]
    with pytest.raises(ConfigError, match="data.train_per_class must be 0 or more"):
        load_config(overrides=[*sets, "data.train_per_class=-1"])


def _fewshot(tmp_path, sets: list[str], *options: str) -> int:
    argv = ["fewshot", "--no-progress", "--methods", "frozen", "--tasks", "2", *options]
    return main(argv + [a for s in sets for a in ("--set", s)])


def test_fewshot_writes_every_condition_with_paired_differences(tmp_path, capsys):
    sets = _folder_cfg(
        tmp_path,
        "data.split_fractions=[0.55,0.15,0.3]",
        "fewshot.validation_tasks=2",
        "fewshot.backbone_epochs=1",
    )
    out = tmp_path / "results" / "fs"
    assert _fewshot(tmp_path, sets, "--generated", "2,3", "--out", str(out)) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    conditions = report["conditions"]
    assert list(conditions) == ["support", "classic", "frozen", "frozen+classic"]
    assert len(report["tasks"]) == 2 and len(report["validation_tasks"]) == 2
    assert not {c for t in report["validation_tasks"] for c in t} & {
        c for t in report["tasks"] for c in t
    }
    for name, result in conditions.items():
        accuracies = [t["accuracy"] for t in result["tasks"]]
        assert len(accuracies) == 2 and all(0 <= a <= 1 for a in accuracies)
        assert result["summary"]["accuracy"]["mean"] == pytest.approx(sum(accuracies) / 2)
        if name == "support":
            assert result["per_class"] == 0 and result["validation_accuracy"] == {}
        else:
            assert set(result["validation_accuracy"]) == {"2", "3"}
            best = max(result["validation_accuracy"].values())
            assert result["validation_accuracy"][str(result["per_class"])] == best
        for base in ("support", "classic"):
            diffs = [
                a["accuracy"] - b["accuracy"]
                for a, b in zip(result["tasks"], conditions[base]["tasks"], strict=True)
            ]
            assert result["paired"][base]["mean"] == pytest.approx(sum(diffs) / 2)
    for name in ("classic", "frozen"):  # one kind of extra images: why they help or not
        rows = conditions[name]["tasks"]
        assert all(0 <= r["extra_only_accuracy"] <= 1 and r["spread_ratio"] > 0 for r in rows)
    assert "extra_only_accuracy" not in conditions["frozen+classic"]["tasks"][0]
    assert "| frozen+classic |" in out.with_suffix(".md").read_text()
    assert out.with_suffix(".png").stat().st_size > 1000
    assert "frozen+classic" in capsys.readouterr().out


def test_fewshot_refuses_to_choose_m_without_validation_classes(tmp_path, capsys):
    sets = _folder_cfg(tmp_path, "data.test_classes=[k0,k1,k2]")
    assert _fewshot(tmp_path, sets, "--generated", "2,3", "--out", str(tmp_path / "x")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "validation classes" in err
    assert not (tmp_path / "x.json").exists()


def test_a_run_validating_its_meta_training_writes_the_curve(tmp_path, capsys):
    sets = _folder_cfg(tmp_path, "data.split_fractions=[0.55,0.15,0.3]", "eval.tasks=1")
    sets += ["meta.steps=4", "meta.validate_every=2", "meta.validate_tasks=1"]
    argv = ["run", "--no-progress", "--out", str(tmp_path / "run")]
    assert main(argv + [a for s in sets for a in ("--set", s)]) == 0
    curve = json.loads((tmp_path / "run" / "meta-train" / "validation.json").read_text())
    assert [step for step, _ in curve["curve"]] == [0, 2, 4]
    assert curve["best"] == min(curve["curve"], key=lambda point: point[1])
    assert (tmp_path / "run" / "meta-train" / "validation.png").stat().st_size > 1000
    held_out = _folder_cfg(tmp_path / "b", "data.test_classes=[k0,k1,k2]", "meta.validate_every=2")
    argv = ["run", "--no-progress", "--out", str(tmp_path / "run2")]
    assert main(argv + [a for s in held_out for a in ("--set", s)]) == 2
    assert "data.validation_classes" in capsys.readouterr().err
    assert not (tmp_path / "run2" / "pretrain" / "model.safetensors").exists()  # refused first
