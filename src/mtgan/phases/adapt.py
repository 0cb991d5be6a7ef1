"""Phase (c): adapt the meta-learned model to a new task's support set."""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence

import torch

from mtgan.augment import Augment, parse_policies
from mtgan.config import Config
from mtgan.losses import ClassifierObjective
from mtgan.nn.gan import ConditionalGAN
from mtgan.phases.common import autocast, noise, state_identity, to_device
from mtgan.phases.loop import run_phase
from mtgan.phases.step import GanStep, Update, trainable_params

HEADS = ("cf", "nm")
"""The parameter groups of D and of G that phase (c) trains: CF and NM."""


def adapt(
    meta_gan: ConditionalGAN,
    support: torch.Tensor,
    labels: torch.Tensor,
    cfg: Config,
    device: torch.device,
    seed: int = 0,
    progress: bool = False,
    state_path: str | os.PathLike | None = None,
    groups: Sequence[str] = HEADS,
) -> tuple[ConditionalGAN, list[dict[str, float]]]:
    """Phase (c), eq. 10: train NM and CF on the support set; IC, FE and SS stay fixed. Their
    learning rates are ``adapt.lr`` times the model's learned multipliers (``meta.learn_rates``;
    1 where none were learned). With ``adapt.ss_lr`` > 0, IC's scale and shift also learn
    with G's loss and FE's with D's, at ``adapt.ss_lr`` (AdaFM's modulation fine-tuning).
    With ``adapt.mode_seeking`` > 0, G's loss adds MSGAN's term over pairs of one class
    (:func:`class_pairs`).

    Args:
        meta_gan: the meta-learned model (not modified; a copy is adapted).
        support: uint8 images (n, C, H, W) of the new classes.
        labels: their slots 0..N-1. When N differs from the meta-learned NM/CF, new heads
            start from the mean of the meta-learned class columns (see ``reset_heads``);
            with ``adapt.class_init=nearest`` every class starts from the pretrained classes
            D recognises in its images instead.
        seed: seeds the noise.
        state_path: a state file written every ``adapt.checkpoint_every`` steps and resumed
            from when it exists (see :class:`mtgan.checkpoint.TrainingState`).
        groups: the parameter groups of D, then of G, that are trained (see
            :meth:`ConditionalGAN.names`): ``("cf", "nm")`` for phase (c); the fine-tuning
            baseline passes ``("d", "g")``, every weight but SS. IC's BatchNorm keeps its
            recorded statistics either way.

    Returns:
        The adapted model and the losses of every step.
    """
    a = cfg.adapt
    gan = copy.deepcopy(meta_gan).to(device)
    n_way = int(labels.max()) + 1
    if n_way != gan.n_classes:
        gan.reset_heads(n_way, "pretrained")
    gan.freeze_backbone()
    real, labels = to_device(support, device), labels.to(device)
    if a.class_init == "nearest":
        start_near(gan, real, labels)  # from the support as given, each shot once
    if a.mode_seeking:
        real, labels = class_pairs(real, labels)
    d_names, g_names = (gan.names(group) for group in groups)
    nm = a.nm if tuple(groups) == HEADS else "all"  # fine-tuning trains every weight
    rates = gan.rates.multipliers(n_way, nm)  # Meta-SGD's, when meta-learned; else all 1
    if a.ss_lr > 0:
        ss_d, ss_g = gan.names("ss_d"), gan.names("ss_g")
        d_names, g_names = d_names + ss_d, g_names + ss_g
        ss_rate = torch.tensor(a.ss_lr / a.lr, device=device)
        rates |= dict.fromkeys(ss_d + ss_g, ss_rate)
    params = trainable_params(gan, d_names + g_names)
    update_d = Update(d_names, a.lr, a.optimizer, scales=rates)
    update_g = Update(g_names, a.lr, a.optimizer, scales=rates)
    rng = torch.Generator().manual_seed(seed)
    augment = Augment(parse_policies(a.augment), rng) if a.augment else None
    objective = ClassifierObjective(cfg.model.objective)
    gan_step = GanStep(gan, update_d, update_g, objective, augment, a.mode_seeking)

    def step() -> dict[str, float]:
        nonlocal params
        z = noise(len(labels), gan.generator.z_dim, rng, device)
        with autocast(cfg, device):
            params, losses = gan_step(params, real, labels, z)
        return losses

    history = run_phase(
        "adapt", gan, a.steps, step, cfg, device,
        identity=state_identity(cfg, ("model", "adapt"), gan, support, labels, torch.tensor(seed)),
        updates={"d": update_d, "g": update_g}, rngs={"rng": rng},
        checkpoint_every=a.checkpoint_every, state_path=state_path, progress=progress,
    )  # fmt: skip
    gan.requires_grad_(False)
    return gan, history


def class_pairs(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The support set ordered class by class, a class with an odd number of images repeating
    its first, so that images 2i and 2i + 1 are of one class: the pairs of MSGAN's term
    (:func:`mtgan.losses.mode_seeking`), whose two noises then draw the same class.

    Example:
        >>> _, paired = class_pairs(torch.arange(4.0), torch.tensor([1, 0, 1, 2]))
        >>> paired.tolist()
        [0, 0, 1, 1, 2, 2]
    """
    members = [(labels == c).nonzero().flatten() for c in labels.unique()]
    order = torch.cat([m if len(m) % 2 == 0 else torch.cat([m, m[:1]]) for m in members])
    return images[order], labels[order]


@torch.no_grad()
def start_near(gan: ConditionalGAN, real: torch.Tensor, labels: torch.Tensor) -> None:
    """``adapt.class_init=nearest``: every class slot's NM column and CF row start from the
    pretrained classes that D recognises in its support images (:mod:`mtgan.nn.bank`)."""
    heads = dict(gan.named_parameters())
    gan.bank.start_near(heads, gan.discriminator.fe(real), labels, gan.generator.z_dim)


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
