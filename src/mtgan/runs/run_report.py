"""A run folder's ``report.md``: splits, scores over the test tasks, phase seconds and the
sample grids."""

from __future__ import annotations

from typing import Any

from mtgan.report import markdown_summary, mean_ci_text
from mtgan.runs.folder import Run


def run_report(run: Run, metrics: dict[str, Any]) -> str:
    """The Markdown report of a finished run from its ``metrics.json`` content."""
    cfg = run.cfg
    splits = ", ".join(f"{k} {len(v.classes)} classes" for k, v in run.data().items())
    acc = metrics["evaluator"]["heldout_accuracy"]
    lines = [
        f"# mtgan run `{run.root.name}`",
        "",
        f"Dataset `{cfg.data.name}`: {splits}. Tasks: {cfg.task.n_way}-way {cfg.task.k_shot}-shot, "
        f"{cfg.eval.tasks} test tasks; SS granularity `{cfg.model.ss_granularity}`.",
        "",
        f"Scores over the test tasks (mean ± 95% CI); the evaluator M's held-out accuracy on the "
        f"test classes is {acc:.1%}.",
        "",
        *markdown_summary(metrics["summary"]),
        "",
        *_stage_lines(metrics.get("pretrained")),
        *_movement_lines(metrics.get("ss_movement")),
        *_rate_lines(metrics.get("learned_rates")),
        "| phase | seconds |",
        "| --- | --- |",
        *[f"| {k} | {v:.1f} |" for k, v in metrics["timings"].items()],
        "",
        "Pretrained generator, ten training classes: ![](samples/pretrain.png)",
        "",
    ]
    for task in metrics["tasks"]:
        k = task["task"]
        lines += [
            f"Test task {k}, classes {', '.join(task['classes'])} (support | generated):",
            "",
            f"![](samples/task_{k}.png)",
            "",
        ]
    return "\n".join(lines)


def _stage_lines(summary: dict[str, Any] | None) -> list[str]:
    """The pretrained G's own images of training classes against real ones, as ratios."""
    if summary is None:
        return []
    fid = summary["fid"]["mean"] / summary["real_fid"]["mean"]
    diversity = summary["diversity"]["mean"] / summary["real_diversity"]["mean"]
    return [
        f"The pretrained generator on {summary['fid']['n']} tasks of training classes, before "
        f"any adaptation: FID {fid:.2f} times the real images' (support vs query), diversity "
        f"{diversity:.2f} times theirs, Mode Score {mean_ci_text(summary['mode_score'])} "
        f"(real {mean_ci_text(summary['real_mode_score'])}).",
        "",
    ]


def _rate_lines(rates: dict[str, dict[str, float]] | None) -> list[str]:
    """Meta-SGD's learned learning-rate multipliers of NM and CF, part by part."""
    if not rates:
        return []
    return [
        "Learned learning-rate multipliers of NM and CF (`meta.learn_rates`; 1 is `adapt.lr` "
        "as it is):",
        "",
        "| part | geometric mean | least | most |",
        "| --- | --- | --- | --- |",
        *[f"| {n} | {r['mean']:.3g} | {r['min']:.3g} | {r['max']:.3g} |" for n, r in rates.items()],
        "",
    ]


def _movement_lines(movement: dict[str, dict[str, float]] | None) -> list[str]:
    """How far meta-training moved scale and shift, layer by layer."""
    if not movement:
        return []
    return [
        "Scale and shift after meta-training (mean over each layer's entries; identity is "
        "scale 1, shift 0):",
        "",
        "| layer | mean abs(scale - 1) | mean abs(shift) |",
        "| --- | --- | --- |",
        *[f"| {name} | {m['scale']:.4f} | {m['shift']:.4f} |" for name, m in movement.items()],
        "",
    ]
