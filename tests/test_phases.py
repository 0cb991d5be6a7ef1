"""The method's invariants: what each phase may change, and the meta-gradient itself."""

import copy

import pytest
import torch

from mtgan.config import load_config, with_overrides
from mtgan.data.episodes import EpisodeSampler
from mtgan.errors import ConfigError
from mtgan.nn.ss import is_ss_parameter
from mtgan.phases.adapt import adapt, class_pairs, sample
from mtgan.phases.meta_train import (
    LOSSES,
    meta_step,
    meta_train,
    stack_tasks,
    task_meta_gradient,
    validation_curve,
)
from mtgan.phases.pretrain import build_gan, pretrain
from mtgan.phases.step import Update
from tests.conftest import TINY

CPU = torch.device("cpu")


def _state(gan):
    return {k: v.detach().to("cpu", copy=True) for k, v in gan.state_dict().items()}


def _group(state, prefix, ss):
    return {k: v for k, v in state.items() if k.startswith(prefix) and is_ss_parameter(k) == ss}


@pytest.fixture
def pretrained(tiny_cfg, toy_dataset, device):
    torch.manual_seed(0)
    gan = build_gan(tiny_cfg, len(toy_dataset.classes))
    before = _state(gan)
    pretrain(gan, toy_dataset, tiny_cfg, device)
    return gan, before


def test_pretraining_changes_weights_but_not_scale_and_shift(pretrained):
    gan, before = pretrained
    after = _state(gan)
    for prefix in ("generator.nm", "generator.ic", "discriminator.fe", "discriminator.cf"):
        weights = _group(after, prefix, ss=False)
        assert any(not torch.equal(v, before[k]) for k, v in weights.items()), prefix
    for k, v in after.items():
        if is_ss_parameter(k):
            assert torch.equal(v, before[k]), k


def test_meta_training_changes_only_ss_nm_and_cf(pretrained, tiny_cfg, toy_dataset, device):
    gan, _ = pretrained
    before = _state(gan)
    meta_train(gan, toy_dataset, tiny_cfg, device)
    after = _state(gan)
    frozen = {k for k in after if k.startswith(("generator.ic", "discriminator.fe"))}
    for k in frozen:
        if is_ss_parameter(k):
            continue
        assert torch.equal(after[k], before[k]), f"{k} changed in meta-training"
    assert any(not torch.equal(after[k], before[k]) for k in frozen if k.endswith("ss_scale"))
    assert any(not torch.equal(after[k], before[k]) for k in frozen if k.endswith("ss_shift"))
    assert after["generator.nm.weight"].shape[1] == tiny_cfg.model.z_dim + tiny_cfg.task.n_way
    assert after["discriminator.cf.weight"].shape[0] == tiny_cfg.task.n_way + 1


def test_adaptation_changes_only_nm_and_cf(pretrained, tiny_cfg, toy_dataset, device):
    gan, _ = pretrained
    meta_train(gan, toy_dataset, tiny_cfg, device)
    meta_state = _state(gan)
    task = EpisodeSampler(toy_dataset, 3, 2, 2, seed=5).sample()
    adapted, _ = adapt(gan, task.support, task.support_labels, tiny_cfg, device)
    after = _state(adapted)
    for k, v in after.items():
        if k.startswith(("generator.nm", "discriminator.cf")):
            assert not torch.equal(v, meta_state[k]), f"{k} did not adapt"
        else:
            assert torch.equal(v, meta_state[k]), f"{k} changed in adaptation"
    assert all(torch.equal(v, meta_state[k]) for k, v in _state(gan).items()), "meta model mutated"


def test_adaptation_trains_scale_and_shift_at_their_own_rate_when_asked(
    pretrained, tiny_cfg, toy_dataset, device
):
    gan, _ = pretrained
    before = _state(gan)
    task = EpisodeSampler(toy_dataset, 3, 2, 2, seed=5).sample()
    cfg = with_overrides(tiny_cfg, ["adapt.steps=1", "adapt.lr=2e-3", "adapt.ss_lr=5e-4"])
    after = _state(adapt(gan, task.support, task.support_labels, cfg, device)[0])
    for prefix in ("generator.ic", "discriminator.fe"):  # Adam's first step: lr per element
        moved = [(after[k] - before[k]).abs().max().item() for k in _group(after, prefix, True)]
        assert max(moved) == pytest.approx(5e-4, rel=1e-3), prefix
        assert all(torch.equal(after[k], before[k]) for k in _group(after, prefix, False))
    z = tiny_cfg.model.z_dim  # new heads keep the pretrained NM's noise columns
    nm = after["generator.nm.weight"][:, :z] - before["generator.nm.weight"][:, :z]
    assert nm.abs().max().item() == pytest.approx(2e-3, rel=1e-3)


