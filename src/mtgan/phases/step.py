"""The one GAN training step that every phase and baseline shares.

The phases differ only in which parameters the two updates touch and on which images they run:

=============  ===================  ====================  ==========================
phase          D update             G update              data
=============  ===================  ====================  ==========================
pretrain (a)   FE + CF              NM + IC               all training classes
meta inner (b) CF                   NM                    a task's support set
adapt (c)      CF                   NM                    the new task's support set
=============  ===================  ====================  ==========================

Parameters travel as a ``{name: tensor}`` dict through :func:`torch.func.functional_call`, so
that the same step updates a module's own parameters in place (pretraining, first-order
meta-learning, adaptation) or returns new tensors that stay differentiable with respect to
scale and shift (second-order meta-learning).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.func import functional_call

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
    """

    def __init__(
        self,
        names: Sequence[str],
        lr: float,
        kind: str = "adam",
        betas: tuple[float, float] = (0.5, 0.999),
        differentiable: bool = False,
        eps: float = 1e-8,
    ):
        if kind not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {kind!r}; choose one of {OPTIMIZERS}")
        self.names, self.lr, self.kind, self.betas, self.eps = list(names), lr, kind, betas, eps
        self.differentiable = differentiable
        self.t = 0
        self.moments: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, params: Params, grads: Sequence[torch.Tensor]) -> Params:
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


def generate(gan: ConditionalGAN, params: Params, z: torch.Tensor, labels: torch.Tensor):
    """G(z, y) with the given parameters."""
    return functional_call(gan.generator, _sub(params, "generator."), (z, labels))


def discriminate(gan: ConditionalGAN, params: Params, images: torch.Tensor) -> torch.Tensor:
    """D(x)'s N + 1 logits with the given parameters."""
    return functional_call(gan.discriminator, _sub(params, "discriminator."), (images,))


def gan_losses(
    gan: ConditionalGAN,
    params: Params,
    real: torch.Tensor,
    labels: torch.Tensor,
    z: torch.Tensor,
    objective: str = "eq6",
) -> tuple[torch.Tensor, torch.Tensor]:
    """L_D (eq. 4) and L_G (eq. 6, or eq. 5) on one batch, without updating anything."""
    fake = generate(gan, params, z, labels)
    loss_d = _discriminator_loss(gan, params, real, labels, fake, objective)
    loss_g = generator_loss(discriminate(gan, params, fake), labels, objective)
    return loss_d, loss_g


def gan_step(
    gan: ConditionalGAN,
    params: Params,
    real: torch.Tensor,
    labels: torch.Tensor,
    z: torch.Tensor,
    update_d: Update,
    update_g: Update,
    objective: str = "eq6",
    mix: torch.Tensor | None = None,
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

    Returns:
        The parameters after the step and the two losses before it.
    """
    fake = generate(gan, params, z, labels)
    loss_d = _discriminator_loss(gan, params, real, labels, fake, objective, mix)
    params = _descend(params, loss_d, update_d)
    loss_g = generator_loss(discriminate(gan, params, fake), labels, objective)
    params = _descend(params, loss_g, update_g)
    return params, {"loss_d": loss_d.item(), "loss_g": loss_g.item()}


def _discriminator_loss(gan, params, real, labels, fake, objective, mix=None) -> torch.Tensor:
    # No detach: gradients are taken with respect to D's parameters only, and second-order
    # meta-gradients need the path from scale and shift through the generated images.
    real_logits, fake_logits = discriminate(gan, params, real), discriminate(gan, params, fake)
    if objective != "wgan-gp":
        return discriminator_loss(real_logits, labels, fake_logits)
    mix = torch.rand(len(real)) if mix is None else mix
    penalty = gradient_penalty(
        lambda x: critic(discriminate(gan, params, x)), real, fake, mix.to(real.device)
    )
    return wasserstein_critic_loss(real_logits, fake_logits, penalty)


def _descend(params: Params, loss: torch.Tensor, update: Update) -> Params:
    inputs = [params[n] for n in update.names]
    grads = torch.autograd.grad(loss, inputs, create_graph=update.differentiable)
    return update(params, grads)


def trainable_params(gan: ConditionalGAN, names: Sequence[str]) -> Params:
    """The module's own parameters, with gradients switched on for ``names`` only."""
    params = dict(gan.named_parameters())
    wanted = set(names)
    for name, p in params.items():
        p.requires_grad_(name in wanted)
    return params
