"""Image grids, plots and Markdown tables of scores (matplotlib is imported when a plot is
drawn, so that commands which draw none start faster)."""

from __future__ import annotations

import io
import os

import numpy as np
import torch
from PIL import Image, ImageDraw

from mtgan.files import atomic_write


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
    left, right = _class_rows(support, support_labels), _class_rows(generated, generated_labels)
    spacer = np.full((left.shape[0], gap, left.shape[2]), 128, np.uint8)
    return _to_image(np.concatenate([left, spacer, right], axis=1), scale)


def class_rows(images: torch.Tensor, labels: torch.Tensor, per_row: int, scale: int = 2):
    """One row per class slot with its first ``per_row`` images (uint8 (n, C, H, W))."""
    keep = torch.cat([torch.nonzero(labels == s)[:per_row, 0] for s in labels.unique()])
    return _to_image(_class_rows(images[keep], labels[keep]), scale)


def _class_rows(images: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    rows = [_strip(images[labels == slot]) for slot in range(int(labels.max()) + 1)]
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 1), (0, width - r.shape[1]), (0, 0)), constant_values=128) for r in rows]
    return np.concatenate(rows, axis=0)


def labelled_grid(
    images: torch.Tensor,
    labels: torch.Tensor,
    names: list[str],
    per_row: int = 10,
    scale: int = 2,
) -> Image.Image:
    """Every class's images under its name, wrapped at ``per_row`` images a row.

    ``images`` uint8 (n, C, H, W) with their class slots ``labels``; ``names`` the class of
    each slot.
    """
    blocks = []
    for slot, name in enumerate(names):
        block = _to_image(image_grid_array(images[labels == slot], per_row), scale)
        header = Image.new(block.mode, (block.width, 14), "white")
        ImageDraw.Draw(header).text((2, 1), name, fill="black")
        blocks += [header, block]
    width = max(b.width for b in blocks)
    canvas = Image.new(blocks[0].mode, (width, sum(b.height for b in blocks)), "white")
    y = 0
    for block in blocks:
        canvas.paste(block, (0, y))
        y += block.height
    return canvas


def image_grid_array(images: torch.Tensor, ncols: int) -> np.ndarray:
    """Images (n, C, H, W) uint8 in rows of ``ncols``, as one (H', W', C) array."""
    n = len(images)
    rows = [_strip(images[i : i + ncols]) for i in range(0, n, ncols)]
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 1), (0, width - r.shape[1]), (0, 0)), constant_values=128) for r in rows]
    return np.concatenate(rows, axis=0)


def image_grid(images: torch.Tensor, ncols: int, scale: int = 2) -> Image.Image:
    """Images (n, C, H, W) uint8 in rows of ``ncols``."""
    return _to_image(image_grid_array(images, ncols), scale)


def _strip(images: torch.Tensor) -> np.ndarray:
    """Images side by side with a one-pixel grey border, as an (H, W, C) array."""
    arr = images.permute(0, 2, 3, 1).cpu().numpy()
    padded = np.pad(arr, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=128)
    return np.concatenate(list(padded), axis=1)


def to_pil(image: torch.Tensor) -> Image.Image:
    """One uint8 image (C, H, W) as a PIL image (grey or RGB), at its own size."""
    return _to_image(image.permute(1, 2, 0).cpu().numpy(), 1)


def _to_image(arr: np.ndarray, scale: int) -> Image.Image:
    mode = "L" if arr.shape[2] == 1 else "RGB"
    img = Image.fromarray(arr[..., 0] if mode == "L" else arr, mode)
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST)


def save_png(image: Image.Image, path: str | os.PathLike) -> None:
    """Save a PIL image as PNG, atomically."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    atomic_write(path, buf.getvalue())


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_figure(fig, path: str | os.PathLike) -> None:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    _plt().close(fig)
    atomic_write(path, buf.getvalue())


def save_score_plot(tasks: list[dict], n_way: int, path: str | os.PathLike) -> None:
    """Mode Score of every test task beside the same score of its real images (the ceiling)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(tasks) + 2), 3))
    x = np.arange(len(tasks))
    ax.bar(x - 0.2, [t.get("mode_score", 0) for t in tasks], 0.4, label="generated")
    ax.bar(x + 0.2, [t.get("real_mode_score", 0) for t in tasks], 0.4, label="real images")
    ax.axhline(n_way, color="grey", linestyle=":", linewidth=1, label=f"upper bound N = {n_way}")
    ax.set_xticks(x, [str(t["task"]) for t in tasks])
    ax.set_xlabel("test task")
    ax.set_ylabel("Mode Score (N-way)")
    ax.set_ylim(0, n_way * 1.3)
    ax.legend(fontsize=7, loc="upper center", ncol=3)
    _save_figure(fig, path)


def method_bars(methods: dict[str, dict], path: str | os.PathLike) -> None:
    """Mode Score and FID of every method (mean and 95% CI), with the real images' values."""
    plt = _plt()
    names = list(methods)
    fig, axes = plt.subplots(1, 2, figsize=(max(6, 1.2 * len(names) + 2), 3.2))
    for ax, (key, real_key, label) in zip(axes, (SCORES[0], SCORES[3]), strict=True):
        entries = [methods[m]["summary"][key] for m in names]
        errors = [e["ci95"] or 0 for e in entries]
        ax.bar(names, [e["mean"] for e in entries], yerr=errors, capsize=3, color="tab:blue")
        real = methods[names[0]]["summary"][real_key]["mean"]
        ax.axhline(real, color="tab:green", linestyle="--", linewidth=1, label="real images")
        ax.set_title(label, fontsize=9)
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
        ax.legend(fontsize=7)
    _save_figure(fig, path)