def test_adaptation_to_a_different_number_of_classes(pretrained, tiny_cfg, toy_dataset, device):
    gan, _ = pretrained
    meta_train(gan, toy_dataset, tiny_cfg, device)
    task = EpisodeSampler(toy_dataset, 5, 2, 0, seed=1).sample()
    adapted, _ = adapt(gan, task.support, task.support_labels, tiny_cfg, device)
    assert adapted.n_classes == 5 and adapted.discriminator.cf.out_features == 6


def test_eq12_heads_are_the_mean_of_the_adapted_heads(pretrained, tiny_cfg, toy_dataset, device):
    gan, _ = pretrained
    gan.reset_heads(3)
    gan.freeze_backbone()
    sampler = EpisodeSampler(toy_dataset, 3, 2, 2, seed=5)
    tasks = [sampler.sample() for _ in range(3)]
    z_dim, steps = gan.generator.z_dim, tiny_cfg.meta.inner_steps
    batch = stack_tasks(tasks, steps, z_dim, torch.Generator().manual_seed(9), device)
    adapted = [task_meta_gradient(gan, batch[i], tiny_cfg).heads for i in range(3)]
    outer = {s: Update(gan.names(f"ss_{s}"), 1e-3, "adam", (0.9, 0.999)) for s in "gd"}
    meta_step(gan, tasks, tiny_cfg, outer, torch.Generator().manual_seed(9), device)
    own = dict(gan.named_parameters())
    for n in adapted[0]:
        mean = (adapted[0][n] + adapted[1][n] + adapted[2][n]) / 3
        torch.testing.assert_close(own[n], mean)


def _double_setup(toy_dataset, second_order):
    cfg = load_config(
        overrides=TINY
        + [
            f"meta.second_order={str(second_order).lower()}",
            "meta.inner_optimizer=sgd",
            "meta.inner_lr=0.5",
            "meta.inner_steps=2",
        ]
    )
    torch.manual_seed(3)
    gan = build_gan(cfg, 3).double()
    gan.reset_heads(3)
    gan.double().freeze_backbone()
    with torch.no_grad():  # move SS away from identity so that no layer is degenerate
        for n, p in gan.named_parameters():
            if is_ss_parameter(n):
                p.add_(0.1 * torch.randn_like(p))
    task = EpisodeSampler(toy_dataset, 3, 2, 2, seed=2).sample()
    return cfg, gan, task


def _one_task(task, cfg, gan):
    """The task alone (no task dimension), with seeded noise."""
    rng = torch.Generator().manual_seed(7)
    device = next(gan.parameters()).device
    return stack_tasks([task], cfg.meta.inner_steps, gan.generator.z_dim, rng, device)[0]


def _query_loss(gan, task, cfg, side):
    losses = task_meta_gradient(gan, _one_task(task, cfg, gan), cfg).losses
    return losses[LOSSES.index(f"query_loss_{side}")].item()


def test_second_order_meta_gradient_matches_finite_differences(toy_dataset):
    """Eq. 10-11 with SGD inner steps (Adam's sign-like steps defeat finite differences)."""
    torch.set_default_dtype(torch.float64)
    try:
        cfg, gan, task = _double_setup(toy_dataset, True)
        _, grads, _ = task_meta_gradient(gan, _one_task(task, cfg, gan), cfg)
        params = dict(gan.named_parameters())
        for side, group in (("g", "ss_g"), ("d", "ss_d")):
            names = gan.names(group)
            for name, grad in zip(names, grads[side], strict=True):
                p = params[name]
                for idx in range(min(2, p.numel())):
                    eps = 1e-7  # small, so as not to step across a ReLU kink
                    with torch.no_grad():
                        p.view(-1)[idx] += eps
                    up = _query_loss(gan, task, cfg, side)
                    with torch.no_grad():
                        p.view(-1)[idx] -= 2 * eps
                    down = _query_loss(gan, task, cfg, side)
                    with torch.no_grad():
                        p.view(-1)[idx] += eps
                    numeric = (up - down) / (2 * eps)
                    assert grad.view(-1)[idx].item() == pytest.approx(
                        numeric, rel=1e-4, abs=1e-7
                    ), name
    finally:
        torch.set_default_dtype(torch.float32)


