"""The benchmark's results files: JSON (every score of every task), CSV and Markdown (mean and
95% CI over tasks, paired differences from the first method) and the scores plot."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
from pathlib import Path
from typing import Any

import torch

from mtgan.errors import MtganError
from mtgan.files import atomic_write
from mtgan.metrics import mean_confidence_interval
from mtgan.report import mean_ci_text, method_bars, save_png, steps_curves


def machine(device: torch.device) -> str:
    """The hardware and software the figures come from, in words."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    where = f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    if device.type == "cuda":
        where = f"{torch.cuda.get_device_name(device)}; {where}"
    return f"{where}; torch {torch.__version__}, {platform.system()}"


REPORTED = {
    "mode_score": "Mode Score",
    "inception_score": "IS",
    "fid": "FID",
    "kid": "KID",
    "fidelity": "fidelity",
    "diversity": "diversity",
    "copy_ratio": "copy ratio",
    "adapt_s": "adapt s/task",
}
"""The columns of the results table and CSV (mean and 95% CI over tasks)."""


PAIRED = ("mode_score", "fid")
"""Scores compared task by task with the first method."""


def paired_differences(methods: dict[str, dict]) -> dict[str, dict[str, dict]]:
    """Per method, the mean and 95% CI over tasks of (its score - the first method's score).

    Every method meets the same tasks, so the per-task differences compare methods far more
    tightly than their separate confidence intervals do.
    """
    reference = next(iter(methods.values()))["tasks"]
    return {
        name: {key: paired(result["tasks"], reference, key) for key in PAIRED}
        for name, result in methods.items()
    }


def paired(after: list[dict], before: list[dict], key: str) -> dict[str, float | None]:
    """Mean and 95% CI half-width (None for a single task) of ``after[k][key] -
    before[k][key]`` over the same tasks k.

    Example:
        >>> paired([{"fid": 3.0}, {"fid": 5.0}], [{"fid": 1.0}, {"fid": 3.0}], "fid")
        {'mean': 2.0, 'ci95': 0.0}
    """
    diffs = [a[key] - b[key] for a, b in zip(after, before, strict=True)]
    mean, half = mean_confidence_interval(diffs)
    return {"mean": mean, "ci95": None if math.isnan(half) else half}


COMPARED = ("fid", "kid", "diversity", "mode_score")
"""Scores compared task by task between two results files."""


