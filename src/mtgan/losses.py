"""The GAN losses of the paper, computed from logits with log-softmax.

D's logits have N + 1 entries: the N classes and "fake" (the last). With
``log D_k(x) = log_softmax(logits)[k]``:

- eq. 4 (discriminator): ``L_D = -mean_R log D_y(x) - mean_F log D_{N+1}(x)``
  (the paper's eq. 7 writes ``log(1 - D_{N+1})`` for the fake term, which contradicts eq. 4;
  we follow eq. 4);
- eq. 6 (generator): ``L_G = -mean_F log D_y(G(z, y))``;
- eq. 5 (generator, the weaker option): ``L_G = -mean_F log(1 - D_{N+1}(G(z, y)))``.

Means over the batch replace the paper's sums, which only rescales the learning rate. Logits
(T, n, N + 1) with labels (T, n) give one loss per task (a vector of T means), so that a batch of
tasks is trained at once.

The FIGR baseline trains a Wasserstein GAN with gradient penalty (Gulrajani et al. 2017) on the
same networks: with one class, its critic is D's log-odds of "real" against "fake" (a linear
function of FE's features, like a one-output critic head).

Each objective is an object with one interface (:class:`Objective`), so that the shared GAN
step (:mod:`mtgan.phases.step`) takes whichever a phase or baseline needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from mtgan.choices import GeneratorLoss, allowed

GRADIENT_PENALTY_WEIGHT = 10.0
"""lambda of WGAN-GP, as in Gulrajani et al. and FIGR."""

Discriminate = Callable[[torch.Tensor], torch.Tensor]
"""D as a function: images -> its N + 1 logits."""


class Objective(Protocol):
    """The two players' losses from D's logits; one interface for every GAN objective.

    ``discriminator_loss`` also receives D as a function and the images it saw, for
    objectives that look at D between them (WGAN-GP's gradient penalty).
    """

    def discriminator_loss(
        self,
        d: Discriminate,
        real: torch.Tensor | None,
        fake: torch.Tensor,
        real_logits: torch.Tensor,
        fake_logits: torch.Tensor,
        labels: torch.Tensor,
    ) -> torch.Tensor: ...

    def generator_loss(self, fake_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class ClassifierObjective:
    """The paper's objective: D by eq. 4, G by eq. 6 (``generator="eq6"``) or eq. 5; with
    ``r1`` > 0, D's loss adds the R1 penalty with that weight (:func:`r1_penalty`).

    Example:
        >>> logits = torch.tensor([[4.0, 0.0, 0.0]])  # class 0 of N = 2, or fake
        >>> loss = ClassifierObjective().generator_loss(logits, torch.tensor([0]))
        >>> round(loss.item(), 4)  # -log softmax(logits)[0]
        0.036
    """

    generator: GeneratorLoss = "eq6"
    r1: float = 0.0

    def __post_init__(self):
        if self.generator not in allowed(GeneratorLoss):
            raise ValueError(
                f"unknown generator objective {self.generator!r}; "
                f"choose one of {allowed(GeneratorLoss)}"
            )

    def discriminator_loss(self, d, real, fake, real_logits, fake_logits, labels):
        loss = discriminator_loss(real_logits, labels, fake_logits)
        if self.r1 == 0:
            return loss
        if real is None:
            raise ValueError("the R1 penalty needs the real images, not only their features")
        return loss + self.r1 / 2 * r1_penalty(lambda x: critic(d(x)), real)

    def generator_loss(self, fake_logits, labels):
        return generator_loss(fake_logits, labels, self.generator)


@dataclass
class WassersteinGP:
    """WGAN-GP (the FIGR baseline): the critic is D's log-odds of real against fake, the
    gradient penalty is taken at random mixes of real and generated images whose weights are
    drawn from ``rng`` (the global generator when None). One task at a time: the penalty needs
    the real images, not only their features."""

    rng: torch.Generator | None = None

    def discriminator_loss(self, d, real, fake, real_logits, fake_logits, labels):
        if real is None or real.ndim != fake.ndim or fake.ndim != 4:
            raise ValueError("wgan-gp steps one task at a time and needs the real images")
        mix = torch.rand(len(real), generator=self.rng).to(real.device)
        penalty = gradient_penalty(lambda x: critic(d(x)), real, fake, mix)
        return wasserstein_critic_loss(real_logits, fake_logits, penalty)

    def generator_loss(self, fake_logits, labels):
        return -critic(fake_logits).mean(-1)


def discriminator_loss(
    real_logits: torch.Tensor, labels: torch.Tensor, fake_logits: torch.Tensor
) -> torch.Tensor:
    """Eq. 4: real images into their class, generated images into "fake" (the last logit)."""
    fake_class = torch.full(
        fake_logits.shape[:-1], fake_logits.shape[-1] - 1, device=fake_logits.device
    )
    return _cross_entropy(real_logits, labels) + _cross_entropy(fake_logits, fake_class)


def generator_loss(
    fake_logits: torch.Tensor, labels: torch.Tensor, objective: GeneratorLoss = "eq6"
) -> torch.Tensor:
    """Eq. 6 (default): generated images of class y classified as y; eq. 5: as not fake."""
    if objective == "eq6":
        return _cross_entropy(fake_logits, labels)
    if objective == "eq5":
        # log(1 - D_{N+1}) = log sum_{k <= N} softmax_k = logsumexp(real logits) - logsumexp(all)
        not_fake = torch.logsumexp(fake_logits[..., :-1], -1) - torch.logsumexp(fake_logits, -1)
        return -not_fake.mean(-1)
    raise ValueError(
        f"unknown generator objective {objective!r}; choose one of {allowed(GeneratorLoss)}"
    )


def class_feature_matching(
    fake_features: torch.Tensor,
    real_features: torch.Tensor,
    fake_labels: torch.Tensor,
    real_labels: torch.Tensor,
    n_classes: int,
) -> torch.Tensor:
    """Our extension of eq. 11 for G's scale and shift (``meta.outer_g=features``): the squared
    distance between the mean features of the generated and of the real images of each class,
    summed over the classes (feature matching, Salimans et al. 2016, per class). Unlike eq. 6's
    L_G it depends on the real (query) images. With a leading task dimension, one loss per task.

    Example:
        >>> f = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
        >>> class_feature_matching(f, f + 1, torch.tensor([0, 0]), torch.tensor([0, 0]), 1)
        tensor(2.)
    """

    def class_means(feats: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        onehot = torch.nn.functional.one_hot(labels, n_classes).to(feats.dtype)
        counts = onehot.sum(-2).clamp_min(1).unsqueeze(-1)
        return (onehot.transpose(-1, -2) @ feats) / counts

    gap = class_means(fake_features, fake_labels) - class_means(real_features, real_labels)
    return gap.pow(2).sum((-1, -2))


def r1_penalty(realness_of: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor):
    """R1 (Mescheder et al. 2018): E ||grad_x realness(x)||^2 over the real images, where
    D's realness is its log-odds of real against fake (:func:`critic`); weighted by gamma / 2
    in D's loss. The graph is kept so that the penalty trains D.

    Example:
        >>> real = torch.ones(2, 3)
        >>> r1_penalty(lambda x: (2 * x).sum(-1), real)  # the gradient is 2 everywhere
        tensor(12.)
    """
    x = real.detach().requires_grad_()
    (grad,) = torch.autograd.grad(realness_of(x).sum(), x, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


def mode_seeking(images: torch.Tensor, z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """MSGAN's mode-seeking term (Mao et al. 2019, eq. 3 as their code computes it) for G to
    minimise: ``1 / (mean |G(z1, y) - G(z2, y)| / mean |z1 - z2| + eps)``, over the pairs of
    images 2i and 2i + 1, which must be of the same class. It grows when two noises of one class
    give images closer than the noises are: it counters drawing every sample of a class alike.

    Example:
        >>> z = torch.tensor([[0.0], [1.0]])
        >>> round(mode_seeking(torch.tensor([[0.0], [0.5]]), z).item(), 3)  # 1 / 0.5
        2.0
    """
    gap = (images[0::2] - images[1::2]).abs().mean()
    return 1 / (gap / (z[0::2] - z[1::2]).abs().mean() + eps)


def critic(logits: torch.Tensor) -> torch.Tensor:
    """The WGAN critic's value: log (1 - D_{N+1}(x)) - log D_{N+1}(x), from D's logits."""
    return torch.logsumexp(logits[..., :-1], -1) - logits[..., -1]


def wasserstein_critic_loss(
    real_logits: torch.Tensor, fake_logits: torch.Tensor, penalty: torch.Tensor
) -> torch.Tensor:
    """WGAN-GP's critic loss: E critic(fake) - E critic(real) + lambda * penalty."""
    return (
        critic(fake_logits).mean(-1)
        - critic(real_logits).mean(-1)
        + GRADIENT_PENALTY_WEIGHT * penalty
    )


def gradient_penalty(
    critic_of: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    mix: torch.Tensor,
) -> torch.Tensor:
    """E (||grad_x critic(x)|| - 1)^2 at x = mix * real + (1 - mix) * fake, per image.

    ``mix`` holds one number in [0, 1] per image; the graph is kept so that the penalty trains D.
    """
    m = mix.view(-1, *[1] * (real.ndim - 1))
    x = m * real + (1 - m) * fake
    if not x.requires_grad:
        x.requires_grad_()
    (grad,) = torch.autograd.grad(critic_of(x).sum(), x, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """-log softmax(logits)[label], averaged over the last batch dimension."""
    if labels.dim() == 1:
        return F.cross_entropy(logits, labels)
    per_image = F.cross_entropy(logits.flatten(0, -2), labels.flatten(), reduction="none")
    return per_image.view(labels.shape).mean(-1)