def test_first_order_gradient_differs_from_second_order(toy_dataset):
    torch.set_default_dtype(torch.float64)
    try:
        cfg1, gan, task = _double_setup(toy_dataset, False)
        cfg2 = copy.deepcopy(cfg1)
        cfg2.meta.second_order = True
        _, g1, _ = task_meta_gradient(gan, _one_task(task, cfg1, gan), cfg1)
        _, g2, _ = task_meta_gradient(gan, _one_task(task, cfg2, gan), cfg2)
        diff = sum((a - b).abs().sum() for a, b in zip(g1["g"], g2["g"], strict=True))
        assert diff > 1e-6
    finally:
        torch.set_default_dtype(torch.float32)


def test_pretraining_is_deterministic_for_a_seed(tiny_cfg, toy_dataset, device):
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        gan = build_gan(tiny_cfg, len(toy_dataset.classes))
        pretrain(gan, toy_dataset, tiny_cfg, device)
        states.append(_state(gan))
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_head_update_reset_keeps_the_initial_heads_and_learns_ss(
    pretrained, tiny_cfg, toy_dataset, device
):
    gan, _ = pretrained
    fresh = copy.deepcopy(gan)
    fresh.reset_heads(tiny_cfg.task.n_way, tiny_cfg.model.head_init)
    tiny_cfg.meta.head_update = "reset"
    meta_train(gan, toy_dataset, tiny_cfg, device)
    after, start = _state(gan), _state(fresh)
    for k in after:
        if k.startswith(("generator.nm", "discriminator.cf")):
            assert torch.equal(after[k], start[k]), k
    assert any(not torch.equal(after[k], start[k]) for k in after if is_ss_parameter(k))


def test_head_step_moves_the_heads_that_fraction_of_the_way_to_the_adapted_mean(
    pretrained, tiny_cfg, toy_dataset, monkeypatch, device
):
    """Eq. 12 with a step size: after one outer step NM and CF lie head_step of the way from
    where they started to the mean of the task-adapted heads."""
    import mtgan.phases.meta_train as phase

    gan, _ = pretrained
    cfg = copy.deepcopy(tiny_cfg)
    cfg.meta.head_update, cfg.meta.head_step, cfg.meta.steps = "average", 0.25, 1
    means, task_gradient = [], phase.TaskGradient.sum

    def recording(parts):
        total = task_gradient(parts)
        means.append({n: v.cpu() / cfg.meta.meta_batch for n, v in total.heads.items()})
        return total

    monkeypatch.setattr(phase.TaskGradient, "sum", staticmethod(recording))
    fresh = copy.deepcopy(gan)
    fresh.reset_heads(cfg.task.n_way, cfg.model.head_init)
    start = _state(fresh)
    meta_train(gan, toy_dataset, cfg, device)
    after = _state(gan)
    for name, mean in means[0].items():
        expected = start[name] + 0.25 * (mean - start[name])
        assert not torch.allclose(after[name], start[name]), name
        assert torch.allclose(after[name], expected, atol=1e-6), name


@pytest.mark.parametrize("sides", ["g", "d"])
def test_ss_sides_trains_one_sides_scale_and_shift_only(
    pretrained, tiny_cfg, toy_dataset, sides, device
):
    gan, _ = pretrained
    cfg = copy.deepcopy(tiny_cfg)
    cfg.meta.ss_sides = sides
    start = _state(gan)
    meta_train(gan, toy_dataset, cfg, device)
    after = _state(gan)
    for side in "gd":
        moved = any(not torch.equal(after[n], start[n]) for n in gan.names(f"ss_{side}"))
        assert moved == (side == sides), side


