"""The one GAN training step that every phase and baseline shares.

The phases differ only in which parameters the two updates touch and on which images they run:

=============  ===================  ====================  ==========================
phase          D update             G update              data
=============  ===================  ====================  ==========================
pretrain (a)   FE + CF              NM + IC               all training classes
meta inner (b) CF                   NM                    a task's support set
adapt (c)      CF                   NM                    the new task's support set
fine-tuning    FE + CF              NM + IC               the new task's support set
FIGR           FE + CF (WGAN-GP)    NM + IC (WGAN-GP)     one class's images
=============  ===================  ====================  ==========================

Parameters travel as a ``{name: tensor}`` dict through :func:`torch.func.functional_call`, so
that the same step updates a module's own parameters in place (pretraining, first-order
meta-learning, adaptation) or returns new tensors that stay differentiable with respect to
scale and shift (second-order meta-learning).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.func import functional_call

from mtgan.choices import OptimizerKind, allowed
from mtgan.distributed import all_reduce_sum, world_size
from mtgan.losses import ClassifierObjective, Objective, mode_seeking
from mtgan.nn.gan import ConditionalGAN

Params = dict[str, torch.Tensor]
OPTIMIZERS = allowed(OptimizerKind)


class Update:
    """Gradient descent on named parameters: SGD or Adam, in place or differentiable.

    Args:
        names: the parameters this update changes.
        lr: the learning rate (alpha in eq. 10, beta in eq. 11).
        kind: ``adam`` or ``sgd``.
        betas: Adam's moment decay rates.
        differentiable: return new tensors that keep the graph (second-order meta-learning)
            instead of updating in place.
        data_parallel: average the gradients over the processes first (data-parallel
            pretraining, as ``DistributedDataParallel`` does; nothing to do for one process).
        scales: per-element multipliers of ``lr`` by parameter name (Meta-SGD's learned rates,
            :meth:`mtgan.nn.rates.HeadRates.multipliers`); parameters not named keep ``lr``.
    """

    def __init__(
        self,
        names: Sequence[str],
        lr: float,
        kind: OptimizerKind = "adam",
        betas: tuple[float, float] = (0.5, 0.999),
        differentiable: bool = False,
        eps: float = 1e-8,
        data_parallel: bool = False,
        scales: dict[str, torch.Tensor] | None = None,
    ):
        if kind not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {kind!r}; choose one of {OPTIMIZERS}")
        self.names, self.lr, self.kind, self.betas, self.eps = list(names), lr, kind, betas, eps
        self.differentiable, self.data_parallel = differentiable, data_parallel
        self.scales = {n: s for n, s in (scales or {}).items() if n in self.names}
        self.t = 0
        self.moments: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, params: Params, grads: Sequence[torch.Tensor]) -> Params:
        if self.data_parallel:
            all_reduce_sum(grads)
            for grad in grads:
                grad.div_(world_size())
        self.t += 1
        if not self.names:
            return dict(params)
        plain_adam = self.kind == "adam" and not (self.differentiable or self.scales)
        if plain_adam and self._fused_adam(params, grads):
            return dict(params)
        steps = list(self._directions(list(grads)))
        for i, name in enumerate(self.names):
            if name in self.scales:
                steps[i] = steps[i] * self.scales[name]
        if self.differentiable:
            return {
                **params,
                **{n: params[n] - self.lr * s for n, s in zip(self.names, steps, strict=True)},
            }
        with torch.no_grad():
            torch._foreach_add_([params[n] for n in self.names], steps, alpha=-self.lr)
        return dict(params)

    def _fused_adam(self, params: Params, grads: Sequence[torch.Tensor]) -> bool:
        """The in-place Adam step in PyTorch's fused kernel, one pass over each tensor: the same
        update as :meth:`_directions`' with ``lr``. The kernel walks a parameter, its gradient
        and its moments as flat arrays, so they are first given the parameter's memory layout.
        Returns False, having done nothing, where the kernel does not apply: other devices than
        CPU and CUDA, or a parameter that is not one dense block."""
        tensors = [params[n] for n in self.names]
        if not all(_fusable(p) for p in tensors):
            return False
        grads = [_in_layout_of(p, g.detach()) for p, g in zip(tensors, grads, strict=True)]
        m, v = self._moments(grads)
        m = [_in_layout_of(p, x) for p, x in zip(tensors, m, strict=True)]
        v = [_in_layout_of(p, x) for p, x in zip(tensors, v, strict=True)]
        self.moments = dict(zip(self.names, zip(m, v, strict=True), strict=True))
        # the kernel reads the step count as float32 (on CUDA, whatever the default dtype)
        step = torch.tensor(float(self.t), dtype=torch.float32, device=tensors[0].device)
        b1, b2 = self.betas
        with torch.no_grad():
            torch._fused_adam_(
                tensors, grads, m, v, [], [step] * len(tensors), lr=self.lr, beta1=b1,
                beta2=b2, weight_decay=0.0, eps=self.eps, amsgrad=False, maximize=False,
            )  # fmt: skip
        return True

    def _directions(self, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """SGD: the gradients; Adam: the bias-corrected first moments over the second's roots.

        Multi-tensor (``torch._foreach_*``) operations over all the parameters at once, out of
        place so that a differentiable update keeps its graph (the gradients carry none
        otherwise).
        """
        if self.kind == "sgd":
            return grads
        b1, b2 = self.betas
        if not self.differentiable:
            grads = [g.detach() for g in grads]
        m, v = self._moments(grads)
        m = torch._foreach_lerp(m, grads, 1 - b1)
        v = torch._foreach_add(
            torch._foreach_mul(v, b2), torch._foreach_mul(grads, grads), alpha=1 - b2
        )
        self.moments = dict(zip(self.names, zip(m, v, strict=True), strict=True))
        # The clamp keeps the second-order gradient finite where an entry of v is 0.
        v_hat = torch._foreach_clamp_min(torch._foreach_div(v, 1 - b2**self.t), 1e-30)
        denominators = torch._foreach_add(torch._foreach_sqrt(v_hat), self.eps)
        torch._foreach_mul_(denominators, 1 - b1**self.t)  # m_hat = m / (1 - b1^t)
        return torch._foreach_div(m, denominators)

    def _moments(self, grads: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Adam's first and second moments of every parameter (zeros before the first step)."""
        for name, grad in zip(self.names, grads, strict=True):
            if name not in self.moments:
                self.moments[name] = (torch.zeros_like(grad), torch.zeros_like(grad))
        pairs = [self.moments[name] for name in self.names]
        return [m for m, _ in pairs], [v for _, v in pairs]


