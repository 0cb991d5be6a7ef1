"""The external classifier M of eq. 2-3: a small ResNet trained on real images.

M gives p_M(y|x) for Inception and Mode Score, and its penultimate features serve FID, KID and
the diversity measures. It is an oracle trained on real images of the classes being evaluated,
not part of the GAN.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FEATURE_DIM = 128


class GlobalMean(nn.Module):
    """Global average pooling as a mean over the map: the same function as
    ``AdaptiveAvgPool2d(1)``, whose CUDA backward has no deterministic kernel."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean((2, 3), keepdim=True)


class _ResidualBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm and an identity (or 1x1 projection) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class Evaluator(nn.Module):
    """A ResNet classifier for 1- or 3-channel images of 28 to 84 pixels, inputs in [-1, 1].

    A 3x3 stem convolution, then three stages of two residual blocks (widths 32, 64, 128), each
    stage halving the resolution, global average pooling to the 128-dimensional penultimate
    features, and a linear layer to the class logits.

    Args:
        n_classes: number of output classes.
        in_channels: 1 (grey) or 3 (colour).
        stem_stride: 1 keeps the stem at full resolution; 2 halves it, about 3 times faster for
            images of 56 pixels or more (`train_evaluator` picks 2 for those).

    Example:
        >>> model = Evaluator(n_classes=5, in_channels=1).eval()
        >>> x = torch.zeros(2, 1, 32, 32)
        >>> tuple(model(x).shape), tuple(model.features(x).shape)
        ((2, 5), (2, 128))
    """

    def __init__(self, n_classes: int, in_channels: int = 1, stem_stride: int = 1):
        super().__init__()
        if n_classes < 1 or in_channels not in (1, 3) or stem_stride not in (1, 2):
            raise ValueError(
                "need n_classes >= 1, in_channels 1 or 3 and stem_stride 1 or 2, got "
                f"{n_classes}, {in_channels}, {stem_stride}"
            )
        self.n_classes, self.in_channels, self.stem_stride = n_classes, in_channels, stem_stride
        widths = (32, 64, FEATURE_DIM)
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, widths[0], 3, stem_stride, 1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        ]
        previous = widths[0]
        for width in widths:
            layers += [_ResidualBlock(previous, width, 2), _ResidualBlock(width, width, 1)]
            previous = width
        layers += [GlobalMean(), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(FEATURE_DIM, n_classes)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features, (n, 128), of images (n, C, H, W) in [-1, 1]."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected images (n, {self.in_channels}, H, W), got {tuple(x.shape)}")
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits, (n, n_classes), of images (n, C, H, W) in [-1, 1]."""
        return self.head(self.features(x))


def stem_stride_for(images: Tensor) -> int:
    """The stem stride `train_evaluator` uses: 2 for images of 56 pixels or more, else 1."""
    return 2 if min(images.shape[-2:]) >= 56 else 1


def train_evaluator(
    images: Tensor,
    labels: Tensor,
    n_classes: int,
    *,
    epochs: int = 15,
    batch_size: int = 128,
    lr: float = 3e-3,
    weight_decay: float = 5e-4,
    holdout_fraction: float = 0.2,
    seed: int = 0,
    augment: bool = True,
    device: str | torch.device = "cpu",
    progress: Callable[[dict], None] | None = None,
) -> tuple[Evaluator, dict]:
    """Train an Evaluator on real images, holding out part of every class to measure accuracy.

    The model's stem has stride 2 for images of 56 pixels or more (`Evaluator`), 1 otherwise.
    AdamW with a cosine learning-rate decay to 0 over all steps, cross-entropy loss, and (with
    augment) a random affine warp per image: a shift of up to 2 pixels, a rotation of up to 10
    degrees and a scaling by 0.9 to 1.1. In every class of n images, round(holdout_fraction * n)
    images are held out, but a class keeps at least one training image and, when it has two
    images or more and holdout_fraction > 0, gives at least one to the held-out part.

    Args:
        images: uint8 (n, C, H, W), C 1 or 3.
        labels: (n,) class indices in [0, n_classes).
        n_classes: number of classes.
        epochs: passes over the training images.
        batch_size: images per step.
        lr: peak learning rate of AdamW.
        weight_decay: AdamW weight decay.
        holdout_fraction: share of each class held out, in [0, 1).
        seed: seeds the weights, the split, the batches and the augmentation (the global random
            state is left untouched).
        augment: apply the random affine warp to training batches.
        device: where to train; the returned model stays there.
        progress: called after every epoch with {"epoch", "loss", "accuracy", "seconds"}
            (mean training loss and accuracy on the augmented batches, seconds so far).

    Returns:
        The model in eval mode and a dict with heldout_accuracy (nan without held-out images),
        train_accuracy (both measured in eval mode without augmentation), n_train, n_heldout,
        train_indices and heldout_indices (long tensors indexing `images`), and seconds.

    Example:
        >>> images = torch.randint(0, 256, (40, 1, 28, 28), dtype=torch.uint8)
        >>> labels = torch.arange(40) % 4
        >>> model, info = train_evaluator(images, labels, 4, epochs=1)
        >>> info["n_train"], info["n_heldout"]
        (32, 8)
    """
    labels = _check_training_data(images, labels, n_classes, holdout_fraction)
    generator = torch.Generator().manual_seed(seed)
    train_idx, heldout_idx = _stratified_split(labels, holdout_fraction, generator)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Evaluator(n_classes, images.shape[1], stem_stride_for(images)).to(device)
    steps_per_epoch = math.ceil(len(train_idx) / batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps_per_epoch)
    start = time.perf_counter()
    model.train()
    for epoch in range(epochs):
        order = train_idx[torch.randperm(len(train_idx), generator=generator)]
        batches = ((images[b], labels[b]) for b in order.split(batch_size))
        loss, accuracy = _train_epoch(model, optimizer, schedule, batches, augment, generator)
        if progress is not None:
            seconds = time.perf_counter() - start
            progress({"epoch": epoch + 1, "loss": loss, "accuracy": accuracy, "seconds": seconds})
    model.eval()
    info = {
        "heldout_accuracy": _accuracy(model, images[heldout_idx], labels[heldout_idx], batch_size),
        "train_accuracy": _accuracy(model, images[train_idx], labels[train_idx], batch_size),
        "n_train": len(train_idx),
        "n_heldout": len(heldout_idx),
        "train_indices": train_idx,
        "heldout_indices": heldout_idx,
        "seconds": time.perf_counter() - start,
    }
    return model, info


def predict_probs(
    model: Evaluator,
    images: Tensor,
    class_subset: Sequence[int] | None = None,
    batch_size: int = 256,
) -> Tensor:
    """Softmax probabilities p_M(y|x), over all classes or over a subset of them.

    With class_subset, the softmax runs over those logits only: column j is the probability of
    class class_subset[j] among the subset (e.g. a test task's N classes, for the N-way Mode
    Score whose upper bound is N).

    Args:
        model: a trained Evaluator (put in eval mode for the call, then restored).
        images: uint8 (n, C, H, W) in [0, 255] or float in [-1, 1].
        class_subset: distinct class indices, or None for all classes.
        batch_size: images per forward pass.

    Returns:
        (n, n_classes) or (n, len(class_subset)) float32 probabilities on the CPU.

    Example:
        >>> model = Evaluator(n_classes=10)
        >>> probs = predict_probs(model, torch.zeros(3, 1, 28, 28), class_subset=[7, 2])
        >>> tuple(probs.shape)
        (3, 2)
    """
    return probs_from_logits(_batched(model, model.forward, images, batch_size), class_subset)


def probs_from_logits(logits: Tensor, class_subset: Sequence[int] | None = None) -> Tensor:
    """Softmax of M's logits, over all classes or over the logits of ``class_subset`` only.

    Example:
        >>> tuple(probs_from_logits(torch.zeros(2, 5), [4, 1]).shape)
        (2, 2)
    """
    if class_subset is not None:
        subset = torch.as_tensor(list(class_subset), dtype=torch.long)
        if subset.numel() == 0 or subset.unique().numel() != subset.numel():
            raise ValueError(f"class_subset must hold distinct classes, got {subset.tolist()}")
        if subset.min() < 0 or subset.max() >= logits.shape[1]:
            raise ValueError(f"class_subset must lie in [0, {logits.shape[1]}): {subset.tolist()}")
        logits = logits[:, subset]
    return logits.softmax(1)


def features_and_logits(
    model: Evaluator, images: Tensor, batch_size: int = 256
) -> tuple[Tensor, Tensor]:
    """Penultimate features and class logits from one forward pass (CPU float32 tensors)."""
    both = _batched(model, lambda x: _features_and_logits(model, x), images, batch_size)
    return both[:, :FEATURE_DIM], both[:, FEATURE_DIM:]


def _features_and_logits(model: Evaluator, x: Tensor) -> Tensor:
    features = model.features(x)
    return torch.cat([features, model.head(features)], dim=1)


def extract_features(model: Evaluator, images: Tensor, batch_size: int = 256) -> Tensor:
    """Penultimate features (n, 128) for FID, KID and diversity, as float32 on the CPU.

    Args:
        model: a trained Evaluator (put in eval mode for the call, then restored).
        images: uint8 (n, C, H, W) in [0, 255] or float in [-1, 1].
        batch_size: images per forward pass.

    Example:
        >>> tuple(extract_features(Evaluator(3), torch.zeros(2, 1, 28, 28)).shape)
        (2, 128)
    """
    return _batched(model, model.features, images, batch_size)


def to_model_input(images: Tensor, device: str | torch.device = "cpu") -> Tensor:
    """uint8 images in [0, 255] -> float in [-1, 1]; float images pass through unchanged."""
    if images.dtype == torch.uint8:
        return images.to(device).float().div_(127.5).sub_(1.0)
    if not images.is_floating_point():
        raise ValueError(f"images must be uint8 or float, got {images.dtype}")
    return images.to(device, torch.float32)


def _batched(
    model: Evaluator, fn: Callable[[Tensor], Tensor], images: Tensor, batch_size: int
) -> Tensor:
    """Apply fn to images batch by batch, without gradients, in eval mode."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = [
                fn(to_model_input(batch, device)).float().cpu()
                for batch in images.split(batch_size)
            ]
    finally:
        model.train(was_training)
    return torch.cat(out)


