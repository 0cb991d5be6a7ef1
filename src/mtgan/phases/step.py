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

from mtgan.distributed import all_reduce_sum, world_size
from mtgan.losses import (
    critic,
    discriminator_loss,
    generator_loss,
    gradient_penalty,
    wasserstein_critic_loss,
)
from mtgan.nn.gan import ConditionalGAN

Params = dict[str, torch.Tensor]
OPTIMIZERS = ("adam", "sgd")


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
    """

    def __init__(
        self,
        names: Sequence[str],
        lr: float,
        kind: str = "adam",
        betas: tuple[float, float] = (0.5, 0.999),
        differentiable: bool = False,
        eps: float = 1e-8,
        data_parallel: bool = False,
    ):
        if kind not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {kind!r}; choose one of {OPTIMIZERS}")
        self.names, self.lr, self.kind, self.betas, self.eps = list(names), lr, kind, betas, eps
        self.differentiable, self.data_parallel = differentiable, data_parallel
        self.t = 0
        self.moments: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, params: Params, grads: Sequence[torch.Tensor]) -> Params:
        if self.data_parallel:
            all_reduce_sum(grads)
            for grad in grads:
                grad.div_(world_size())
        self.t += 1
        new = dict(params)
        for name, grad in zip(self.names, grads, strict=True):
            step = self._direction(name, grad)
            if self.differentiable:
                new[name] = params[name] - self.lr * step
            else:
                with torch.no_grad():
                    params[name].sub_(step, alpha=self.lr)
        return new

    def _direction(self, name: str, grad: torch.Tensor) -> torch.Tensor:
        """SGD: the gradient; Adam: the bias-corrected first moment over the second's root."""
        if self.kind == "sgd":
            return grad
        b1, b2 = self.betas
        m, v = self.moments.get(name, (torch.zeros_like(grad), torch.zeros_like(grad)))
        if not self.differentiable:
            grad = grad.detach()
        m = b1 * m + (1 - b1) * grad
        v = b2 * v + (1 - b2) * grad * grad
        self.moments[name] = (m, v) if self.differentiable else (m.detach(), v.detach())
        m_hat = m / (1 - b1**self.t)
        v_hat = v / (1 - b2**self.t)
        # The clamp keeps the second-order gradient finite where a gradient entry is exactly 0.
        return m_hat / (v_hat.clamp_min(1e-30).sqrt() + self.eps)


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
    objective: str = "eq6",
) -> tuple[torch.Tensor, torch.Tensor]:
    """L_D (eq. 4) and L_G (eq. 6, or eq. 5) on one batch, without updating anything.

    With a leading task dimension (``labels`` (T, n)), one loss per task.
    """
    fake_logits = classify(gan, params, features(gan, params, generate(gan, params, z, labels)))
    real_logits = discriminate(gan, params, real)
    loss_d = discriminator_loss(real_logits, labels, fake_logits)
    return loss_d, generator_loss(fake_logits, labels, objective)


def gan_step(
    gan: ConditionalGAN,
    params: Params,
    real: torch.Tensor | None,
    labels: torch.Tensor,
    z: torch.Tensor,
    update_d: Update,
    update_g: Update,
    objective: str = "eq6",
    mix: torch.Tensor | None = None,
    real_features: torch.Tensor | None = None,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[Params, dict[str, float]]:
    """One alternating step: D descends L_D (eq. 4), then G descends L_G (eq. 6) against it.

    Args:
        gan: the networks (their own parameters fill whatever ``params`` leaves out).
        params: name -> tensor; the entries named by the updates must require gradients.
        real, labels: a batch of real images in [-1, 1] and their class slots.
        z: noise, one row per real image; image i is generated for class ``labels[i]``.
        update_d, update_g: which parameters each player changes, and how.
        objective: ``eq6`` or ``eq5`` for L_G; ``wgan-gp`` replaces both losses by WGAN-GP's
            (the FIGR baseline), its interpolation weights drawn from ``mix``'s uniform numbers
            (one per image; the global generator when None).
        real_features: FE(real) from :func:`features`, when FE and its scale and shift stay
            fixed from step to step (adaptation, the inner loops of meta-training): computed
            once by the caller, it saves an FE pass every step (``real`` is then unused).
        augment: a differentiable transformation (:class:`mtgan.augment.Augment`) applied
            afresh to the real and to the generated images before D sees them (DiffAugment);
            ``real_features`` must then be None.

    With a leading task dimension T on ``real``, ``labels`` and ``z`` and on the tensors of NM
    and CF, T tasks step at once (meta-training's inner loops): each task descends its own loss.

    Returns:
        The parameters after the step and the two losses before it (the mean over tasks).
    """
    if augment is not None and real_features is not None:
        raise ValueError("augmented real images need FE every step: pass real, not its features")
    seen = (lambda x: x) if augment is None else augment
    fake = seen(generate(gan, params, z, labels))
    fake_features = features(gan, params, fake)
    if real_features is None:
        real_features = features(gan, params, seen(real))
    # No detach: gradients are taken with respect to D's parameters only, and second-order
    # meta-gradients need the path from scale and shift through the generated images.
    real_logits = classify(gan, params, real_features)
    fake_logits = classify(gan, params, fake_features)
    if objective == "wgan-gp":
        loss_d = _critic_loss(gan, params, real, fake, real_logits, fake_logits, mix)
    else:
        loss_d = discriminator_loss(real_logits, labels, fake_logits)
    params = _descend(params, loss_d, update_d)
    if any(n.startswith("discriminator.fe.") for n in update_d.names):
        fake_features = features(gan, params, fake)  # D's step moved FE (pretraining)
    # Otherwise D's step changed CF only, and FE(fake) serves G's step as it is.
    loss_g = generator_loss(classify(gan, params, fake_features), labels, objective)
    params = _descend(params, loss_g, update_g)
    return params, {"loss_d": loss_d.mean().item(), "loss_g": loss_g.mean().item()}


def _critic_loss(gan, params, real, fake, real_logits, fake_logits, mix) -> torch.Tensor:
    """WGAN-GP's critic loss, the gradient penalty taken at random mixes of real and fake
    (one task at a time: the penalty needs the real images, not only their features)."""
    if real is None or real.ndim != fake.ndim or fake.ndim != 4:
        raise ValueError("wgan-gp steps one task at a time and needs the real images")
    mix = torch.rand(len(real)) if mix is None else mix
    penalty = gradient_penalty(
        lambda x: critic(discriminate(gan, params, x)), real, fake, mix.to(real.device)
    )
    return wasserstein_critic_loss(real_logits, fake_logits, penalty)


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
