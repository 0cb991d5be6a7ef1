"""Phase (b): meta-train scale and shift over N-way tasks (eq. 10-12, Algorithm 1)."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import NamedTuple

import torch

from mtgan.augment import TaskAugment, parse_policies
from mtgan.config import Config
from mtgan.data.base import ClassDataset
from mtgan.data.episodes import EpisodeSampler, Task
from mtgan.distributed import all_reduce_sum, shard
from mtgan.losses import ClassifierObjective, class_feature_matching
from mtgan.nn.gan import ConditionalGAN
from mtgan.nn.ss import is_ss_parameter
from mtgan.phases.common import autocast, noise, state_identity, to_device
from mtgan.phases.loop import run_phase
from mtgan.phases.pretrain import build_gan
from mtgan.phases.step import GanStep, Params, Update, features, gan_losses, generate

LOSSES = ("query_loss_d", "query_loss_g")
META_SECTIONS = ("seed", "data", "model", "task", "meta", "adapt.augment", "adapt.class_init")
"""The settings that shape meta-training (a state file resumes only under the same ones)."""


def meta_train(
    gan: ConditionalGAN,
    dataset: ClassDataset,
    cfg: Config,
    device: torch.device,
    progress: bool = False,
    state_path: str | os.PathLike | None = None,
    validate: Callable[[ConditionalGAN], float] | None = None,
) -> list[dict[str, float]]:
    """Phase (b): learn SS (and the NM/CF starting point) from tasks of ``dataset``'s classes.

    ``gan`` is the pretrained network; its NM and CF are replaced by N-way ones first. Each
    outer step samples ``meta.meta_batch`` tasks, adapts NM and CF to every support set
    (eq. 10) and steps SS on the query sets (eq. 11). NM and CF then return to their initial
    values (``meta.head_update=reset``, the default) or become the mean of the adapted ones
    (``average``, eq. 12).
    IC and FE are not changed. With ``state_path``, the loop saves its state every
    ``meta.checkpoint_every`` outer steps and continues from that file when it exists (see
    :class:`TrainingState`); a NaN or infinite query loss stops it. With ``validate`` (a
    score of the meta-model, lower better, such as
    :func:`mtgan.phases.evaluate.validation_fid`) and ``meta.validate_every`` > 0, the
    meta-model is scored before the first step and every ``validate_every`` steps, and the
    phase ends with the best one (:class:`Selection`).

    Returns:
        The mean query losses, one dict per outer step (with ``validation``, the latest
        score, when validating).
    """
    m = cfg.meta
    gan.reset_heads(cfg.task.n_way, cfg.model.head_init)
    gan.to(device).freeze_backbone()
    sampler = EpisodeSampler(dataset, cfg.task.n_way, cfg.task.k_shot, cfg.task.q_query, cfg.seed)
    rng = torch.Generator().manual_seed(cfg.seed)
    outer = {
        side: Update(gan.names(f"ss_{side}"), m.outer_lr, "adam", (0.9, 0.999))
        for side in meta_sides(cfg)
    }
    if m.learn_rates:  # Meta-SGD
        outer["rates"] = Update(gan.names("rates"), m.rate_lr, "adam", (0.9, 0.999))
    initial_heads = heads_of(gan) if m.head_update == "reset" else None
    selection = (
        Selection(gan, validate, m.validate_every) if validate and m.validate_every else None
    )

    def step() -> dict[str, float]:
        tasks = [sampler.sample() for _ in range(m.meta_batch)]
        losses = meta_step(gan, tasks, cfg, outer, rng, device, dataset.classes)
        if initial_heads is not None:
            load_heads(gan, initial_heads)  # meta.head_update=reset
        return losses if selection is None else losses | selection.after_step()

    history = run_phase(
        "meta-train", gan, m.steps, step, cfg, device,
        identity=state_identity(cfg, META_SECTIONS, gan),
        updates=outer, rngs={"rng": rng, "tasks": sampler.rng},
        checkpoint_every=m.checkpoint_every, state_path=state_path, progress=progress,
        extra=None if selection is None else selection.tensors(),
    )  # fmt: skip
    if selection is not None:
        selection.keep_best()
    return history


def validation_curve(history: list[dict[str, float]], every: int) -> list[tuple[int, float]]:
    """(outer step, score) of every validation of a meta-training's losses, the starting
    model's at step 0."""
    if not history or "validation_start" not in history[0]:
        return []
    later = range(every, len(history) + 1, every)
    return [(0, history[0]["validation_start"])] + [
        (k, history[k - 1]["validation"]) for k in later
    ]


