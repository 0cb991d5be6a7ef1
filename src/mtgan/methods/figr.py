"""FIGR (Clouatre and Demers 2019): Reptile over an unconditional WGAN-GP.

Every meta-task is one training class: a copy of G and D takes ``figr.inner_steps`` WGAN-GP
steps (SGD) on a few of its images, and the meta-weights move towards the copy with Adam,
taking ``meta - adapted`` as the gradient (Reptile). A new class gets its own generator from
``figr.adapt_steps`` of the same inner steps on its K images, so an N-way task has N generators.

The networks are ours at the same widths, with one class: G's one-hot input is a constant, and
the critic is D's log-odds of "real" against "fake" (see :mod:`mtgan.losses`). Scale and shift
stay at identity and are not trained.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch

from mtgan.config import Config
from mtgan.data.base import ClassDataset, to_model_range
from mtgan.data.episodes import EpisodeSampler
from mtgan.losses import WassersteinGP
from mtgan.methods.base import Adapted, Context, Method, register
from mtgan.nn.gan import ConditionalGAN
from mtgan.nn.generator import calibrate_batchnorm
from mtgan.phases.common import noise
from mtgan.phases.loop import run_phase
from mtgan.phases.step import GanStep, Params, Update, trainable_params


@register
class Figr(Method):
    name = "figr"
    description = "FIGR: Reptile over an unconditional WGAN-GP, one generator per class"
    phases = ("figr",)
    adapt_steps_key = "figr.adapt_steps"

    def fit(self, ctx: Context, cfg: Config) -> FigrFitted:
        torch.manual_seed(cfg.seed)
        gan = build_figr(cfg)
        start = time.perf_counter()
        figr_meta_train(gan, ctx.training_set(), cfg, ctx.device, ctx.progress)
        return FigrFitted(gan, cfg, ctx.device, {"figr": time.perf_counter() - start})


@dataclass
class FigrFitted:
    """FIGR's meta-learned weights: a task gets one generator per class."""

    gan: ConditionalGAN
    cfg: Config
    device: torch.device
    seconds: dict[str, float]

    def adapt(self, support, labels, seed, folder=None) -> Adapted:
        gans = [
            figr_adapt(self.gan, support[labels == slot], self.cfg, self.device, seed + slot)
            for slot in range(int(labels.max()) + 1)
        ]
        return Adapted(lambda per_class, seed: _samples(gans, per_class, seed, self.device))


def build_figr(cfg: Config) -> ConditionalGAN:
    """FIGR's unconditional G and D: our networks with one class and FIGR's z size."""
    m, d = cfg.model, cfg.data
    return ConditionalGAN(1, d.image_size, d.channels, cfg.figr.z_dim, m.g_width, m.d_width)


def _weights(gan: ConditionalGAN) -> list[str]:
    return gan.names("g") + gan.names("d")


def inner_loop(
    gan: ConditionalGAN,
    params: Params,
    images: torch.Tensor,
    steps: int,
    cfg: Config,
    rng: torch.Generator,
) -> Params:
    """``steps`` WGAN-GP steps of SGD on one class's uint8 ``images``, updating ``params``."""
    lr, device = cfg.figr.inner_lr, images.device
    update_d, update_g = Update(gan.names("d"), lr, "sgd"), Update(gan.names("g"), lr, "sgd")
    gan_step = GanStep(gan, update_d, update_g, WassersteinGP(rng))
    real = to_model_range(images)
    labels = torch.zeros(len(real), dtype=torch.long, device=device)
    for _ in range(steps):
        z = noise(len(real), gan.generator.z_dim, rng, device)
        params, _ = gan_step(params, real, labels, z)
    return params


def figr_meta_train(
    gan: ConditionalGAN,
    dataset: ClassDataset,
    cfg: Config,
    device: torch.device,
    progress: bool = False,
) -> None:
    """Reptile: ``figr.meta_steps`` one-class tasks, each pulling the weights towards its copy."""
    f = cfg.figr
    gan.train()
    names = _weights(gan)
    base = trainable_params(gan, [])
    outer = Update(names, f.outer_lr, "adam", (0.9, 0.999))
    sampler = EpisodeSampler(dataset, 1, f.task_images, 0, cfg.seed)
    rng = torch.Generator().manual_seed(cfg.seed)

    def step() -> dict[str, float]:
        start = {n: t.detach().clone().requires_grad_(n in names) for n, t in base.items()}
        images = sampler.sample().support.to(device)
        adapted = inner_loop(gan, start, images, f.inner_steps, cfg, rng)
        moved = [base[n].detach() - adapted[n].detach() for n in names]
        outer(base, moved)
        return {}

    run_phase(
        "figr", gan, f.meta_steps, step, cfg, device,
        identity={}, updates={"outer": outer}, rngs={"rng": rng, "tasks": sampler.rng},
        progress=progress, channels_last=False,
    )  # fmt: skip


def figr_adapt(
    meta_gan: ConditionalGAN,
    images: torch.Tensor,
    cfg: Config,
    device: torch.device,
    seed: int,
) -> ConditionalGAN:
    """One class's generator: ``figr.adapt_steps`` inner steps on its K uint8 ``images``.

    IC's BatchNorm statistics are then recorded over generated batches, as after pretraining.
    """
    gan = copy.deepcopy(meta_gan).to(device).train()
    params = trainable_params(gan, _weights(gan))
    rng = torch.Generator().manual_seed(seed)
    inner_loop(gan, params, images.to(device), cfg.figr.adapt_steps, cfg, rng)
    calibrate_batchnorm(gan.generator, cfg.pretrain.bn_calibration_batches, len(images), rng)
    gan.requires_grad_(False)
    return gan


@torch.no_grad()
def _samples(
    gans: list[ConditionalGAN], per_class: int, seed: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` images in [-1, 1] of every slot, each from its class's generator, the
    noise of every class drawn from ``seed``."""
    images, slots = [], []
    for slot, gan in enumerate(gans):
        z = noise(per_class, gan.generator.z_dim, torch.Generator().manual_seed(seed), device)
        images.append(gan.generator(z, torch.zeros(per_class, dtype=torch.long, device=device)))
        slots.append(torch.full((per_class,), slot))
    return torch.cat(images), torch.cat(slots)