def test_pretraining_with_ema_ends_with_the_average_of_the_generators_weights(
    tiny_cfg, toy_dataset, monkeypatch, device
):
    """G's weights after each step, averaged as ema_t = d_t ema_{t-1} + (1 - d_t) w_t from the
    initial weights, are the pretrained G's (the discriminator is not averaged)."""
    import mtgan.phases.pretrain as phase

    cfg = copy.deepcopy(tiny_cfg)
    cfg.pretrain.ema, cfg.pretrain.steps = 0.5, 4
    seen, run_phase = [], phase.run_phase

    def recording(name, gan, steps, step, *args, **kwargs):
        def step_and_record():
            losses = step()
            seen.append({k: v.detach().to("cpu", copy=True) for k, v in gan.named_parameters()})
            return losses

        return run_phase(name, gan, steps, step_and_record, *args, **kwargs)

    monkeypatch.setattr(phase, "run_phase", recording)
    torch.manual_seed(0)
    gan = build_gan(cfg, len(toy_dataset.classes))
    initial = {k: v.detach().clone() for k, v in gan.named_parameters()}
    pretrain(gan, toy_dataset, cfg, device)
    final = {k: v.detach().cpu() for k, v in gan.named_parameters()}
    for name in gan.names("g"):
        average = initial[name]
        for t, weights in enumerate(seen, 1):
            decay = min(0.5, (1 + t) / (10 + t))
            average = decay * average + (1 - decay) * weights[name]
        assert torch.allclose(final[name], average, atol=1e-6), name
        assert not torch.equal(final[name], seen[-1][name]), name
    assert all(torch.equal(final[n], seen[-1][n]) for n in gan.names("d"))


def _selected(gan, toy_dataset, cfg, scores):
    """Meta-train with a validation that returns ``scores`` in turn and snapshots the
    meta-model it was shown; returns the snapshots and the losses."""
    shown, order = [], iter(scores)

    def validate(model):
        shown.append({k: v.detach().clone() for k, v in model.named_parameters()})
        return next(order)

    history = meta_train(gan, toy_dataset, cfg, CPU, validate=validate)
    return shown, history


@pytest.mark.parametrize("scores, best", [([5.0, 3.0, 1.0, 4.0], 2), ([1.0, 2.0, 3.0, 1.5], 0)])
def test_meta_training_ends_with_the_best_validated_meta_model(
    pretrained, tiny_cfg, toy_dataset, scores, best
):
    cfg = copy.deepcopy(tiny_cfg)
    cfg.meta.steps, cfg.meta.validate_every = 6, 2
    gan = copy.deepcopy(pretrained[0])
    shown, history = _selected(gan, toy_dataset, cfg, scores)
    assert len(shown) == 4  # the start, then after steps 2, 4 and 6
    final = dict(gan.named_parameters())
    selected = [n for n in final if is_ss_parameter(n)] + gan.names("nm") + gan.names("cf")
    assert all(torch.equal(final[n], shown[best][n]) for n in selected)
    assert not all(torch.equal(final[n], shown[-1][n]) for n in selected)
    assert validation_curve(history, 2) == [(0, scores[0]), (2, scores[1]), (4, scores[2]),
                                            (6, scores[3])]  # fmt: skip
    assert [h["validation"] for h in history] == [scores[0], *scores[1:2] * 2, *scores[2:3] * 2,
                                                  scores[3]]  # fmt: skip


@pytest.mark.parametrize("outer_g, sees_query", [("eq11", False), ("features", True)])
def test_only_feature_matching_lets_the_query_images_reach_gs_scale_and_shift(
    pretrained, tiny_cfg, toy_dataset, outer_g, sees_query
):
    """Eq. 11's L_G holds no query image, so G's SS gradient ignores them (the paper's gap);
    ``meta.outer_g=features`` compares generated with query images. D's side sees them always."""
    cfg = copy.deepcopy(tiny_cfg)
    cfg.meta.outer_g = outer_g
    gan = copy.deepcopy(pretrained[0])
    gan.reset_heads(3)
    gan.freeze_backbone()
    task = EpisodeSampler(toy_dataset, 3, 2, 2, seed=2).sample()
    batch = _one_task(task, cfg, gan)
    other = copy.copy(batch)
    other.query = batch.query.flip(-1)  # other query images, same support set and noise
    g1, g2 = (task_meta_gradient(gan, b, cfg).grads for b in (batch, other))
    same_g = all(torch.equal(a, b) for a, b in zip(g1["g"], g2["g"], strict=True))
    assert same_g != sees_query
    assert not all(torch.equal(a, b) for a, b in zip(g1["d"], g2["d"], strict=True))