def _fusable(param: torch.Tensor) -> bool:
    """Whether PyTorch's fused Adam kernel takes this parameter: a float tensor on the CPU or
    CUDA whose elements fill one block of memory (contiguous or channels-last)."""
    dense = param.is_contiguous() or (
        param.dim() == 4 and param.is_contiguous(memory_format=torch.channels_last)
    )
    return dense and param.is_floating_point() and param.device.type in ("cpu", "cuda")


def _in_layout_of(param: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``t`` with ``param``'s strides (a copy where they differ)."""
    return t if t.stride() == param.stride() else torch.empty_like(param).copy_(t)


def _sub(params: Params, prefix: str) -> Params:
    return {k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)}


def per_task_linear(params: Params, x: torch.Tensor) -> torch.Tensor:
    """A linear layer (NM or CF) per task: ``weight`` (T, out, in) and ``bias`` (T, out) on
    ``x`` (T, n, in), as one batched matmul."""
    return torch.baddbmm(params["bias"].unsqueeze(-2), x, params["weight"].transpose(-1, -2))


def generate(gan: ConditionalGAN, params: Params, z: torch.Tensor, labels: torch.Tensor):
    """G(z, y) with the given parameters.

    With ``z`` (T, n, z_dim), ``labels`` (T, n) and NM's tensors stacked by task, T tasks at
    once: each task's NM, then IC on all the T * n images in one batch.
    """
    g = _sub(params, "generator.")
    if labels.dim() == 1:
        return functional_call(gan.generator, g, (z, labels))
    h = per_task_linear(_sub(g, "nm."), gan.generator.nm_input(z, labels))
    images = functional_call(gan.generator.ic, _sub(g, "ic."), (h.flatten(0, 1),))
    return images.view(*labels.shape, *images.shape[1:])


def features(gan: ConditionalGAN, params: Params, images: torch.Tensor) -> torch.Tensor:
    """FE(x), shared by all tasks: images (..., C, H, W) give features (..., F)."""
    fe = _sub(params, "discriminator.fe.")
    flat = functional_call(gan.discriminator.fe, fe, (images.flatten(0, -4),))
    return flat.view(*images.shape[:-3], -1)


def classify(gan: ConditionalGAN, params: Params, feats: torch.Tensor) -> torch.Tensor:
    """CF: D's N + 1 logits from FE's features; with features (T, n, F) and CF's tensors
    stacked by task, T tasks at once."""
    cf = _sub(params, "discriminator.cf.")
    if feats.dim() == 2:
        return functional_call(gan.discriminator.cf, cf, (feats,))
    return per_task_linear(cf, feats)


def discriminate(gan: ConditionalGAN, params: Params, images: torch.Tensor) -> torch.Tensor:
    """D(x)'s N + 1 logits with the given parameters."""
    return classify(gan, params, features(gan, params, images))


def gan_losses(
    gan: ConditionalGAN,
    params: Params,
    real: torch.Tensor,
    labels: torch.Tensor,
    z: torch.Tensor,
    objective: ClassifierObjective,
) -> tuple[torch.Tensor, torch.Tensor]:
    """L_D (eq. 4) and L_G (eq. 6, or eq. 5) on one batch, without updating anything.

    With a leading task dimension (``labels`` (T, n)), one loss per task.
    """
    fake = generate(gan, params, z, labels)
    fake_logits = discriminate(gan, params, fake)
    real_logits = discriminate(gan, params, real)
    loss_d = objective.discriminator_loss(None, real, fake, real_logits, fake_logits, labels)
    return loss_d, objective.generator_loss(fake_logits, labels)


