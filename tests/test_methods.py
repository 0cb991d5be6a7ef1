"""The method registry, the baselines (FIGR, fine-tuning, training from scratch), WGAN-GP and
the benchmark harness."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from mtgan.cli import main
from mtgan.config import load_config, with_overrides
from mtgan.data.episodes import EpisodeSampler
from mtgan.losses import critic, gradient_penalty
from mtgan.methods import METHODS, Adapted, Method, get
from mtgan.methods.base import register
from mtgan.methods.figr import FigrFitted, build_figr, figr_meta_train, inner_loop
from mtgan.methods.scratch import train_from_scratch
from mtgan.nn.ss import is_ss_parameter
from mtgan.phases.adapt import adapt
from mtgan.phases.meta_train import with_granularity
from mtgan.phases.pretrain import build_gan, pretrain
from mtgan.phases.step import trainable_params
from mtgan.runs.benchmark import Benchmark, run_benchmark
from mtgan.runs.folder import Run
from mtgan.runs.results import REPORTED
from tests.conftest import TINY, image_folder

RESULTS = Path(__file__).parents[1] / "results"


def _state(gan):
    return {k: v.detach().to("cpu", copy=True) for k, v in gan.state_dict().items()}


@pytest.fixture
def pretrained(tiny_cfg, toy_dataset, device):
    torch.manual_seed(0)
    gan = build_gan(tiny_cfg, len(toy_dataset.classes))
    pretrain(gan, toy_dataset, tiny_cfg, device)
    return gan


@pytest.fixture
def bench(tiny_cfg, toy_dataset, tmp_path):
    """A benchmark over the toy classes: the context the methods train in."""
    splits = {"train": toy_dataset, "test": toy_dataset}
    return Benchmark(Run(tmp_path, tiny_cfg, progress=False, splits=splits))


def finetune(bench, pretrained, task, cfg, seed=0, name="finetune"):
    """The fine-tuning baseline on one task, from ``pretrained``."""
    bench._backbones[cfg.pretrain.steps] = (pretrained, 0.0)
    method = get(name)
    fitted = method.fit(bench, method.configure(cfg))
    return fitted.adapt(task.support, task.support_labels, seed).gan


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


def test_figr_meta_step_moves_the_weights_towards_the_inner_copy(tiny_cfg, toy_dataset, device):
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
    figr_meta_train(gan, toy_dataset, cfg, device)
    after = _state(gan)
    for n in names:
        moved, wanted = after[n] - before[n], target[n].detach() - before[n]
        # Adam's first step is lr * sign(gradient) (up to eps), the gradient meta - adapted.
        big = wanted.abs() > 1e-5
        torch.testing.assert_close(
            moved[big], cfg.figr.outer_lr * wanted[big].sign(), rtol=1e-2, atol=1e-9
        )
    assert all(torch.equal(after[k], before[k]) for k in after if is_ss_parameter(k))


def test_figr_gives_each_class_its_own_generator(tiny_cfg, toy_dataset, task, device):
    torch.manual_seed(0)
    fitted = FigrFitted(build_figr(tiny_cfg), tiny_cfg, device, {})
    fake, slots = fitted.adapt(task.support, task.support_labels, 5).sample(4, 5)
    assert fake.shape == (12, 1, 16, 16) and slots.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert not torch.equal(fake[0], fake[4])  # different classes' generators
    again, _ = fitted.adapt(task.support, task.support_labels, 5).sample(4, 5)
    assert torch.equal(fake, again)


def test_finetune_trains_every_weight_and_adaptation_only_the_heads(
    bench, pretrained, tiny_cfg, task, device
):
    start = _state(pretrained)
    tuned = _state(finetune(bench, pretrained, task, tiny_cfg))
    adapted, _ = adapt(pretrained, task.support, task.support_labels, tiny_cfg, device)
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
    bench, tiny_cfg, toy_dataset, task, monkeypatch, device
):
    torch.manual_seed(0)
    gan = build_gan(tiny_cfg, 3)  # pretrained on N = 3 classes, like CIFAR-10 5-way's 5
    pretrain(gan, toy_dataset.subset(toy_dataset.classes[:3]), tiny_cfg, device)
    seen = []
    monkeypatch.setattr("mtgan.runs.benchmark.adapt", lambda g, *a, **k: seen.append(g) or (g, []))
    finetune(bench, gan, task, tiny_cfg)
    class_columns = seen[0].generator.nm.weight[:, tiny_cfg.model.z_dim :]
    assert torch.equal(class_columns, class_columns[:, :1].expand_as(class_columns))
    assert not torch.equal(gan.generator.nm.weight, seen[0].generator.nm.weight)


def test_finetune_augments_only_when_asked(bench, tiny_cfg, task, monkeypatch):
    seen = []

    def adapt(gan, support, labels, cfg, *args, **kwargs):
        seen.append(cfg)
        return gan, []

    monkeypatch.setattr("mtgan.runs.benchmark.adapt", adapt)
    gan = build_gan(tiny_cfg, 3)
    cutout = with_overrides(tiny_cfg, ["adapt.augment=cutout"])
    augmented = with_overrides(tiny_cfg, ["adapt.augment=cutout", "finetune.augment=translation"])
    for cfg in (cutout, augmented):
        finetune(bench, gan, task, cfg)
    finetune(bench, gan, task, cutout, name="finetune-augmented")
    assert [cfg.adapt.augment for cfg in seen] == ["", "translation", "cutout"]
    assert seen[0].adapt.steps == tiny_cfg.finetune.steps


def test_scratch_trains_a_new_gan_for_the_task_classes(tiny_cfg, task, device):
    gan = train_from_scratch(task.support, task.support_labels, tiny_cfg, device, seed=0)
    assert gan.n_classes == 3 and gan.discriminator.cf.out_features == 4
    again = train_from_scratch(task.support, task.support_labels, tiny_cfg, device, seed=0)
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


def test_budget_scales_the_steps_of_every_phase_together(bench, monkeypatch):
    cfg = load_config(overrides=TINY + ["pretrain.steps=3000", "meta.steps=150"])
    bench.budget = 10.0
    per_step = {"pretrain": 0.1, "meta-train": 1.0}
    monkeypatch.setattr(Benchmark, "_seconds_per_step", lambda self, c, phase: per_step[phase])
    scaled = bench.budgeted(cfg, get("mtgan").phases)  # 300 s + 150 s -> 10 s
    assert (scaled.pretrain.steps, scaled.meta.steps) == (67, 3)
    assert bench.budgeted(cfg, get("scratch").phases) == cfg  # trains per task: not scaled


def _check_schema(report: dict) -> None:
    assert report["command"].startswith("mtgan benchmark")
    keys = {"machine", "budget_s", "evaluator", "tasks", "config", "methods", "paired"}
    assert keys <= report.keys()
    for method, result in report["methods"].items():
        assert method in METHODS
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
    stage = report["pretrained"]  # the shared pretrained G's own images, scored
    assert stage["summary"]["fid"]["n"] == 2 and len(stage["tasks"]) == 2
    assert f"The shared pretrained G ({stage['pretrain_steps']} steps)" in table
    again = stage["relearned"]  # the same classes learned again from their shots
    assert len(again["tasks"]) == 2 and again["tasks"] != stage["tasks"]
    assert [t["real_fid"] for t in again["tasks"]] == [t["real_fid"] for t in stage["tasks"]]
    assert "The same classes learned again from their K shots" in table
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
    capsys.readouterr()
    assert main(["benchmark", "--report", str(out.with_suffix(".json"))]) == 0
    assert out.with_suffix(".md").read_text() == table
    assert "tiny.md (.csv, _scores.png)" in capsys.readouterr().out


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


def _kind(path: Path, report: dict) -> str:
    """What wrote a results file: the few-shot benchmark, --adapt-steps (its ``default_steps``
    whatever the file's name, as for the sweeps) or a plain benchmark."""
    if path.name.startswith("fewshot-"):
        return "fewshot"
    return "steps" if "default_steps" in report else "benchmark"


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*.json")), ids=lambda p: p.name)
def test_committed_results_have_their_schema(path):
    report = json.loads(path.read_text())
    if _kind(path, report) == "benchmark":
        _check_schema(report)
    elif _kind(path, report) == "steps":
        assert report["steps"] and report["default_steps"] >= 1
        for budgets in report["methods"].values():
            assert list(budgets) == [str(t) for t in report["steps"]]
            assert all(len(r["tasks"]) == len(report["tasks"]) for r in budgets.values())
    else:
        for result in report["conditions"].values():
            assert len(result["tasks"]) == len(report["tasks"])
            assert {"support", "classic"} <= set(result["paired"])


@register
class CopyTheShots(Method):
    """A method written in a test, as a user would add one: it returns its support images."""

    name = "test-copy"
    description = "samples are the support images, repeated"

    def fit(self, ctx, cfg):
        return self

    seconds: dict = {}

    def adapt(self, support, labels, seed, folder=None):
        def draw(per_class, seed):
            picks = [torch.nonzero(labels == s)[:, 0] for s in range(int(labels.max()) + 1)]
            index = torch.cat([p.repeat(per_class)[:per_class] for p in picks])
            return support[index].float() / 127.5 - 1, labels[index]

        return Adapted(draw)


@pytest.fixture
def copy_method():
    yield get("test-copy")
    METHODS.pop("test-copy")


def test_a_registered_method_is_benchmarked_beside_the_others(copy_method, bench, tmp_path):
    report = run_benchmark(bench.run, ["test-copy", "frozen"], tmp_path / "r", "mtgan benchmark")
    assert list(report["methods"]) == ["test-copy", "frozen"]
    copied = report["methods"]["test-copy"]["summary"]
    assert copied["copy_ratio"]["mean"] == 0.0  # its samples are its support images
    assert report["methods"]["test-copy"]["description"] == CopyTheShots.description
    with pytest.raises(ValueError, match="registered twice"):
        register(CopyTheShots)


def test_every_method_has_a_name_a_description_and_known_phases():
    for name, method in METHODS.items():
        assert method.name == name and method.description
        assert set(method.phases) <= {"pretrain", "meta-train", "figr"}


def test_benchmark_on_the_validation_classes(tmp_path, capsys):
    """``--split validation`` draws the tasks and trains M on the validation classes only."""
    data = image_folder(tmp_path / "imgs", classes=20, per_class=6, size=16)
    sets = [*TINY, "data.name=folder", f"data.root={data}", "data.test_classes=[k0,k1,k2]"]
    argv = ["benchmark", "--no-progress", "--methods", "frozen", "--tasks", "2"]
    argv += [a for s in sets for a in ("--set", s)] + ["--split", "validation"]
    assert main([*argv, "--out", str(tmp_path / "v")]) == 2  # no validation classes yet
    assert "data.validation_classes" in capsys.readouterr().err
    out = tmp_path / "r" / "v"
    assert main([*argv, "--set", "data.validation_classes=4", "--out", str(out)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    seen = {c for task in report["tasks"] for c in task}
    assert report["split"] == "validation" and len(seen) >= 3
    evaluator = report["evaluator"]
    assert not seen & {"k0", "k1", "k2"} and evaluator["n_train"] + evaluator["n_heldout"] == 4 * 6


def test_compare_pairs_two_results_files_task_by_task(tmp_path, capsys):
    def results(shift: float) -> dict:
        tasks = [
            {"fid": 10.0 + k + shift, "real_fid": 5.0, "kid": 1.0, "diversity": 2.0 * (1 + shift)}
            | {"real_diversity": 2.0, "mode_score": 3.0}
            for k in range(3)
        ]
        frozen = {"frozen": {"tasks": tasks}}
        names = [["a"], ["b"], ["c"]]
        return {
            "command": "mtgan",
            "tasks": names,
            "methods": frozen,
            "pretrained": {"tasks": tasks, "relearned": {"tasks": tasks[::-1]}},
        }

    paths = [tmp_path / "before.json", tmp_path / "after.json"]
    for path, shift in zip(paths, (0.0, 1.0), strict=True):
        path.write_text(json.dumps(results(shift)))
    assert main(["benchmark", "--compare", *map(str, paths)]) == 0
    rows = capsys.readouterr().out.splitlines()[2:]
    assert rows[0].startswith("| pretrained G | 2.2 → 2.4 |")  # the pretrained G's own scores
    assert rows[1].startswith("| training classes re-learned | 2.2 → 2.4 |")
    assert rows[2].startswith("| frozen | 2.2 → 2.4 | 1 → 2 | 1 ± 0 | 0 ± 0 | 2 ± 0 | 0 ± 0 |")
    other = results(0.0) | {"tasks": [["x"], ["b"], ["c"]]}
    paths[1].write_text(json.dumps(other))
    assert main(["benchmark", "--compare", *map(str, paths)]) == 2
    assert "different tasks" in capsys.readouterr().err


def test_benchmark_against_adaptation_steps(tmp_path, capsys):
    out = tmp_path / "results" / "tiny-steps"
    argv = ["benchmark", "--quick", "--no-progress", "--methods", "frozen,figr", "--tasks", "2"]
    argv += [f"--set={s}" for s in TINY[:4]] + ["--adapt-steps", "1,4", "--out", str(out)]
    assert main(argv) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["steps"] == [1, 4] and report["default_steps"] == 20  # --quick's adapt.steps
    for method in ("frozen", "figr"):
        assert list(report["methods"][method]) == ["1", "4"]
        for result in report["methods"][method].values():
            assert len(result["tasks"]) == 2
            assert {"fid", "kid", "mode_score", "diversity", "real_fid", "adapt_s"} <= set(
                result["tasks"][0]
            )
    frozen = report["methods"]["frozen"]
    assert frozen["1"]["tasks"][0]["fid"] != frozen["4"]["tasks"][0]["fid"]  # steps applied
    table = out.with_suffix(".md").read_text()
    assert "| figr | 4 |" in table and "| figr at 4 |" not in table
    assert out.with_suffix(".png").stat().st_size > 1000
    samples = out.parent / "tiny-steps_samples.png"
    assert samples.stat().st_size > 1000 and "(tiny-steps_samples.png)" in table
    with Image.open(samples) as grid:  # support, then 2 methods x 2 budgets, side by side
        assert grid.width > 5 * grid.height
    out.with_suffix(".md").unlink()
    capsys.readouterr()
    assert main(["benchmark", "--report", str(out.with_suffix(".json"))]) == 0
    assert out.with_suffix(".md").read_text() == table and not out.with_suffix(".csv").exists()
    assert capsys.readouterr().out.strip().endswith("tiny-steps.md (.png)")
    samples.unlink()  # a steps file from before the grid was drawn: no dangling link
    assert main(["benchmark", "--report", str(out.with_suffix(".json"))]) == 0
    assert "_samples.png" not in out.with_suffix(".md").read_text()
    assert main([*argv[:-2], "--adapt-steps", "0,5"]) == 2
    assert "--adapt-steps takes whole numbers" in capsys.readouterr().err


def test_steps_table_compares_every_method_with_frozen_at_the_same_and_at_most_steps():
    from mtgan.runs.results import _against_baseline

    def at(*fids):
        return {"tasks": [{"fid": f, "kid": f / 4} for f in fids]}

    methods = {
        "mtgan": {"50": at(10, 12), "300": at(5, 6)},
        "mtgan-x": {"50": at(8, 9), "300": at(5, 6)},
        "frozen": {"50": at(12, 13), "300": at(4, 5)},
    }
    lines = _against_baseline(methods, ["50", "300"], "frozen")
    assert "| mtgan-x | 50 | -4 ± 0 | -1 ± 0 | 4 ± 0 | 1 ± 0 |" in lines
    assert "| mtgan | 300 | 1 ± 0 | 0.25 ± 0 | 1 ± 0 | 0.25 ± 0 |" in lines
    assert not any(line.startswith("| frozen |") for line in lines)
    assert _against_baseline({k: methods[k] for k in ("mtgan", "frozen")}, ["50"], "frozen") == []


def test_steps_table_compares_every_budget_with_the_same_method_at_the_default():
    from mtgan.runs.results import _against_default

    def at(*fids):
        return {
            "tasks": [{"fid": f, "kid": f / 4, "diversity": 1.0, "mode_score": f} for f in fids]
        }

    methods = {"frozen": {"300": at(10, 12), "600": at(7, 8)}, "mtgan": {"300": at(9, 9)}}
    lines = _against_default(methods, ["300", "600"], "300")
    assert "| frozen | 600 | -3.5 ± 6.4 | -0.875 ± 1.6 | 0 ± 0 | -3.5 ± 6.4 |" in lines
    assert not any(line.startswith(("| mtgan |", "| frozen | 300 |")) for line in lines)
    assert _against_default(methods, ["300", "600"], "50") == []


def test_reuse_pretraining_takes_the_cached_gan_and_gives_the_same_results(tmp_path, monkeypatch):
    import mtgan.runs.benchmark as benchmark
    from mtgan.files import cache_dir

    argv = ["benchmark", "--quick", "--no-progress", "--methods", "frozen", "--tasks", "2"]
    argv += [f"--set={s}" for s in TINY[:4]] + ["--adapt-steps", "2", "--reuse-pretraining"]
    first, second = tmp_path / "first", tmp_path / "second"
    assert main([*argv, "--out", str(first)]) == 0
    assert len(list((cache_dir() / "pretrained").glob("*.safetensors"))) == 1

    calls, real = [], benchmark.pretrain

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(benchmark, "pretrain", counted)
    assert main([*argv, "--out", str(second)]) == 0
    scores = [
        json.loads(p.with_suffix(".json").read_text())["methods"]["frozen"]["2"]["tasks"]
        for p in (first, second)
    ]
    assert [t["fid"] for t in scores[0]] == [t["fid"] for t in scores[1]] and not calls
    assert main([*argv, "--set", "pretrain.lr=1e-3", "--out", str(tmp_path / "third")]) == 0
    assert calls == [1]  # another setting: pretrained afresh