class Selection:
    """Model selection during meta-training: the meta-model (scale and shift, NM and CF, the
    learned rates) scored
    by ``validate`` now and after every ``every`` outer steps; the best one is kept.

    Its tensors ride in the phase's state file, so a resumed phase selects as an uninterrupted
    one would; ``scores`` holds the steps counted, the latest score, the best score and the
    starting model's score.
    """

    def __init__(
        self, gan: ConditionalGAN, validate: Callable[[ConditionalGAN], float], every: int
    ):
        self.gan, self.validate, self.every = gan, validate, every
        own = dict(gan.named_parameters())
        names = [n for n in own if is_ss_parameter(n)]
        names += gan.names("nm") + gan.names("cf") + gan.names("rates")
        self.best = {n: own[n].detach().clone() for n in names}
        first = validate(gan)
        self.scores = torch.tensor([0.0, first, first, first], dtype=torch.float64)

    def after_step(self) -> dict[str, float]:
        """Count a step; every ``every`` steps score the meta-model and keep it if best. The
        first step's record also holds the starting model's score (``validation_start``)."""
        self.scores[0] += 1
        if int(self.scores[0]) % self.every == 0:
            self.scores[1] = self.validate(self.gan)
            if self.scores[1] < self.scores[2]:
                self.scores[2] = self.scores[1]
                own = dict(self.gan.named_parameters())
                for name, value in self.best.items():
                    value.copy_(own[name].detach())
        record = {"validation": float(self.scores[1])}
        if int(self.scores[0]) == 1:
            record["validation_start"] = float(self.scores[3])
        return record

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"selection/scores": self.scores} | {
            f"selection/best/{n}": v for n, v in self.best.items()
        }

    @torch.no_grad()
    def keep_best(self) -> None:
        own = dict(self.gan.named_parameters())
        for name, value in self.best.items():
            own[name].copy_(value)


def with_granularity(pretrained: ConditionalGAN, cfg: Config) -> ConditionalGAN:
    """A copy of ``pretrained`` whose scale and shift have ``cfg``'s granularity, at identity:
    the model that phase (b) starts from."""
    if pretrained.config["ss_granularity"] == cfg.model.ss_granularity:
        return copy.deepcopy(pretrained)
    gan = build_gan(cfg, pretrained.n_classes, len(pretrained.bank))
    weights = {k: v for k, v in pretrained.state_dict().items() if not is_ss_parameter(k)}
    gan.load_state_dict(weights, strict=False)
    return gan.eval()


@dataclass
class TaskBatch:
    """Tasks stacked along a leading task dimension T, with the noise of their inner loops.

    ``support`` (T, n, C, H, W) and ``query`` in [-1, 1] with their slots (T, n);
    ``support_noise`` (T, inner steps, n, z_dim) and ``query_noise`` (T, q, z_dim);
    ``augment_seeds`` (T,) seed each task's augmentation of D's inputs (``adapt.augment``);
    ``classes`` (T, n_way) are the indices of the tasks' classes among the training classes
    (T, 0 when not given).
    ``batch[i]`` is task i alone (no task dimension), ``batch[a:b]`` (or a list) a smaller batch.
    """

    support: torch.Tensor
    support_labels: torch.Tensor
    query: torch.Tensor
    query_labels: torch.Tensor
    support_noise: torch.Tensor
    query_noise: torch.Tensor
    augment_seeds: torch.Tensor
    classes: torch.Tensor

    def __getitem__(self, index: int | slice | list[int]) -> TaskBatch:
        return TaskBatch(*(getattr(self, f.name)[index] for f in fields(self)))


def stack_tasks(
    tasks: list[Task],
    inner_steps: int,
    z_dim: int,
    rng: torch.Generator,
    device: torch.device,
    classes: list[str] | None = None,
) -> TaskBatch:
    """The tasks on ``device``, stacked, with all their noise drawn from ``rng`` up front:
    every inner step's support noise, task by task, then every task's query noise, then every
    task's augmentation seed; with ``classes`` (the training classes), each task's classes'
    indices among them."""
    t, n, q = len(tasks), len(tasks[0].support), len(tasks[0].query)
    index = {c: i for i, c in enumerate(classes or [])}
    ids = [[index[c] for c in task.classes] if index else [] for task in tasks]
    stack = torch.stack
    return TaskBatch(
        to_device(stack([task.support for task in tasks]), device),
        stack([task.support_labels for task in tasks]).to(device),
        to_device(stack([task.query for task in tasks]), device),
        stack([task.query_labels for task in tasks]).to(device),
        noise(t * inner_steps * n, z_dim, rng, device).view(t, inner_steps, n, z_dim),
        noise(t * q, z_dim, rng, device).view(t, q, z_dim),
        torch.randint(0, 2**62, (t,), generator=rng),
        torch.tensor(ids, dtype=torch.long, device=device).view(t, -1),
    )


