"""Phase (c): adapt the meta-learned model to a new task's support set."""

from __future__ import annotations

import copy
import os

import torch

from mtgan.augment import Augment, parse_policies
from mtgan.checkpoint import TrainingState
from mtgan.config import Config
from mtgan.nn.gan import ConditionalGAN
from mtgan.phases.common import autocast, noise, place, progress_bar, state_identity, to_device
from mtgan.phases.step import Update, features, gan_step, trainable_params

_TRAINED = {"heads": ("cf", "nm"), "all": ("d", "g")}
"""The parameter groups of D and of G that adaptation trains."""


def adapt(
    meta_gan: ConditionalGAN,
    support: torch.Tensor,
    labels: torch.Tensor,
    cfg: Config,
    device: torch.device,
    seed: int = 0,
    progress: bool = False,
    state_path: str | os.PathLike | None = None,
    weights: str = "heads",
) -> tuple[ConditionalGAN, list[dict[str, float]]]:
    """Phase (c), eq. 10: train NM and CF on the support set; IC, FE and SS stay fixed
    (``weights="all"``, the fine-tuning baseline, trains IC and FE too).

    Args:
        meta_gan: the meta-learned model (not modified; a copy is adapted).
        support: uint8 images (n, C, H, W) of the new classes.
        labels: their slots 0..N-1. When N differs from the meta-learned NM/CF, new heads
            start from the mean of the meta-learned class columns (see ``reset_heads``).
        seed: seeds the noise.
        weights: ``heads`` (NM and CF, phase c) or ``all`` (every weight but SS: the
            fine-tuning baseline). IC's BatchNorm keeps its recorded statistics either way.
        state_path: a state file written every ``adapt.checkpoint_every`` steps and resumed
            from when it exists (see :class:`TrainingState`).

    Returns:
        The adapted model and the losses of every step.
    """
    a = cfg.adapt
    gan = place(copy.deepcopy(meta_gan), cfg, device)
    n_way = int(labels.max()) + 1
    if n_way != gan.n_classes:
        gan.reset_heads(n_way, "pretrained")
    gan.freeze_backbone()
    d_side, g_side = _TRAINED[weights]
    params = trainable_params(gan, gan.names(d_side) + gan.names(g_side))
    update_d = Update(gan.names(d_side), a.lr, a.optimizer)
    update_g = Update(gan.names(g_side), a.lr, a.optimizer)
    rng = torch.Generator().manual_seed(seed)
    identity = state_identity(cfg, ("model", "adapt"), gan, support, labels, torch.tensor(seed))
    state = TrainingState(
        "adapt", state_path, a.checkpoint_every, identity, gan,
        {"d": update_d, "g": update_g}, {"rng": rng},
    )  # fmt: skip
    real, labels = to_device(support, device), labels.to(device)
    augment = Augment(parse_policies(a.augment), rng) if a.augment else None
    real_features = None
    if weights == "heads" and augment is None:  # FE and SS are fixed: FE(support) once
        with autocast(cfg, device):
            real_features = features(gan, params, real)
    with progress_bar(a.steps, "adapt", progress, state.step) as bar:
        for _ in range(state.step, a.steps):
            z = noise(len(labels), gan.generator.z_dim, rng, device)
            with autocast(cfg, device):
                params, losses = gan_step(
                    gan, params, real, labels, z, update_d, update_g, cfg.model.objective,
                    real_features=real_features, augment=augment,
                )  # fmt: skip
            state.record(losses)
            bar.update()
    gan.requires_grad_(False)
    return gan, state.history


@torch.no_grad()
def sample(
    gan: ConditionalGAN,
    per_class: int,
    rng: torch.Generator,
    device: torch.device,
    classes: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` generated images of every class slot (or of the first ``classes``), in
    [-1, 1], and their slots."""
    gan.eval()
    shown = gan.n_classes if classes is None else min(classes, gan.n_classes)
    labels = torch.arange(shown).repeat_interleave(per_class).to(device)
    z = noise(len(labels), gan.generator.z_dim, rng, device)
    return gan.generator(z, labels), labels
