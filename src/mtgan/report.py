"""Image grids, loss plots and the run's short Markdown report."""

from __future__ import annotations

import io
import os

import numpy as np
import torch
from PIL import Image

from mtgan.checkpoint import atomic_write


def class_rows_grid(
    support: torch.Tensor,
    support_labels: torch.Tensor,
    generated: torch.Tensor,
    generated_labels: torch.Tensor,
    scale: int = 2,
    gap: int = 4,
) -> Image.Image:
    """One row per class: its support images, a gap, then its generated images.

    All images are uint8 (n, C, H, W); labels are the class slots.
    """
    n_way = int(max(support_labels.max(), generated_labels.max())) + 1
    rows = []
    for slot in range(n_way):
        left = _strip(support[support_labels == slot])
        right = _strip(generated[generated_labels == slot])
        spacer = np.full((left.shape[0], gap, left.shape[2]), 128, np.uint8)
        rows.append(np.concatenate([left, spacer, right], axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 1), (0, width - r.shape[1]), (0, 0)), constant_values=128) for r in rows]
    return _to_image(np.concatenate(rows, axis=0), scale)


def image_grid(images: torch.Tensor, ncols: int, scale: int = 2) -> Image.Image:
    """Images (n, C, H, W) uint8 in rows of ``ncols``."""
    n = len(images)
    rows = [_strip(images[i : i + ncols]) for i in range(0, n, ncols)]
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 1), (0, width - r.shape[1]), (0, 0)), constant_values=128) for r in rows]
    return _to_image(np.concatenate(rows, axis=0), scale)


def _strip(images: torch.Tensor) -> np.ndarray:
    """Images side by side with a one-pixel grey border, as an (H, W, C) array."""
    arr = images.permute(0, 2, 3, 1).cpu().numpy()
    padded = np.pad(arr, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=128)
    return np.concatenate(list(padded), axis=1)


def _to_image(arr: np.ndarray, scale: int) -> Image.Image:
    mode = "L" if arr.shape[2] == 1 else "RGB"
    img = Image.fromarray(arr[..., 0] if mode == "L" else arr, mode)
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST)


def save_png(image: Image.Image, path: str | os.PathLike) -> None:
    """Save a PIL image as PNG, atomically."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    atomic_write(path, buf.getvalue())


def save_loss_plot(histories: dict[str, list[dict[str, float]]], path: str | os.PathLike) -> None:
    """One panel per phase with its losses against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases = {k: v for k, v in histories.items() if v}
    fig, axes = plt.subplots(1, len(phases), figsize=(4 * len(phases), 3), squeeze=False)
    for ax, (phase, history) in zip(axes[0], phases.items(), strict=True):
        for key in history[0]:
            ax.plot([h[key] for h in history], label=key, linewidth=0.8)
        ax.set_title(phase)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write(path, buf.getvalue())
