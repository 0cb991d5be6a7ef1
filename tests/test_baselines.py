"""The baselines (FIGR, fine-tuning, training from scratch), WGAN-GP and the benchmark harness."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from mtgan.baselines.figr import build_figr, figr_meta_train, figr_sample, inner_loop
from mtgan.baselines.finetune import finetune
from mtgan.baselines.scratch import train_from_scratch
from mtgan.benchmark import ABLATIONS, METHODS, REPORTED, Benchmark, with_granularity
from mtgan.cli import main
from mtgan.config import load_config, with_overrides
from mtgan.data.episodes import EpisodeSampler
from mtgan.losses import critic, gradient_penalty
from mtgan.nn.ss import is_ss_parameter
from mtgan.phases.adapt import adapt
from mtgan.phases.pretrain import build_gan, pretrain
from mtgan.phases.step import trainable_params
from tests.conftest import TINY

CPU = torch.device("cpu")
RESULTS = Path(__file__).parents[1] / "results"


def _state(gan):
    return {k: v.detach().clone() for k, v in gan.state_dict().items()}


@pytest.fixture
def pretrained(tiny_cfg, toy_dataset):
    torch.manual_seed(0)
    gan = build_gan(tiny_cfg, len(toy_dataset.classes))
    pretrain(gan, toy_dataset, tiny_cfg, CPU)
    return gan


@pytest.fixture
def task(toy_dataset):
    return EpisodeSampler(toy_dataset, 3, 2, 2, seed=1).sample()


def test_critic_is_the_log_odds_of_real_against_fake():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.5]])
    torch.testing.assert_close(critic(logits), torch.tensor([3.0, 0.0]))


@pytest.mark.parametrize("norm", [1.0, 3.0])
def test_gradient_penalty_of_a_linear_critic(norm):
    w = torch.randn(12)
    w = w / w.norm() * norm
    real, fake = torch.randn(5, 3, 2, 2), torch.randn(5, 3, 2, 2)
    penalty = gradient_penalty(lambda x: x.flatten(1) @ w, real, fake, torch.rand(5))
    torch.testing.assert_close(penalty, torch.tensor((norm - 1) ** 2))


def test_figr_meta_step_moves_the_weights_towards_the_inner_copy(tiny_cfg, toy_dataset):
    cfg = load_config(overrides=TINY + ["figr.meta_steps=1", "figr.inner_steps=2"])
    torch.manual_seed(0)
    gan = build_figr(cfg)
    before = _state(gan)
    # The same task and noise as the meta-step draws, from the same seeds.
    inner = copy.deepcopy(gan).train()
    images = EpisodeSampler(toy_dataset, 1, cfg.figr.task_images, 0, cfg.seed).sample().support
    rng = torch.Generator().manual_seed(cfg.seed)
    names = inner.names("g") + inner.names("d")
    target = inner_loop(inner, trainable_params(inner, names), images, 2, cfg, rng)
    figr_meta_train(gan, toy_dataset, cfg, CPU)
    after = _state(gan)
    for n in names:
        moved, wanted = after[n] - before[n], target[n].detach() - before[n]
        # Adam's first step is lr * sign(gradient) (up to eps), the gradient meta - adapted.
        big = wanted.abs() > 1e-5
        torch.testing.assert_close(
            moved[big], cfg.figr.outer_lr * wanted[big].sign(), rtol=1e-2, atol=1e-9
        )
    assert all(torch.equal(after[k], before[k]) for k in after if is_ss_parameter(k))


def test_figr_gives_each_class_its_own_generator(tiny_cfg, toy_dataset, task):
    torch.manual_seed(0)
    gan = build_figr(tiny_cfg)
    fake, slots = figr_sample(gan, task.support, task.support_labels, 4, tiny_cfg, CPU, seed=5)
    assert fake.shape == (12, 1, 16, 16) and slots.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert not torch.equal(fake[0], fake[4])  # different classes' generators
    again, _ = figr_sample(gan, task.support, task.support_labels, 4, tiny_cfg, CPU, seed=5)
    assert torch.equal(fake, again)


def test_finetune_trains_every_weight_and_adaptation_only_the_heads(pretrained, tiny_cfg, task):
    start = _state(pretrained)
    tuned = _state(finetune(pretrained, task.support, task.support_labels, tiny_cfg, CPU, 0))
    adapted, _ = adapt(pretrained, task.support, task.support_labels, tiny_cfg, CPU)
    adapted = _state(adapted)
    assert _state(pretrained).keys() == start.keys()
    for k in start:
        backbone = k.startswith(("generator.ic", "discriminator.fe")) and k.endswith("weight")
        if backbone and not is_ss_parameter(k):
            assert not torch.equal(tuned[k], start[k]), k
            assert torch.equal(adapted[k], start[k]), k
        if is_ss_parameter(k):
            assert torch.equal(tuned[k], start[k]), k


def test_finetune_starts_from_fresh_heads_even_with_as_many_pretraining_classes(
    tiny_cfg, toy_dataset, task, monkeypatch
):
    torch.manual_seed(0)
    gan = build_gan(tiny_cfg, 3)  # pretrained on N = 3 classes, like CIFAR-10 5-way's 5
    pretrain(gan, toy_dataset.subset(toy_dataset.classes[:3]), tiny_cfg, CPU)
    seen = []
    monkeypatch.setattr(
        "mtgan.baselines.finetune.adapt", lambda g, *a, **k: seen.append(g) or (g, [])
    )
    finetune(gan, task.support, task.support_labels, tiny_cfg, CPU, 0)
    class_columns = seen[0].generator.nm.weight[:, tiny_cfg.model.z_dim :]
    assert torch.equal(class_columns, class_columns[:, :1].expand_as(class_columns))
    assert not torch.equal(gan.generator.nm.weight, seen[0].generator.nm.weight)


def test_finetune_augments_only_when_asked(tiny_cfg, task, monkeypatch):
    seen = []

    def adapt(gan, support, labels, cfg, *args, **kwargs):
        seen.append(cfg)
        return gan, []

    monkeypatch.setattr("mtgan.baselines.finetune.adapt", adapt)
    gan = build_gan(tiny_cfg, 3)
    augmented = with_overrides(tiny_cfg, ["adapt.augment=cutout", "finetune.augment=translation"])
    for cfg in (with_overrides(tiny_cfg, ["adapt.augment=cutout"]), augmented):
        finetune(gan, task.support, task.support_labels, cfg, CPU, 0)
    assert [cfg.adapt.augment for cfg in seen] == ["", "translation"]
    assert seen[0].adapt.steps == tiny_cfg.finetune.steps


def test_scratch_trains_a_new_gan_for_the_task_classes(tiny_cfg, task):
    gan = train_from_scratch(task.support, task.support_labels, tiny_cfg, CPU, seed=0)
    assert gan.n_classes == 3 and gan.discriminator.cf.out_features == 4
    again = train_from_scratch(task.support, task.support_labels, tiny_cfg, CPU, seed=0)
    first, second = _state(gan), _state(again)
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_with_granularity_keeps_the_pretrained_weights(pretrained, tiny_cfg):
    layer = load_config(overrides=TINY + ["model.ss_granularity=layer"])
    gan = with_granularity(pretrained, layer)
    old, new = _state(pretrained), _state(gan)
    for k in new:
        if is_ss_parameter(k):
            assert new[k].numel() == 1 and new[k].item() in (0.0, 1.0), k
        else:
            assert torch.equal(new[k], old[k]), k


def test_budget_scales_the_steps_of_every_phase_together(tiny_cfg, monkeypatch):
    cfg = load_config(overrides=TINY + ["pretrain.steps=3000", "meta.steps=150"])
    bench = Benchmark.__new__(Benchmark)
    bench.budget = 10.0
    per_step = {"pretrain": 0.1, "meta": 1.0}
    monkeypatch.setattr(Benchmark, "_seconds_per_step", lambda self, c, phase: per_step[phase])
    scaled = bench._budgeted(cfg, ("pretrain", "meta"))  # 300 s + 150 s -> 10 s
    assert (scaled.pretrain.steps, scaled.meta.steps) == (67, 3)


def _check_schema(report: dict) -> None:
    assert report["command"].startswith("mtgan benchmark")
    keys = {"machine", "budget_s", "evaluator", "tasks", "config", "methods", "paired"}
    assert keys <= report.keys()
    for method, result in report["methods"].items():
        assert method in METHODS or method in ABLATIONS
        assert len(result["tasks"]) == len(report["tasks"])
        for key in [*REPORTED, "real_mode_score", "real_fid"]:
            entry = result["summary"][key]
            assert entry["n"] == len(report["tasks"]) and isinstance(entry["mean"], float), key


def test_benchmark_command_writes_results(tmp_path, capsys):
    out = tmp_path / "results" / "tiny"
    methods = "mtgan,figr,finetune,frozen,scratch,mtgan-layer,finetune-augmented"
    argv = ["benchmark", "--quick", "--no-progress", "--methods", methods, "--tasks", "2"]
    assert main([*argv, "--out", str(out), *[f"--set={s}" for s in TINY[:4]]]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    _check_schema(report)
    assert list(report["methods"]) == methods.split(",")
    rows = out.with_suffix(".csv").read_text().splitlines()
    assert rows[0] == "method,score,mean,ci95,n" and len(rows) > 6 * len(REPORTED)
    table = out.with_suffix(".md").read_text()
    assert all(f"| {m} |" in table for m in methods.split(","))
    for png in ("tiny_scores.png", "tiny_samples.png"):
        assert (out.parent / png).stat().st_size > 1000
    assert main([*argv, "--out", str(out)]) == 2  # no overwrite without --overwrite
    assert "--overwrite" in capsys.readouterr().err
    first = report["methods"]["mtgan"]["tasks"]
    fid = [
        t["fid"] - f["fid"] for t, f in zip(report["methods"]["figr"]["tasks"], first, strict=True)
    ]
    assert report["paired"]["figr"]["fid"]["mean"] == pytest.approx(sum(fid) / len(fid))
    assert report["paired"]["mtgan"]["fid"]["mean"] == 0
    out.with_suffix(".md").unlink()
    assert main(["benchmark", "--report", str(out.with_suffix(".json"))]) == 0
    assert out.with_suffix(".md").read_text() == table


def test_report_of_a_file_that_is_not_results_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "x.json").write_text("[1, 2]")
    assert main(["benchmark", "--report", str(tmp_path / "x.json")]) == 2
    assert "not a results .json" in capsys.readouterr().err


@pytest.mark.parametrize("budget", ["0", "-5", "nan", "inf"])
def test_budget_must_be_a_positive_number_of_seconds(budget, capsys):
    assert main(["benchmark", "--quick", "--budget", budget]) == 2
    assert "--budget" in capsys.readouterr().err


def test_unknown_method_is_a_usage_error(capsys):
    assert main(["benchmark", "--quick", "--methods", "mtgan,gan9000"]) == 2
    assert "gan9000" in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*.json")), ids=lambda p: p.name)
def test_committed_results_have_the_benchmark_schema(path):
    _check_schema(json.loads(path.read_text()))