def steps_curves(methods: dict[str, dict], keys: tuple[str, ...], path: str | os.PathLike) -> None:
    """Scores (mean and 95% CI over tasks) against the adaptation steps, one line per method;
    ``methods[name][steps]`` is a result with a ``summary``."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.2), squeeze=False)
    labels = {k: label for k, _, label in SCORES}
    for ax, key in zip(axes[0], keys, strict=True):
        for name, budgets in methods.items():
            steps = [int(t) for t in budgets]
            entries = [budgets[t]["summary"][key] for t in budgets]
            errors = [e["ci95"] or 0 for e in entries]
            ax.errorbar(steps, [e["mean"] for e in entries], yerr=errors, capsize=3,
                        marker="o", label=name)  # fmt: skip
        ax.set_xscale("log")
        ticks = sorted({int(t) for budgets in methods.values() for t in budgets})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("adaptation steps")
        ax.set_title(labels.get(key, key), fontsize=9)
        ax.legend(fontsize=7)
    _save_figure(fig, path)


def save_curve(points: list[tuple[int, float]], label: str, path: str | os.PathLike) -> None:
    """One score against the step (a validation curve)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 3))
    ax.plot([p[0] for p in points], [p[1] for p in points], marker="o")
    ax.set_xlabel("outer step")
    ax.set_ylabel(label)
    _save_figure(fig, path)


def condition_bars(conditions: dict[str, dict], path: str | os.PathLike) -> None:
    """Few-shot classification accuracy of every condition (mean and 95% CI over tasks), with
    the accuracy on the K shots alone (the first condition) as a dashed line."""
    plt = _plt()
    names = list(conditions)
    entries = [conditions[n]["summary"]["accuracy"] for n in names]
    fig, ax = plt.subplots(figsize=(max(5, 0.8 * len(names) + 2), 3.4))
    errors = [e["ci95"] or 0 for e in entries]
    ax.bar(names, [e["mean"] for e in entries], yerr=errors, capsize=3, color="tab:blue")
    ax.axhline(entries[0]["mean"], color="tab:green", linestyle="--", linewidth=1, label=names[0])
    low = min(e["mean"] - (e["ci95"] or 0) for e in entries)
    ax.set_ylim(max(0.0, low - 0.05), 1.0)
    ax.set_ylabel("query accuracy")
    ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    ax.legend(fontsize=7)
    _save_figure(fig, path)


def side_by_side(grids: dict[str, Image.Image], gap: int = 8) -> Image.Image:
    """Labelled images in one row, each under its name (the methods' grids of one task)."""
    header = 14
    mode = "L" if all(g.mode == "L" for g in grids.values()) else "RGB"
    width = sum(g.width for g in grids.values()) + gap * (len(grids) - 1)
    height = header + max(g.height for g in grids.values())
    canvas = Image.new(mode, (width, height), "white")
    draw, x = ImageDraw.Draw(canvas), 0
    for name, grid in grids.items():
        draw.text((x + 2, 1), name, fill="black")
        canvas.paste(grid.convert(mode), (x, header))
        x += grid.width + gap
    return canvas


def save_loss_plot(histories: dict[str, list[dict[str, float]]], path: str | os.PathLike) -> None:
    """One panel per phase with its losses against the step."""
    plt = _plt()
    phases = {k: v for k, v in histories.items() if v}
    fig, axes = plt.subplots(1, len(phases), figsize=(4 * len(phases), 3), squeeze=False)
    for ax, (phase, history) in zip(axes[0], phases.items(), strict=True):
        for key in [k for k in history[0] if not k.startswith("validation")]:  # not losses
            ax.plot([h[key] for h in history], label=key, linewidth=0.8)
        ax.set_title(phase)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    _save_figure(fig, path)


SCORES = (
    ("mode_score", "real_mode_score", "Mode Score, N-way (eq. 3)"),
    ("inception_score", None, "Inception Score, N-way (eq. 2)"),
    ("fidelity", "real_fidelity", "class fidelity"),
    ("fid", "real_fid", "FID in M's features"),
    ("kid", None, "KID in M's features"),
    ("diversity", "real_diversity", "diversity within a class"),
    ("copy_ratio", None, "copy ratio (near 1: no copying)"),
    ("mode_score_split", "real_mode_score_split", "Mode Score, all test classes"),
    ("adapt_s", None, "adaptation seconds per task"),
)
"""The scores a summary shows: key, its real-image reference, label."""


def summary_rows(summary: dict[str, dict]) -> list[tuple[str, str, str]]:
    """(label, generated "mean ± ci95", real reference) for every score in ``summary``."""
    rows = []
    for key, real_key, label in SCORES:
        if key in summary:
            real = mean_ci_text(summary[real_key]) if real_key in summary else ""
            rows.append((label, mean_ci_text(summary[key]), real))
    return rows


def mean_ci_text(entry: dict | None) -> str:
    """``"mean ± ci95"`` of a summary entry (empty for a missing one)."""
    if not entry:
        return ""
    ci = entry.get("ci95")
    return f"{entry['mean']:.3g}" + (f" ± {ci:.2g}" if ci is not None else "")


def markdown_summary(summary: dict[str, dict]) -> list[str]:
    """The summary as a Markdown table (mean ± 95% confidence half-width over tasks)."""
    lines = ["| score | generated | real images |", "| --- | --- | --- |"]
    return lines + [f"| {a} | {b} | {c} |" for a, b, c in summary_rows(summary)]


def text_summary(summary: dict[str, dict]) -> list[str]:
    """The summary as aligned plain-text lines, for the terminal."""
    rows = [("score", "generated", "real images"), *summary_rows(summary)]
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, width, strict=True)) for r in rows]