def meta_step(
    gan: ConditionalGAN,
    tasks: list[Task],
    cfg: Config,
    outer: dict[str, Update],
    rng: torch.Generator,
    device: torch.device,
    classes: list[str] | None = None,
) -> dict[str, float]:
    """One outer step of Algorithm 1 over a meta-batch of tasks (of ``classes``, the training
    classes, when given: ``adapt.class_init=nearest`` leaves each task's own out).

    The tasks' inner loops run ``speed.tasks_at_once`` at a time as one batched computation
    (:func:`task_meta_gradient`). Under torchrun every process takes a share of the tasks and
    the sums of SS (and learned rates') gradients (eq. 11), adapted heads (eq. 12) and query
    losses are all-reduced,
    so that every process takes the step that one process would.
    """
    batch = stack_tasks(tasks, cfg.meta.inner_steps, gan.generator.z_dim, rng, device, classes)
    mine, at_once = shard(len(tasks), "meta.meta_batch"), tasks_at_once(cfg, device)
    with autocast(cfg, device):
        parts = [
            task_meta_gradient(gan, batch[i : min(i + at_once, mine.stop)], cfg)
            for i in range(mine.start, mine.stop, at_once)
        ]
    total = TaskGradient.sum(parts)
    sums = [*total.heads.values(), *(g for side in total.grads.values() for g in side)]
    sums.append(total.losses)
    all_reduce_sum(sums)
    for t in sums:
        t.div_(len(tasks))
    base = dict(gan.named_parameters())
    for side in outer:
        outer[side](base, total.grads[side])  # eq. 11
    step_heads(gan, total.heads, cfg.meta.head_step)  # eq. 12: the sums are means now
    return dict(zip(LOSSES, total.losses.tolist(), strict=True))


class TaskGradient(NamedTuple):
    """What eq. 10 and eq. 11 give for one task or a batch of tasks: the adapted NM and CF
    (stacked by task), the gradients by side (``g``: IC's SS, ``d``: FE's SS, those of
    ``meta.ss_sides`` only, and with ``meta.learn_rates`` ``rates``: the learned rates'
    log-multipliers) and the query losses
    ``(L_D, L_G)``, the last two summed over the tasks."""

    heads: Params
    grads: dict[str, tuple[torch.Tensor, ...]]
    losses: torch.Tensor

    @staticmethod
    def sum(parts: list[TaskGradient]) -> TaskGradient:
        """Chunks of tasks summed into one: heads over their task dimension too."""
        heads = {n: sum(part.heads[n].sum(0) for part in parts) for n in parts[0].heads}
        grads = {
            side: tuple(sum(g) for g in zip(*(p.grads[side] for p in parts), strict=True))
            for side in parts[0].grads
        }
        return TaskGradient(heads, grads, sum(part.losses for part in parts))


def tasks_at_once(cfg: Config, device: torch.device) -> int:
    """``speed.tasks_at_once``, with 0 resolved: the whole meta-batch on CUDA, one task at a time
    on the CPU (where the batched convolutions measured slower than a loop over tasks)."""
    if cfg.speed.tasks_at_once:
        return cfg.speed.tasks_at_once
    return cfg.meta.meta_batch if device.type == "cuda" else 1