def _train_epoch(
    model: Evaluator,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    batches: Iterable[tuple[Tensor, Tensor]],
    augment: bool,
    generator: torch.Generator,
) -> tuple[float, float]:
    """One pass of cross-entropy steps; returns the mean loss and accuracy on the batches seen."""
    device = next(model.parameters()).device
    loss_sum, correct, seen = 0.0, 0, 0
    for images, labels in batches:
        x = to_model_input(images, device)
        if augment:
            x = random_affine(x, generator)
        y = labels.to(device)
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        loss_sum += loss.item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
    return loss_sum / seen, correct / seen


def _accuracy(model: Evaluator, images: Tensor, labels: Tensor, batch_size: int) -> float:
    if len(labels) == 0:
        return math.nan
    predictions = _batched(model, model.forward, images, batch_size).argmax(1)
    return (predictions == labels).double().mean().item()


def random_affine(x: Tensor, generator: torch.Generator) -> Tensor:
    """Warp each image by a random shift (<= 2 px), rotation (<= 10 deg) and scale (0.9-1.1)."""
    n, _, h, w = x.shape
    u = torch.rand(n, 4, generator=generator).to(x.device) * 2 - 1  # uniform in [-1, 1]
    angle, scale = u[:, 0] * math.radians(10), 1 + 0.1 * u[:, 1]
    cos, sin = angle.cos() / scale, angle.sin() / scale
    shift_x, shift_y = u[:, 2] * 2 * 2 / w, u[:, 3] * 2 * 2 / h  # 2 px in [-1, 1] coordinates
    theta = torch.stack(
        [torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="border", align_corners=False)


def _stratified_split(
    labels: Tensor, holdout_fraction: float, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Shuffle each class, hold out its first images; return sorted train and held-out indices."""
    train, heldout = [], []
    for cls in labels.unique():
        idx = (labels == cls).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        k = round(holdout_fraction * len(idx))
        if holdout_fraction > 0 and len(idx) >= 2:
            k = min(max(k, 1), len(idx) - 1)
        heldout.append(idx[:k])
        train.append(idx[k:])
    return torch.cat(train).sort().values, torch.cat(heldout).sort().values


def _check_training_data(
    images: Tensor, labels: Tensor, n_classes: int, holdout_fraction: float
) -> Tensor:
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"images must be uint8 (n, C, H, W) with C 1 or 3, got {images.dtype} "
            f"{tuple(images.shape)}"
        )
    labels = torch.as_tensor(labels)
    if labels.shape != images.shape[:1] or labels.is_floating_point():
        raise ValueError(
            f"labels must be integers of shape ({images.shape[0]},), got {labels.dtype} "
            f"{tuple(labels.shape)}"
        )
    if len(labels) == 0 or labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"labels must be non-empty and lie in [0, {n_classes})")
    if not 0.0 <= holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must lie in [0, 1), got {holdout_fraction}")
    return labels.long()