def test_learned_rate_gradient_of_one_inner_step_matches_finite_differences(toy_dataset):
    """Meta-SGD, first order: after one SGD inner step theta_1 = theta_0 - lr exp(r) g, so
    dL/dr = dL/dtheta_1 (theta_1 - theta_0) exactly. NM's rates against the query L_G (CF's
    step comes first and does not depend on them)."""
    torch.set_default_dtype(torch.float64)
    try:
        cfg, gan, task = _double_setup(toy_dataset, False)
        cfg.meta.inner_steps, cfg.meta.learn_rates = 1, True
        with torch.no_grad():
            for p in gan.rates.parameters():
                p.add_(0.3 * torch.randn_like(p))
        _, grads, _ = task_meta_gradient(gan, _one_task(task, cfg, gan), cfg)
        by_name = dict(zip(gan.names("rates"), grads["rates"], strict=True))
        for name in ("rates.nm_class", "rates.nm_noise", "rates.nm_bias"):
            p = dict(gan.named_parameters())[name]
            for idx in range(2):
                eps = 1e-6
                with torch.no_grad():
                    p.view(-1)[idx] += eps
                up = _query_loss(gan, task, cfg, "g")
                with torch.no_grad():
                    p.view(-1)[idx] -= 2 * eps
                down = _query_loss(gan, task, cfg, "g")
                with torch.no_grad():
                    p.view(-1)[idx] += eps
                numeric = (up - down) / (2 * eps)
                assert by_name[name].reshape(-1)[idx].item() == pytest.approx(
                    numeric, rel=1e-4, abs=1e-8
                ), name
        assert by_name["rates.cf_class"].abs().sum() > 0
    finally:
        torch.set_default_dtype(torch.float32)


def test_meta_training_learns_rates_only_when_asked(pretrained, tiny_cfg, toy_dataset, device):
    for learn in (False, True):
        gan = copy.deepcopy(pretrained[0])
        cfg = copy.deepcopy(tiny_cfg)
        cfg.meta.learn_rates = learn
        meta_train(gan, toy_dataset, cfg, device)
        moved = [bool(p.abs().sum() > 0) for p in gan.rates.parameters()]
        assert all(moved) if learn else not any(moved)


def test_adaptation_scales_each_learning_rate_by_the_learned_multiplier(
    pretrained, tiny_cfg, toy_dataset, device
):
    """A multiplier of exp(-60) stops NM's class columns; the noise columns still move."""
    gan = copy.deepcopy(pretrained[0])
    gan.reset_heads(3)
    with torch.no_grad():
        gan.rates.nm_class.fill_(-60.0)
    task = EpisodeSampler(toy_dataset, 3, 2, 2, seed=1).sample()
    adapted, _ = adapt(gan, task.support, task.support_labels, tiny_cfg, device)
    z = gan.generator.z_dim
    before, after = gan.generator.nm.weight, adapted.generator.nm.weight
    assert torch.allclose(after[:, z:], before[:, z:], atol=1e-12)
    assert not torch.allclose(after[:, :z], before[:, :z])


def test_update_scales_multiply_the_step_of_the_named_parameters_only():
    params = {"a": torch.zeros(2), "b": torch.zeros(2)}
    update = Update(["a", "b"], 0.1, "sgd", scales={"a": torch.tensor([2.0, 0.5])})
    update(params, [torch.ones(2), torch.ones(2)])
    torch.testing.assert_close(params["a"], torch.tensor([-0.2, -0.05]))
    torch.testing.assert_close(params["b"], torch.tensor([-0.1, -0.1]))


