"""Phase (c): adapt the meta-learned model to a new task's support set."""

from __future__ import annotations

import copy

import torch

from mtgan.config import Config
from mtgan.nn.gan import ConditionalGAN
from mtgan.phases.common import autocast, noise, place, progress_bar, to_device
from mtgan.phases.step import Update, features, gan_step, trainable_params


def adapt(
    meta_gan: ConditionalGAN,
    support: torch.Tensor,
    labels: torch.Tensor,
    cfg: Config,
    device: torch.device,
    seed: int = 0,
    progress: bool = False,
) -> tuple[ConditionalGAN, list[dict[str, float]]]:
    """Phase (c), eq. 10: train NM and CF on the support set; IC, FE and SS stay fixed.

    Args:
        meta_gan: the meta-learned model (not modified; a copy is adapted).
        support: uint8 images (n, C, H, W) of the new classes.
        labels: their slots 0..N-1. When N differs from the meta-learned NM/CF, new heads
            start from the mean of the meta-learned class columns (see ``reset_heads``).
        seed: seeds the noise.

    Returns:
        The adapted model and the losses of every step.
    """
    a = cfg.adapt
    gan = place(copy.deepcopy(meta_gan), cfg, device)
    n_way = int(labels.max()) + 1
    if n_way != gan.n_classes:
        gan.reset_heads(n_way, "pretrained")
    gan.freeze_backbone()
    params = trainable_params(gan, gan.names("nm") + gan.names("cf"))
    update_d = Update(gan.names("cf"), a.lr, a.optimizer)
    update_g = Update(gan.names("nm"), a.lr, a.optimizer)
    rng = torch.Generator().manual_seed(seed)
    labels = labels.to(device)
    with autocast(cfg, device):  # FE and SS are fixed: FE(support) once
        real_features = features(gan, params, to_device(support, device))
    history = []
    with progress_bar(a.steps, "adapt", progress) as bar:
        for _ in range(a.steps):
            z = noise(len(labels), gan.generator.z_dim, rng, device)
            with autocast(cfg, device):
                params, losses = gan_step(
                    gan, params, None, labels, z, update_d, update_g, cfg.model.objective,
                    real_features=real_features,
                )  # fmt: skip
            history.append(losses)
            bar.update()
    gan.requires_grad_(False)
    return gan, history


@torch.no_grad()
def sample(
    gan: ConditionalGAN, per_class: int, rng: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` generated images of every class slot, in [-1, 1], and their slots."""
    gan.eval()
    labels = torch.arange(gan.n_classes).repeat_interleave(per_class).to(device)
    z = noise(len(labels), gan.generator.z_dim, rng, device)
    return gan.generator(z, labels), labels
