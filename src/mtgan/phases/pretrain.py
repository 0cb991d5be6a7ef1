"""Phase (a): pretrain the conditional GAN on all training classes."""

from __future__ import annotations

import os

import torch

from mtgan.augment import Augment, parse_policies
from mtgan.choices import LrSchedule
from mtgan.config import Config
from mtgan.data.base import ClassDataset
from mtgan.distributed import mean_over_processes, rank, shard, world_size
from mtgan.errors import ConfigError
from mtgan.losses import ClassifierObjective
from mtgan.nn.gan import ConditionalGAN
from mtgan.nn.generator import calibrate_batchnorm
from mtgan.phases.common import autocast, noise, place, state_identity, to_device
from mtgan.phases.loop import run_phase
from mtgan.phases.step import GanStep, Update, trainable_params


def build_gan(cfg: Config, n_classes: int, bank_classes: int = 0) -> ConditionalGAN:
    """The networks that ``cfg.model`` and ``cfg.data`` describe, for ``n_classes`` classes
    (with room for ``bank_classes`` kept pretrained ones)."""
    m, d = cfg.model, cfg.data
    return ConditionalGAN(
        n_classes, d.image_size, d.channels, m.z_dim, m.g_width, m.d_width, m.ss_granularity,
        bank_classes, m.upsample, m.spectral_norm,
    )  # fmt: skip


def ema_decay(decay: float, step: int) -> float:
    """The decay at ``step`` (from 1): ``min(decay, (1 + step) / (10 + step))``, so that the
    random initial weights are soon forgotten however long the average's memory.

    Example:
        >>> ema_decay(0.999, 1), ema_decay(0.999, 100_000)
        (0.18181818181818182, 0.999)
    """
    return min(decay, (1 + step) / (10 + step))


def _moving_average(gan: ConditionalGAN, decay: float) -> dict[str, torch.Tensor]:
    """Copies of G's weights to average (none when ``decay`` is 0)."""
    if decay == 0:
        return {}
    params = dict(gan.named_parameters())
    return {name: params[name].detach().clone() for name in gan.names("g")}


def lr_factor(schedule: LrSchedule, step: int, steps: int) -> float:
    """The multiplier of ``pretrain.lr`` at ``step`` (from 1) of ``steps``: 1 throughout for
    ``constant``; for ``linear``, 1 over the first half, then down in a straight line towards 0.

    Example:
        >>> [lr_factor("linear", t, 4) for t in (1, 3, 4)], lr_factor("constant", 4, 4)
        ([1.0, 1.0, 0.5], 1.0)
    """
    if schedule == "constant":
        return 1.0
    return min(1.0, 2 * (steps - step + 1) / steps)


