"""The fast paths compute what the plain ones do: the batched meta-batch (eq. 10-11 for T tasks
at once) against a loop over the tasks, adaptation with FE(support) computed once against the
plain GAN step, and the channels-last layout against the default one."""

import copy

import pytest
import torch

from mtgan.config import load_config
from mtgan.data.episodes import EpisodeSampler
from mtgan.nn.ss import is_ss_parameter
from mtgan.phases.adapt import adapt
from mtgan.phases.common import noise, place, to_device
from mtgan.phases.meta_train import stack_tasks, task_meta_gradient
from mtgan.phases.pretrain import build_gan
from mtgan.phases.step import GanStep, Update, trainable_params
from tests.conftest import TINY

CPU = torch.device("cpu")


def _setup(toy_dataset, second_order, tasks=3, augment="", device=CPU):
    order = f"meta.second_order={str(second_order).lower()}"
    cfg = load_config(overrides=[*TINY, order, f"adapt.augment={augment}"])
    torch.manual_seed(0)
    gan = build_gan(cfg, 8).to(device, torch.get_default_dtype())
    gan.reset_heads(cfg.task.n_way)
    gan.freeze_backbone()
    with torch.no_grad():  # SS away from identity, so that a mixed-up SS would show
        for n, p in gan.named_parameters():
            if is_ss_parameter(n):
                p.add_(0.1 * torch.randn_like(p))
    sampler = EpisodeSampler(toy_dataset, 3, 2, 2, seed=4)
    rng = torch.Generator().manual_seed(1)
    batch = stack_tasks(
        [sampler.sample() for _ in range(tasks)], 2, gan.generator.z_dim, rng, device
    )
    return cfg, gan, batch


@pytest.fixture
def float64():
    """Second-order gradients through Adam's inner steps amplify float32 rounding (Adam's step
    g / (|g| + eps) is steep where g is tiny), so the comparison runs in float64."""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize("second_order", [False, True], ids=["first-order", "second-order"])
@pytest.mark.parametrize("augment", ["", "translation,cutout,color"], ids=["plain", "augmented"])
def test_vectorised_meta_batch_equals_the_loop_over_tasks(
    toy_dataset, second_order, augment, float64, device
):
    cfg, gan, batch = _setup(toy_dataset, second_order, augment=augment, device=device)
    heads, grads, losses = task_meta_gradient(gan, batch, cfg)
    loop = [task_meta_gradient(gan, batch[i], cfg) for i in range(3)]
    for name, stacked in heads.items():
        assert stacked.shape[0] == 3
        for i, (one_heads, _, _) in enumerate(loop):
            assert torch.allclose(stacked[i], one_heads[name], rtol=1e-10, atol=1e-12), name
    for side in "gd":
        for k, grad in enumerate(grads[side]):
            summed = sum(one_grads[side][k] for _, one_grads, _ in loop)
            assert torch.allclose(grad, summed, rtol=1e-9, atol=1e-12), (side, k)
    summed = sum(one.losses for one in loop)
    torch.testing.assert_close(losses, summed, rtol=1e-10, atol=0)


def test_tasks_keep_their_own_heads(toy_dataset):
    """Each task's adapted NM and CF depend on its own support set only."""
    cfg, gan, batch = _setup(toy_dataset, False)
    heads, _, _ = task_meta_gradient(gan, batch, cfg)
    assert not torch.allclose(
        heads["discriminator.cf.weight"][0], heads["discriminator.cf.weight"][1]
    )
    swapped = batch[[1, 0, 2]]
    heads_swapped, _, _ = task_meta_gradient(gan, swapped, cfg)
    for name in heads:
        torch.testing.assert_close(heads_swapped[name][0], heads[name][1])


def _plain_adapt(gan, task, cfg, seed, device):
    """Eq. 10 with FE(support) recomputed every step: a fresh copy of the support images at
    each step, so that the step cannot reuse what it computed before."""
    gan = place(copy.deepcopy(gan), device, cfg.speed.channels_last)  # the layout adapt uses
    params = trainable_params(gan, gan.names("nm") + gan.names("cf"))
    upd_d = Update(gan.names("cf"), cfg.adapt.lr, cfg.adapt.optimizer)
    upd_g = Update(gan.names("nm"), cfg.adapt.lr, cfg.adapt.optimizer)
    rng, real = torch.Generator().manual_seed(seed), to_device(task.support, device)
    labels = task.support_labels.to(device)
    step = GanStep(gan, upd_d, upd_g)
    for _ in range(cfg.adapt.steps):
        z = noise(len(real), gan.generator.z_dim, rng, device)
        params, _ = step(params, real.clone(), labels, z)
    return gan


@pytest.mark.parametrize("channels_last", [False, True])
def test_adaptation_equals_the_plain_gan_step(toy_dataset, channels_last, device):
    cfg, gan, _ = _setup(toy_dataset, False)
    cfg.speed.channels_last = channels_last
    task = EpisodeSampler(toy_dataset, 3, 2, 0, seed=6).sample()
    fast, _ = adapt(gan, task.support, task.support_labels, cfg, device, seed=3)
    plain = _plain_adapt(gan, task, cfg, 3, device)
    tol = {"rtol": 1e-4, "atol": 1e-5} if channels_last else {"rtol": 1e-6, "atol": 1e-7}
    for name, value in plain.state_dict().items():
        assert torch.allclose(fast.state_dict()[name], value, **tol), name
    assert not torch.allclose(fast.generator.nm.weight.cpu(), gan.generator.nm.weight.cpu())


def test_the_step_computes_fe_of_the_same_real_images_once(toy_dataset, device):
    """With FE fixed and no augmentation, FE(real) is computed at the first step only."""
    cfg, gan, _ = _setup(toy_dataset, False, device=device)
    task = EpisodeSampler(toy_dataset, 3, 2, 0, seed=6).sample()
    params = trainable_params(gan, gan.names("nm") + gan.names("cf"))
    step = GanStep(gan, Update(gan.names("cf"), 1e-3), Update(gan.names("nm"), 1e-3))
    calls = []
    gan.discriminator.fe.register_forward_hook(lambda *_: calls.append(1))
    real, z = to_device(task.support, device), torch.randn(6, gan.generator.z_dim, device=device)
    labels = task.support_labels.to(device)
    for _ in range(3):
        params, _ = step(params, real, labels, z)
    assert len(calls) == 3 + 1  # FE(fake) at every step, FE(real) once
    step(params, real.clone(), labels, z)
    assert len(calls) == 4 + 2  # other real images: FE(real) again