def compare_results(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """A Markdown table of ``after - before`` for every method of both results, task by task
    (mean ± 95% CI of the per-task differences), with each side's FID and diversity as ratios
    to the real images' (a setting such as ``pretrain.ema`` compared on the same tasks)."""
    if before["tasks"] != after["tasks"]:
        raise MtganError("the two results files hold different tasks: nothing to pair")
    lines = [
        "| method | FID / real (before → after) | diversity / real | "
        + " | ".join(f"Δ {REPORTED[k]}" for k in COMPARED)
        + " |",
        "|" + " --- |" * (3 + len(COMPARED)),
    ]
    sides = [_results_by_row(before), _results_by_row(after)]
    sides = [_stages(r) | side for r, side in zip((before, after), sides, strict=True)]
    for method in [m for m in sides[0] if m in sides[1]]:
        rows = sides[0][method], sides[1][method]
        ratios = [" → ".join(f"{_ratio(r, key):.3g}" for r in rows) for key in ("fid", "diversity")]
        cells = [mean_ci_text(paired(rows[1], rows[0], key)) for key in COMPARED]
        lines.append(f"| {method} | " + " | ".join(ratios + cells) + " |")
    return lines


def _stages(report: dict[str, Any]) -> dict[str, list[dict]]:
    """Per-task scores of the pretrained G on training classes and of those classes re-learned
    from their shots, where the report has them."""
    stage = report.get("pretrained", {})
    rows = {"pretrained G": stage.get("tasks")}
    rows["training classes re-learned"] = stage.get("relearned", {}).get("tasks")
    return {name: tasks for name, tasks in rows.items() if tasks is not None}


def _results_by_row(report: dict[str, Any]) -> dict[str, list[dict]]:
    """Per-task scores by method, or by "method at T steps" in a steps benchmark's results."""
    if "steps" not in report:
        return {name: result["tasks"] for name, result in report["methods"].items()}
    return {
        f"{name} at {t} steps": result["tasks"]
        for name, budgets in report["methods"].items()
        for t, result in budgets.items()
    }


def _ratio(tasks: list[dict], key: str) -> float:
    """The mean score over the mean real-image score (FID between support and query images)."""
    return sum(t[key] for t in tasks) / sum(t[f"real_{key}"] for t in tasks)


def provenance(report: dict[str, Any]) -> str:
    """Where a results file's figures come from: the command, the machine, the commit."""
    commit = f", at commit {report['git_commit'][:10]}" if report.get("git_commit") else ""
    return f"`{report['command']}` on {report['machine']}{commit}"


def results_file(path: str | Path) -> Path:
    """A benchmark's results .json, checked before anything is rewritten from it."""
    file = Path(path)
    try:
        report = json.loads(file.read_text())
        report["methods"], report["command"]
    except (OSError, ValueError, KeyError, TypeError):
        raise MtganError(f"{file} is not a results .json written by mtgan benchmark") from None
    return file


def rewrite_reports(path: Path) -> str:
    """The .csv, .md and scores plot again from a benchmark's .json (the sample grid is kept);
    a steps benchmark's (``default_steps`` in it) .md and curves. Returns what it rewrote."""
    report = json.loads(path.read_text())
    out = path.with_suffix("")
    if "default_steps" in report:
        write_steps_results(report, out)
        return f"{out}.md (.png)"
    write_results(report, out)
    return f"{out}.md (.csv, _scores.png)"


def write_results(report: dict[str, Any], out: Path, grids=None) -> None:
    """``out``'s .json, .csv, .md and scores plot from ``report``, and ``grids`` (the PIL image
    of every method's samples beside the support images) when given."""
    report["paired"] = paired_differences(report["methods"])
    atomic_write(out.with_suffix(".json"), json.dumps(report, indent=2))
    atomic_write(out.with_suffix(".csv"), _csv(report))
    atomic_write(out.with_suffix(".md"), _markdown(report, out.name))
    method_bars(report["methods"], out.parent / f"{out.name}_scores.png")
    if grids is not None:
        save_png(grids, out.parent / f"{out.name}_samples.png")


STEPS_SCORES = {"fid": "FID", "kid": "KID", "mode_score": "Mode Score", "diversity": "diversity"}
"""The columns of the steps benchmark's table; FID and KID are also compared task by task."""


def write_steps_results(report: dict[str, Any], out: Path, grids=None) -> None:
    """The steps benchmark's ``out``.json, .md and .png (FID and KID against steps), and
    ``grids`` (the PIL image of every method's samples at every budget) when given; the .md
    links the grid only when there is one (files written before the grid was drawn have none)."""
    samples = out.parent / f"{out.name}_samples.png"
    if grids is not None:
        save_png(grids, samples)
    atomic_write(out.with_suffix(".json"), json.dumps(report, indent=2))
    atomic_write(out.with_suffix(".md"), _steps_markdown(report, out.name, samples.exists()))
    steps_curves(report["methods"], ("fid", "kid"), out.with_suffix(".png"))


def _paired(after: list[dict], before: list[dict], key: str) -> str:
    return mean_ci_text(paired(after, before, key))


def _steps_markdown(report: dict[str, Any], name: str, with_samples: bool) -> str:
    methods, steps = report["methods"], [str(t) for t in report["steps"]]
    first, most = next(iter(methods)), steps[-1]
    lines = [
        f"# Quality against adaptation steps `{name}`",
        "",
        provenance(report)
        + f". {len(report['tasks'])} {report['split']} tasks, each method adapted to the same "
        f"tasks with each number of steps; mean ± 95% CI over tasks (lower FID and KID are "
        f"better); the config's default is {report['default_steps']} steps.",
        "",
        "| method | steps | " + " | ".join(STEPS_SCORES.values()) + " | adapt s/task |",
        "|" + " --- |" * (3 + len(STEPS_SCORES)),
    ]
    for method, budgets in methods.items():
        for t, result in budgets.items():
            cells = [mean_ci_text(result["summary"].get(k)) for k in [*STEPS_SCORES, "adapt_s"]]
            lines.append(f"| {method} | {t} | " + " | ".join(cells) + " |")
    others = [m for m in methods if m != first]
    lines += [
        "",
        f"`{first}` against each method at the same steps ({first} - method, per-task "
        f"differences; negative favours {first}):",
        "",
        "| method | steps | Δ FID | Δ KID |",
        "| --- | --- | --- | --- |",
    ]
    for method in others:
        for t in [t for t in steps if t in methods[method] and t in methods[first]]:
            mine, theirs = methods[first][t]["tasks"], methods[method][t]["tasks"]
            lines.append(
                f"| {method} | {t} | {_paired(mine, theirs, 'fid')} | "
                f"{_paired(mine, theirs, 'kid')} |"
            )
    lines += [
        "",
        f"`{first}` at each number of steps against each method at {most} steps (fast "
        "adaptation: negative or a CI holding 0 means it reaches what the other needs "
        f"{most} steps for):",
        "",
        f"| method at {most} | {first} steps | Δ FID | Δ KID |",
        "| --- | --- | --- | --- |",
    ]
    for method in [m for m in others if most in methods[m]]:
        theirs = methods[method][most]["tasks"]
        for t in [t for t in steps if t in methods[first]]:
            mine = methods[first][t]["tasks"]
            lines.append(
                f"| {method} | {t} | {_paired(mine, theirs, 'fid')} | "
                f"{_paired(mine, theirs, 'kid')} |"
            )
    lines += _against_baseline(methods, steps, "frozen")
    lines += _against_default(methods, steps, str(report["default_steps"]))
    plots = [f"![FID and KID against steps]({name}.png)", ""]
    if with_samples:
        plots += ["The first task's support images, then each method's at each budget:", ""]
        plots += [f"![samples]({name}_samples.png)", ""]
    return "\n".join([*lines, "", *plots])


def _against_baseline(methods: dict[str, Any], steps: list[str], baseline: str) -> list[str]:
    """Every other method against ``baseline`` at the same steps and at the baseline's most
    steps (method - baseline, paired over tasks): a sweep's table; none without the baseline."""
    if baseline not in methods or len(methods) < 3:
        return []
    base, most = methods[baseline], max(methods[baseline], key=int)
    lines = [
        "",
        f"Each method against `{baseline}` (method - {baseline}, per-task differences; negative "
        f"favours the method): at the same steps, and at {baseline}'s {most} steps.",
        "",
        f"| method | steps | Δ FID, same steps | Δ KID, same steps | Δ FID vs {most} | "
        f"Δ KID vs {most} |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for method in [m for m in methods if m != baseline]:
        for t in [t for t in steps if t in methods[method] and t in base]:
            mine = methods[method][t]["tasks"]
            cells = [
                _paired(mine, theirs["tasks"], key)
                for theirs in (base[t], base[most])
                for key in ("fid", "kid")
            ]
            lines.append(f"| {method} | {t} | " + " | ".join(cells) + " |")
    return lines


def _against_default(methods: dict[str, Any], steps: list[str], default: str) -> list[str]:
    """Each method at every other number of steps against itself at the config's ``default``
    (paired over tasks): the table to choose ``adapt.steps`` by; none when the default was not
    among the budgets."""
    if default not in steps or len(steps) < 2:
        return []
    lines = [
        "",
        f"Each method against itself at the config's {default} steps (after - before, per-task "
        "differences; lower FID and KID are better):",
        "",
        "| method | steps | " + " | ".join(f"Δ {REPORTED[k]}" for k in COMPARED) + " |",
        "|" + " --- |" * (2 + len(COMPARED)),
    ]
    for method, budgets in methods.items():
        for t in [t for t in steps if t != default and t in budgets and default in budgets]:
            mine, base = budgets[t]["tasks"], budgets[default]["tasks"]
            cells = [_paired(mine, base, key) for key in COMPARED]
            lines.append(f"| {method} | {t} | " + " | ".join(cells) + " |")
    return lines


def _csv(report: dict[str, Any]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["method", "score", "mean", "ci95", "n"])
    for method, result in report["methods"].items():
        for key in REPORTED:
            entry = result["summary"].get(key)
            if entry:
                writer.writerow([method, key, entry["mean"], entry["ci95"], entry["n"]])
        for key, seconds in result["training_s"].items():
            writer.writerow([method, key, seconds, "", 1])
    return buf.getvalue()


def _markdown(report: dict[str, Any], name: str) -> str:
    methods = report["methods"]
    first = next(iter(methods.values()))["summary"]
    real = (
        f"Real images of the same tasks: Mode Score {mean_ci_text(first['real_mode_score'])}, "
        f"FID between support and query {mean_ci_text(first['real_fid'])}, "
        f"diversity {mean_ci_text(first['real_diversity'])}."
    )
    header = ["method", *REPORTED.values(), "training s"]
    stage = report.get("pretrained")
    if stage is not None:
        summary = stage["summary"]
        real += (
            f" The shared pretrained G ({stage['pretrain_steps']} steps) on "
            f"{summary['fid']['n']} tasks of training classes, before adaptation: FID "
            f"{summary['fid']['mean'] / summary['real_fid']['mean']:.2f} times the real images', "
            f"diversity {summary['diversity']['mean'] / summary['real_diversity']['mean']:.2f} "
            "times theirs."
        )
    if stage is not None and "relearned" in stage:
        again = stage["relearned"]["summary"]
        real += (
            " The same classes learned again from their K shots by adaptation (fresh NM and CF, "
            f"as for a new class): FID {again['fid']['mean'] / again['real_fid']['mean']:.2f} "
            f"times, diversity {again['diversity']['mean'] / again['real_diversity']['mean']:.2f}"
            " times."
        )
    lines = [
        f"# Benchmark `{name}`",
        "",
        provenance(report) + f". {len(report['tasks'])} test tasks; "
        f"mean ± 95% confidence half-width over tasks; evaluator M held-out accuracy "
        f"{report['evaluator']['heldout_accuracy']:.1%}."
        + (f" It ran {report['elapsed_s'] / 60:.0f} minutes." if "elapsed_s" in report else ""),
        "",
        real,
        "",
        "| " + " | ".join(header) + " |",
        "|" + " --- |" * len(header),
    ]
    for method, result in methods.items():
        cells = [mean_ci_text(result["summary"].get(k)) for k in REPORTED]
        lines.append(
            f"| {method} | " + " | ".join(cells) + f" | {sum(result['training_s'].values()):.0f} |"
        )
    reference = next(iter(methods))
    lines += [
        "",
        f"Difference from `{reference}` on the same tasks (method - {reference}, mean ± 95% CI of "
        "the per-task differences; higher Mode Score and lower FID are better):",
        "",
        "| method | Δ Mode Score | Δ FID |",
        "| --- | --- | --- |",
    ]
    for method, diffs in report["paired"].items():
        if method != reference:
            cells = " | ".join(mean_ci_text(diffs[k]) for k in PAIRED)
            lines.append(f"| {method} | {cells} |")
    lines += [
        "",
        f"![scores]({name}_scores.png)",
        "",
        "Test task 0: its support images, then each method's samples:",
        "",
        f"![samples]({name}_samples.png)",
        "",
    ]
    return "\n".join(lines)
