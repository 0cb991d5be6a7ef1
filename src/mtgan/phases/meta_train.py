"""Phase (b): meta-train scale and shift over N-way tasks (eq. 10-12, Algorithm 1)."""

from __future__ import annotations

import os

import torch

from mtgan.checkpoint import TrainingState
from mtgan.config import Config
from mtgan.data.base import ClassDataset
from mtgan.data.episodes import EpisodeSampler, Task
from mtgan.nn.gan import ConditionalGAN
from mtgan.phases.common import noise, progress_bar, state_identity, to_device
from mtgan.phases.step import Params, Update, gan_losses, gan_step


def meta_train(
    gan: ConditionalGAN,
    dataset: ClassDataset,
    cfg: Config,
    device: torch.device,
    progress: bool = False,
    state_path: str | os.PathLike | None = None,
) -> list[dict[str, float]]:
    """Phase (b): learn SS (and the NM/CF starting point) from tasks of ``dataset``'s classes.

    ``gan`` is the pretrained network; its NM and CF are replaced by N-way ones first. Each
    outer step samples ``meta.meta_batch`` tasks, adapts NM and CF to every support set
    (eq. 10), steps SS on the query sets (eq. 11) and sets NM and CF to the mean of the adapted
    ones (eq. 12; with ``meta.head_update=reset`` they return to their initial values instead).
    IC and FE are not changed. With ``state_path``, the loop saves its state every
    ``meta.checkpoint_every`` outer steps and continues from that file when it exists (see
    :class:`TrainingState`); a NaN or infinite query loss stops it.

    Returns:
        The mean query losses, one dict per outer step.
    """
    m = cfg.meta
    gan.reset_heads(cfg.task.n_way, cfg.model.head_init)
    gan.to(device).freeze_backbone()
    sampler = EpisodeSampler(dataset, cfg.task.n_way, cfg.task.k_shot, cfg.task.q_query, cfg.seed)
    rng = torch.Generator().manual_seed(cfg.seed)
    outer = {
        side: Update(gan.names(f"ss_{side}"), m.outer_lr, "adam", (0.9, 0.999)) for side in "gd"
    }
    initial_heads = _heads(gan) if m.head_update == "reset" else None
    identity = state_identity(cfg, ("seed", "data", "model", "task", "meta"), gan)
    state = TrainingState(
        "meta-train", state_path, m.checkpoint_every, identity, gan, outer,
        {"rng": rng, "tasks": sampler.rng},
    )  # fmt: skip
    with progress_bar(m.steps, "meta-train", progress, state.step) as bar:
        for _ in range(state.step, m.steps):
            tasks = [sampler.sample() for _ in range(m.meta_batch)]
            losses = meta_step(gan, tasks, cfg, outer, rng, device)
            if initial_heads is not None:
                average_heads(gan, [initial_heads])  # meta.head_update=reset
            state.record(losses)
            bar.set_postfix(losses, refresh=False)
            bar.update()
    return state.history


def meta_step(
    gan: ConditionalGAN,
    tasks: list[Task],
    cfg: Config,
    outer: dict[str, Update],
    rng: torch.Generator,
    device: torch.device,
) -> dict[str, float]:
    """One outer step of Algorithm 1 over a meta-batch of tasks."""
    base = dict(gan.named_parameters())
    grads = {side: [torch.zeros_like(base[n]) for n in outer[side].names] for side in "gd"}
    heads, losses = [], {"query_loss_d": 0.0, "query_loss_g": 0.0}
    for task in tasks:
        adapted, task_grads, task_losses = task_meta_gradient(gan, task, cfg, rng, device)
        heads.append(adapted)
        for side in "gd":
            for acc, g in zip(grads[side], task_grads[side], strict=True):
                acc.add_(g, alpha=1 / len(tasks))
        for key in losses:
            losses[key] += task_losses[key] / len(tasks)
    for side in "gd":
        outer[side](base, grads[side])  # eq. 11
    average_heads(gan, heads)  # eq. 12
    return losses


def task_meta_gradient(
    gan: ConditionalGAN, task: Task, cfg: Config, rng: torch.Generator, device: torch.device
) -> tuple[Params, dict[str, tuple[torch.Tensor, ...]], dict[str, float]]:
    """Eq. 10 then eq. 11's gradient for one task.

    Inner steps train copies of NM (by L_G) and CF (by L_D) on the support set; on the query
    set the adapted copies give L_G, whose gradient goes to IC's SS, and L_D, whose gradient
    goes to FE's SS. First-order treats the adapted copies as constants; second-order
    (``meta.second_order``) differentiates through the inner steps.

    Returns:
        The adapted NM and CF, the SS gradients by side (``g``, ``d``) and the query losses.
    """
    m, objective = cfg.meta, cfg.model.objective
    base = dict(gan.named_parameters())
    heads = {n: t.requires_grad_() for n, t in _heads(gan).items()}
    params = {**base, **heads}
    inner_d = Update(gan.names("cf"), m.inner_lr, m.inner_optimizer, differentiable=m.second_order)
    inner_g = Update(gan.names("nm"), m.inner_lr, m.inner_optimizer, differentiable=m.second_order)
    support, s_labels = to_device(task.support, device), task.support_labels.to(device)
    for _ in range(m.inner_steps):
        z = noise(len(support), gan.generator.z_dim, rng, device)
        params, _ = gan_step(gan, params, support, s_labels, z, inner_d, inner_g, objective)
    query, q_labels = to_device(task.query, device), task.query_labels.to(device)
    z = noise(len(query), gan.generator.z_dim, rng, device)
    loss_d, loss_g = gan_losses(gan, params, query, q_labels, z, objective)
    grads = {
        "g": torch.autograd.grad(loss_g, [base[n] for n in gan.names("ss_g")], retain_graph=True),
        "d": torch.autograd.grad(loss_d, [base[n] for n in gan.names("ss_d")]),
    }
    adapted = {n: params[n].detach() for n in heads}
    return adapted, grads, {"query_loss_d": loss_d.item(), "query_loss_g": loss_g.item()}


def _heads(gan: ConditionalGAN) -> Params:
    """Detached copies of NM's and CF's parameters."""
    own = dict(gan.named_parameters())
    return {n: own[n].detach().clone() for n in gan.names("nm") + gan.names("cf")}


@torch.no_grad()
def average_heads(gan: ConditionalGAN, heads: list[Params]) -> None:
    """Eq. 12: NM and CF become the mean of the task-adapted ones."""
    own = dict(gan.named_parameters())
    for name in heads[0]:
        own[name].copy_(torch.stack([h[name] for h in heads]).mean(0))