def task_meta_gradient(gan: ConditionalGAN, batch: TaskBatch, cfg: Config) -> TaskGradient:
    """Eq. 10 then eq. 11's gradient, for one task or a batch of tasks at once.

    Inner steps train copies of NM (by L_G) and CF (by L_D) on the support set, augmenting D's
    inputs as adaptation does (``adapt.augment``, each task from its own seed); on the query
    set the adapted copies give L_G, whose gradient goes to IC's SS, and L_D, whose gradient
    goes to FE's SS (``meta.outer_g=features``: instead of L_G, the per-class feature matching
    of :func:`mtgan.losses.class_feature_matching` between generated and query images).
    First-order treats the adapted copies as constants; second-order
    (``meta.second_order``) differentiates through the inner steps. With a task dimension
    (``batch`` from :func:`stack_tasks`) every task has its own copies of NM and CF and the T
    inner loops run as one batched computation; the result equals a loop over
    ``batch[0]``, ``batch[1]``, ... (summed).
    """
    m, objective = cfg.meta, ClassifierObjective(cfg.model.objective)
    base = dict(gan.named_parameters())
    tasks = batch.support_labels.shape[:-1]  # () for one task, (T,) for a batch
    heads = {
        n: t.expand(*tasks, *t.shape).clone().requires_grad_() for n, t in heads_of(gan).items()
    }
    if cfg.adapt.class_init == "nearest":  # as adaptation starts, without the task's classes
        with torch.no_grad():
            support = features(gan, base, batch.support)
        exclude = batch.classes if batch.classes.shape[-1] else None
        gan.bank.start_near(heads, support, batch.support_labels, gan.generator.z_dim, exclude)
    start = {n: h.detach().clone() for n, h in heads.items()}
    params = {**base, **heads}
    rates = gan.rates.multipliers(cfg.task.n_way, cfg.adapt.nm)
    inner_d, inner_g = (
        Update(names, m.inner_lr, m.inner_optimizer, differentiable=m.second_order, scales=rates)
        for names in (gan.names("cf"), gan.names("nm"))
    )
    augment = None
    if cfg.adapt.augment:
        augment = TaskAugment(parse_policies(cfg.adapt.augment), batch.augment_seeds)
    gan_step = GanStep(gan, inner_d, inner_g, objective, augment)
    for step in range(m.inner_steps):
        z = batch.support_noise.select(-3, step)
        params, _ = gan_step(params, batch.support, batch.support_labels, z)
    loss_d, loss_g = gan_losses(
        gan, params, batch.query, batch.query_labels, batch.query_noise, objective
    )
    if m.outer_g == "features":  # our extension: G's side sees the query images
        fake = generate(gan, params, batch.query_noise, batch.query_labels)
        loss_g = class_feature_matching(
            features(gan, params, fake),
            features(gan, params, batch.query),
            batch.query_labels,
            batch.query_labels,
            cfg.task.n_way,
        )
    grads, moved, sides = {}, {}, meta_sides(cfg)
    for side, loss, head in (("g", loss_g, "nm"), ("d", loss_d, "cf")):
        ss = gan.names(f"ss_{side}") if side in sides else []
        own = gan.names(head) if m.learn_rates else []
        if not ss + own:
            continue
        found = torch.autograd.grad(
            loss.sum(), [base[n] for n in ss] + [params[n] for n in own], retain_graph=side == "g"
        )
        if side in sides:
            grads[side] = found[: len(ss)]
        # Meta-SGD, first order: d theta_T / d log(rate) = theta_T - theta_0, element-wise.
        after = zip(own, found[len(ss) :], strict=True)
        moved |= {n: g * (params[n].detach() - start[n]) for n, g in after}
    if moved:
        grads["rates"] = gan.rates.gradient(moved, cfg.task.n_way)
    adapted = {n: params[n].detach() for n in heads}
    return TaskGradient(adapted, grads, torch.stack([loss_d.sum(), loss_g.sum()]).detach())


def meta_sides(cfg: Config) -> str:
    """The sides whose scale and shift the outer step trains (``meta.ss_sides``): ``g`` for
    IC's, ``d`` for FE's."""
    return "gd" if cfg.meta.ss_sides == "both" else cfg.meta.ss_sides


@torch.no_grad()
def step_heads(gan: ConditionalGAN, adapted: Params, step: float) -> None:
    """Eq. 12 with a step size: NM and CF move ``step`` of the way to the mean of the adapted
    heads (1, the paper's average; less, Reptile's interpolation)."""
    own = dict(gan.named_parameters())
    for name, value in adapted.items():
        own[name].lerp_(value, step)


def heads_of(gan: ConditionalGAN) -> Params:
    """Detached copies of NM's and CF's parameters."""
    own = dict(gan.named_parameters())
    return {n: own[n].detach().clone() for n in gan.names("nm") + gan.names("cf")}


@torch.no_grad()
def load_heads(gan: ConditionalGAN, heads: Params) -> None:
    """NM and CF take the values of ``heads`` (eq. 12 with the mean of the adapted heads;
    ``meta.head_update=reset`` with the heads meta-training started from)."""
    own = dict(gan.named_parameters())
    for name, value in heads.items():
        own[name].copy_(value)