def same_class_pairs(labels: torch.Tensor):
    """A batch sampler for mode seeking: ``draw(n, rng)`` gives n image indices where 2i is
    uniform over all images and 2i + 1 is uniform over the images of the same class.

    Example:
        >>> draw = same_class_pairs(torch.tensor([0, 1, 1, 0, 2]))
        >>> idx = draw(6, torch.Generator().manual_seed(0))
        >>> labels = torch.tensor([0, 1, 1, 0, 2])[idx]
        >>> bool((labels[0::2] == labels[1::2]).all())
        True
    """
    order = torch.argsort(labels, stable=True)
    counts = torch.bincount(labels)
    starts = torch.cumsum(counts, 0) - counts

    def draw(n: int, rng: torch.Generator) -> torch.Tensor:
        first = torch.randint(len(labels), (n // 2,), generator=rng)
        y = labels[first]
        offset = (torch.rand(n // 2, generator=rng) * counts[y]).long().clamp_max(counts[y] - 1)
        return torch.stack([first, order[starts[y] + offset]], 1).flatten()

    return draw


def _augment(policies: str, seed: int) -> Augment | None:
    """DiffAugment of D's inputs (none for no ``policies``), each process drawing from its own
    generator derived from ``seed``."""
    if not policies:
        return None
    seeds = torch.randint(2**62, (world_size(),), generator=torch.Generator().manual_seed(seed))
    return Augment(parse_policies(policies), torch.Generator().manual_seed(int(seeds[rank()])))


def pretrain(
    gan: ConditionalGAN,
    dataset: ClassDataset,
    cfg: Config,
    device: torch.device,
    progress: bool = False,
    state_path: str | os.PathLike | None = None,
) -> list[dict[str, float]]:
    """Phase (a): G (NM + IC) and D (FE + CF) trained on every class of ``dataset``.

    Alternates eq. 4 and eq. 6 with Adam at ``pretrain.lr`` times :func:`lr_factor` of
    ``pretrain.lr_schedule``; scale and shift stay at identity. With ``pretrain.r1`` > 0, D's
    loss adds the R1 penalty (:func:`mtgan.losses.r1_penalty`); with ``pretrain.mode_seeking``
    > 0, G's adds MSGAN's term (:func:`mtgan.losses.mode_seeking`) over pairs of images of one
    class (:func:`same_class_pairs`). With ``pretrain.augment``, D sees real and generated
    images through DiffAugment's policies (Zhao et al. 2020), in both players' losses. With
    ``pretrain.ema`` > 0, G's weights end as their exponential moving average over the steps
    (``ema_t = d_t * ema_{t-1} + (1 - d_t) * w_t``, Karras et al. 2018, with the warm-up of
    :func:`ema_decay`). Ends by recording IC's BatchNorm statistics for the final weights (see
    :func:`calibrate_batchnorm`). With ``state_path``, the loop saves its state every
    ``pretrain.checkpoint_every`` steps and continues from that file when it exists (see
    :class:`TrainingState`); a NaN or infinite loss stops it. Under torchrun every process
    takes its share of each batch and the gradients are averaged (data-parallel; IC's
    BatchNorm normalises each process's share).

    Returns:
        The losses, one dict per step.
    """
    p = cfg.pretrain
    images, labels = dataset.stacked()
    rng = torch.Generator().manual_seed(cfg.seed)
    gan.train()
    params = trainable_params(gan, gan.names("g") + gan.names("d"))
    betas = (p.betas[0], p.betas[1])
    update_d = Update(gan.names("d"), p.lr, "adam", betas, data_parallel=True)
    update_g = Update(gan.names("g"), p.lr, "adam", betas, data_parallel=True)
    objective = ClassifierObjective(cfg.model.objective, p.r1)
    augment = _augment(p.augment, cfg.seed)
    gan_step = GanStep(gan, update_d, update_g, objective, augment, p.mode_seeking)
    mine = shard(p.batch_size, "pretrain.batch_size", even=True)
    if p.mode_seeking and (mine.stop - mine.start) % 2:
        raise ConfigError("pretrain.mode_seeking needs an even share of each batch per process")
    draw = same_class_pairs(labels) if p.mode_seeking else None
    place(gan, device, cfg.speed.channels_last)
    average = _moving_average(gan, p.ema)

    def step() -> dict[str, float]:
        nonlocal params
        if draw is None:
            idx = torch.randint(len(images), (p.batch_size,), generator=rng)[mine]
        else:
            idx = draw(p.batch_size, rng)[mine]
        z = noise(p.batch_size, gan.generator.z_dim, rng, device)[mine]
        real = to_device(images[idx], device)
        update_d.lr = update_g.lr = p.lr * lr_factor(p.lr_schedule, update_g.t + 1, p.steps)
        with autocast(cfg, device):
            params, losses = gan_step(params, real, labels[idx].to(device), z)
        decay = ema_decay(p.ema, update_g.t)
        with torch.no_grad():
            for name, value in average.items():
                value.lerp_(params[name], 1 - decay)
        return mean_over_processes(losses)

    history = run_phase(
        "pretrain", gan, p.steps, step, cfg, device,
        identity=state_identity(cfg, ("seed", "data", "model", "pretrain"), gan, images, labels),
        updates={"d": update_d, "g": update_g},
        rngs={"rng": rng} | ({} if augment is None else {"augment": augment.rng}),
        checkpoint_every=p.checkpoint_every, state_path=state_path, progress=progress,
        extra={f"ema/{name}": value for name, value in average.items()},
    )  # fmt: skip
    with torch.no_grad():
        for name, value in average.items():
            params[name].copy_(value)
    calibrate_batchnorm(gan.generator, p.bn_calibration_batches, p.batch_size, rng)
    gan.requires_grad_(False)
    return history