def test_learned_rates_are_summarised_for_the_run_report():
    from mtgan.nn.rates import HeadRates
    from mtgan.runs.run_report import _rate_lines

    rates = HeadRates(z_dim=2, nm_out=3, features=4)
    with torch.no_grad():
        rates.nm_class.copy_(torch.tensor([[0.0], [0.0], [3.0]]).log1p())  # 1, 1, 4
    summary = rates.summary()
    assert summary["nm_class"]["min"] == pytest.approx(1.0)
    assert summary["nm_class"]["max"] == pytest.approx(4.0)
    assert summary["nm_class"]["mean"] == pytest.approx(4 ** (1 / 3))
    assert summary["cf_fake"] == {"mean": 1.0, "min": 1.0, "max": 1.0}
    assert "| nm_class | 1.59 | 1 | 4 |" in _rate_lines(summary)
    assert _rate_lines(None) == []


def test_only_learned_rates_multiply_a_step():
    from mtgan.nn.rates import HeadRates

    rates = HeadRates(z_dim=2, nm_out=3, features=4)
    assert rates.multipliers(5) == {}
    with torch.no_grad():
        rates.cf_fake.fill_(1.0)
    multipliers = rates.multipliers(5)
    assert list(multipliers) == ["discriminator.cf.weight"]
    assert torch.allclose(multipliers["discriminator.cf.weight"][-1], torch.tensor(torch.e))
    assert torch.equal(multipliers["discriminator.cf.weight"][:-1], torch.ones(5, 4))


def test_adapting_nm_classes_keeps_nms_noise_columns_and_bias(pretrained, tiny_cfg, toy_dataset):
    gan, _ = pretrained
    gan.reset_heads(3)
    before = _state(gan)
    task = EpisodeSampler(toy_dataset, 3, 2, 2, seed=5).sample()
    cfg = with_overrides(tiny_cfg, ["adapt.nm=classes"])
    after = _state(
        adapt(gan, task.support, task.support_labels, cfg, next(gan.parameters()).device)[0]
    )
    z = tiny_cfg.model.z_dim
    w, w0 = after["generator.nm.weight"], before["generator.nm.weight"]
    assert torch.equal(w[:, :z], w0[:, :z])
    assert torch.equal(after["generator.nm.bias"], before["generator.nm.bias"])
    assert not torch.equal(w[:, z:], w0[:, z:])
    assert not torch.equal(after["discriminator.cf.weight"], before["discriminator.cf.weight"])
    with pytest.raises(ConfigError, match="adapt.nm"):
        with_overrides(tiny_cfg, ["adapt.nm=noise"])


def test_class_pairs_pair_every_image_with_one_of_its_class():
    labels = torch.tensor([2, 0, 1, 1, 0, 2, 2, 1, 1])  # 2, 4 and 3 images: odd counts too
    images = torch.arange(9.0)
    paired_images, paired = class_pairs(images, labels)
    assert len(paired) % 2 == 0 and torch.equal(paired[0::2], paired[1::2])
    assert torch.equal(labels[paired_images.long()], paired)  # images travel with their labels
    assert set(paired_images.tolist()) == set(images.tolist())  # none left out
    assert len(paired) == 10  # one image repeated for each class with an odd count


def test_adapting_with_mode_seeking_spreads_a_classs_samples(pretrained, tiny_cfg, toy_dataset):
    from mtgan.metrics.diversity import pairwise_diversity

    gan, _ = pretrained
    task = EpisodeSampler(toy_dataset, 3, 3, 2, seed=5).sample()
    spread = {}
    for weight in (0, 50):
        cfg = with_overrides(
            tiny_cfg, ["adapt.steps=10", "adapt.lr=1e-2", f"adapt.mode_seeking={weight}"]
        )
        adapted, history = adapt(gan, task.support, task.support_labels, cfg, CPU)
        fake, slots = sample(adapted, 8, torch.Generator().manual_seed(0), CPU)
        spread[weight] = sum(pairwise_diversity(fake[slots == s]) for s in range(3))
        assert len(history) == 10
    assert spread[50] > 1.2 * spread[0], spread
    with pytest.raises(ConfigError, match="adapt.mode_seeking"):
        with_overrides(tiny_cfg, ["adapt.mode_seeking=-1"])