class GanStep:
    """One alternating step, configured once per phase: D descends its loss (eq. 4), then G
    descends its own (eq. 6) against the updated D.

    Args:
        gan: the networks (their own parameters fill whatever ``params`` leaves out).
        update_d, update_g: which parameters each player changes, and how.
        objective: the two losses (:class:`mtgan.losses.ClassifierObjective` by default,
            :class:`mtgan.losses.WassersteinGP` for FIGR).
        augment: a differentiable transformation (:class:`mtgan.augment.Augment`) applied
            afresh to the real and to the generated images before D sees them (DiffAugment).
        mode_seeking: the weight of MSGAN's term in G's loss (:func:`mtgan.losses.mode_seeking`;
            images 2i and 2i + 1 of a batch must then share a class; one task at a time).

    When D's update leaves FE alone and nothing augments D's inputs (adaptation, the inner
    loops of meta-training without augmentation), FE(real) is the same at every step: the step
    keeps it for the ``real`` tensor it last saw and saves an FE pass per step. FE and its scale
    and shift must then stay fixed for the life of the step object (as they do in a phase).

    With a leading task dimension T on ``real``, ``labels`` and ``z`` and on the tensors of NM
    and CF, T tasks step at once (meta-training's inner loops): each task descends its own loss.

    Example:
        >>> gan = ConditionalGAN(3, image_size=16, z_dim=4, g_width=4, d_width=4).eval()
        >>> params = trainable_params(gan, gan.names("nm") + gan.names("cf"))
        >>> step = GanStep(gan, Update(gan.names("cf"), 1e-3), Update(gan.names("nm"), 1e-3))
        >>> _, losses = step(params, torch.zeros(3, 1, 16, 16), torch.arange(3), torch.randn(3, 4))
        >>> sorted(losses)
        ['loss_d', 'loss_g']
    """

    def __init__(
        self,
        gan: ConditionalGAN,
        update_d: Update,
        update_g: Update,
        objective: Objective | None = None,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        mode_seeking: float = 0.0,
    ):
        self.gan, self.update_d, self.update_g = gan, update_d, update_g
        self.mode_seeking = mode_seeking
        self.objective = ClassifierObjective() if objective is None else objective
        self.augment = augment
        self.trains_fe = any(n.startswith("discriminator.fe.") for n in update_d.names)
        self._kept: tuple[torch.Tensor, torch.Tensor] | None = None

    def __call__(
        self, params: Params, real: torch.Tensor, labels: torch.Tensor, z: torch.Tensor
    ) -> tuple[Params, dict[str, float]]:
        """One step on real images in [-1, 1] with their slots, image i generated from
        ``z[i]`` for class ``labels[i]``. Returns the parameters after the step and the two
        losses before it (the mean over tasks)."""
        gan, objective = self.gan, self.objective
        seen = (lambda x: x) if self.augment is None else self.augment
        generated = generate(gan, params, z, labels)
        fake = seen(generated)
        fake_features = features(gan, params, fake)
        real_features = self._real_features(params, real, seen)
        # No detach: gradients are taken with respect to D's parameters only, and second-order
        # meta-gradients need the path from scale and shift through the generated images.
        real_logits = classify(gan, params, real_features)
        fake_logits = classify(gan, params, fake_features)
        d = lambda x: discriminate(gan, params, x)  # noqa: E731
        loss_d = objective.discriminator_loss(d, real, fake, real_logits, fake_logits, labels)
        params = _descend(params, loss_d, self.update_d)
        if self.trains_fe:
            fake_features = features(gan, params, fake)  # D's step moved FE (pretraining)
        # Otherwise D's step changed CF only, and FE(fake) serves G's step as it is.
        loss_g = objective.generator_loss(classify(gan, params, fake_features), labels)
        if self.mode_seeking:
            loss_g = loss_g + self.mode_seeking * mode_seeking(generated, z)
        params = _descend(params, loss_g, self.update_g)
        return params, {"loss_d": loss_d.mean().item(), "loss_g": loss_g.mean().item()}

    def _real_features(self, params: Params, real: torch.Tensor, seen) -> torch.Tensor:
        if self.trains_fe or self.augment is not None:
            return features(self.gan, params, seen(real))
        if self._kept is None or self._kept[0] is not real:
            self._kept = (real, features(self.gan, params, real))
        return self._kept[1]


def _descend(params: Params, loss: torch.Tensor, update: Update) -> Params:
    """Per-task losses are summed: each task's parameters get the gradient of its own loss."""
    inputs = [params[n] for n in update.names]
    grads = torch.autograd.grad(loss.sum(), inputs, create_graph=update.differentiable)
    return update(params, grads)


def trainable_params(gan: ConditionalGAN, names: Sequence[str]) -> Params:
    """The module's own parameters, with gradients switched on for ``names`` only."""
    params = dict(gan.named_parameters())
    wanted = set(names)
    for name, p in params.items():
        p.requires_grad_(name in wanted)
    return params
