"""The ``mtgan`` command: the whole pipeline (``run``) or one phase at a time."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
import warnings
from pathlib import Path

import torch

from mtgan import __version__
from mtgan.distributed import leave
from mtgan.errors import MtganError


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"mtgan: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = _one_line_warning
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    try:
        _check_launcher(args.command)
        return args.func(args) or 0
    except MtganError as exc:
        if args.debug:
            raise
        print(f"mtgan: error: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print("mtgan: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a runtime failure, not a usage error
        if args.debug:
            raise
        print(f"mtgan: failed: {type(exc).__name__}: {exc} (rerun with --debug)", file=sys.stderr)
        return 1
    finally:
        leave()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mtgan", description="Meta Transfer GAN: few-shot image generation."
    )
    parser.add_argument("--version", action="version", version=f"mtgan {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    common = _common_options()

    p = sub.add_parser("run", parents=[common], help="all phases on a dataset, into a run folder")
    _new_run_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("pretrain", parents=[common], help="phase (a) into a new run folder")
    _new_run_options(p)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("meta-train", parents=[common], help="phase (b) in a run folder")
    p.add_argument(
        "--run",
        "--from",  # torchrun's own parser takes --run for its --run-path
        dest="run",
        required=True,
        help="run folder holding pretrain/model.safetensors",
    )
    p.add_argument("--overwrite", action="store_true", help="replace meta/model.safetensors")
    p.set_defaults(func=cmd_meta_train)

    p = sub.add_parser("adapt", parents=[common], help="phase (c): test tasks or your own images")
    p.add_argument("--run", required=True, help="run folder holding meta/model.safetensors")
    p.add_argument("--images", help="folder with one subfolder of K images per class")
    p.add_argument("--out", help="output folder for --images (default RUN/adapted/<name>)")
    p.add_argument("--overwrite", action="store_true", help="replace earlier adapted models")
    p.set_defaults(func=cmd_adapt)

    p = sub.add_parser(
        "config", parents=[common], help="print the resolved config (defaults, file, --set)"
    )
    p.set_defaults(func=cmd_config)

    p = sub.add_parser(
        "evaluate", parents=[common], help="phase (d): adapt to seeded test tasks and score"
    )
    p.add_argument("--from", dest="run", required=True, help="run folder")
    p.add_argument("--tasks", type=int, help="number of test tasks (default eval.tasks)")
    p.add_argument("--ways", type=int, help="N (default task.n_way)")
    p.add_argument("--shots", type=int, help="K (default task.k_shot)")
    p.add_argument(
        "--model",
        choices=["meta", "pretrain"],
        default="meta",
        help="meta: the meta-learned model (default); pretrain: fresh NM and CF on the frozen "
        "pretrained networks, no meta-learning",
    )
    p.add_argument("--out", help="output folder (default RUN/evaluations/<model>-<N>w<K>s-<T>t)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier evaluation")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "benchmark", parents=[common], help="methods and baselines on the same seeded test tasks"
    )
    p.add_argument(
        "--methods",
        default="mtgan,figr,finetune,frozen,scratch",
        help="comma-separated: mtgan, frozen, finetune, scratch, figr and the ablations "
        "mtgan-layer, mtgan-kernel, mtgan-eq5, mtgan-second-order, mtgan-eq12 (default: the "
        "method and the four baselines)",
    )
    p.add_argument("--tasks", type=int, help="number of test tasks (default eval.tasks)")
    p.add_argument("--budget", type=float, help="training seconds for every method")
    p.add_argument(
        "--out", help="results path stem (default results/<config name>): writes .json, .csv, .md"
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing results")
    p.add_argument(
        "--report", metavar="JSON", help="only rewrite the .md, .csv and plot of a results .json"
    )
    p.set_defaults(func=cmd_benchmark)

    p = sub.add_parser("data", help="list, inspect and download datasets")
    data = p.add_subparsers(dest="data_command", required=True)
    d = data.add_parser("list", help="the registered datasets")
    d.set_defaults(func=cmd_data_list, debug=False)
    d = data.add_parser("info", help="classes and images of a dataset")
    d.add_argument("name")
    d.add_argument("--root", help="folder holding the published files")
    d.add_argument("--split", help="one of the dataset's own splits")
    d.add_argument("--strict", action="store_true", help="refuse unreadable images")
    d.add_argument("--debug", action="store_true", help="tracebacks for errors")
    d.set_defaults(func=cmd_data_info)
    d = data.add_parser("download", help="download a dataset with public files")
    d.add_argument("name")
    d.add_argument("--root", required=True, help="folder to download into")
    d.add_argument("--debug", action="store_true", help="tracebacks for errors")
    d.set_defaults(func=cmd_data_download)

    p = sub.add_parser("sample", parents=[common], help="images from a checkpoint")
    p.add_argument("--checkpoint", required=True, help="a model.safetensors")
    p.add_argument("--per-class", type=int, default=10, help="images per class (default 10)")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.set_defaults(func=cmd_sample)
    return parser


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="YAML config file (see configs/)")
    common.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )
    common.add_argument("--quick", action="store_true", help="tiny budget, for checks")
    common.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default auto")
    common.add_argument("--seed", type=int, help="random seed")
    common.add_argument("--no-progress", action="store_true", help="no progress bars")
    common.add_argument(
        "--strict", action="store_true", help="refuse unreadable images instead of skipping them"
    )
    common.add_argument(
        "--on-nan",
        choices=["stop", "restart"],
        default="stop",
        help="when a loss or weight becomes NaN: stop (default), or restart from the last "
        "checkpoint with the learning rate halved",
    )
    common.add_argument("--debug", action="store_true", help="tracebacks for errors")
    return common


def _new_run_options(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group()
    where.add_argument("--out", help="run folder (default runs/<timestamp>)")
    where.add_argument("--resume", metavar="DIR", help="continue a stopped run where it stopped")
    p.add_argument("--overwrite", action="store_true", help="reuse a non-empty run folder")


def _overrides(args: argparse.Namespace) -> list[str]:
    extra = [f"device={args.device}"] if args.device else []
    extra += [f"seed={args.seed}"] if args.seed is not None else []
    extra += ["data.strict=true"] if args.strict else []
    return list(args.set) + extra


def _config(args: argparse.Namespace):
    from mtgan.config import load_config

    return load_config(args.config, _overrides(args), quick=args.quick)


def _check_launcher(command: str) -> None:
    from mtgan.distributed import launched

    if launched() and command not in ("pretrain", "meta-train"):
        raise MtganError(f"only pretrain and meta-train run under torchrun, not {command}")


def _new_run(args: argparse.Namespace):
    """A new run folder, or with ``--resume`` the stopped run to continue. Under torchrun rank 0
    creates the folder and the other processes open it."""
    from mtgan.distributed import init_from_env, is_main, launched, main_first
    from mtgan.phases.common import resolve_device
    from mtgan.pipeline import create_run, open_run, record

    if args.resume:
        if args.overwrite:
            raise MtganError("--resume continues a run; it cannot be combined with --overwrite")
        args.run = args.resume
        run = _existing_run(args)
        run.resume = True
        init_from_env(run.device)
        record(run, "resumed", {"command": sys.argv})
        return run
    if launched() and not args.out:
        raise MtganError("under torchrun give the run folder with --out")
    out = args.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    cfg = _config(args)
    init_from_env(resolve_device(cfg.device))
    with main_first():  # rank 0 creates the folder, the other processes open it
        if is_main():
            run = create_run(out, cfg, args.overwrite, progress=not args.no_progress)
        else:
            run = open_run(out, _overrides(args), progress=False)
    run.on_nan = args.on_nan
    return run


def _existing_run(args: argparse.Namespace):
    from mtgan.pipeline import open_run

    if args.config or args.quick:
        raise MtganError("a run folder keeps its own config.yaml; change keys with --set")
    run = open_run(args.run, _overrides(args), progress=not args.no_progress)
    run.on_nan = args.on_nan
    return run


def _refuse_existing(path: Path, overwrite: bool) -> None:
    """No command replaces an earlier result without ``--overwrite``."""
    if path.exists() and not overwrite:
        raise MtganError(f"{path} exists; pass --overwrite to replace it")


def cmd_config(args: argparse.Namespace) -> int:
    print(_config(args).to_yaml(), end="")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from mtgan.pipeline import run_all

    run = _new_run(args)
    start = time.perf_counter()
    metrics = run_all(run)
    print(f"run finished in {time.perf_counter() - start:.0f} s: {run.root}")
    _print_summary("", metrics)
    print(f"samples: {run.path('samples')}/task_*.png; report: {run.path('report.md')}")
    return 0


def _print_summary(title: str, metrics: dict) -> None:
    from mtgan.report import text_summary

    acc = metrics["evaluator"]["heldout_accuracy"]
    print(f"{title}over {len(metrics['tasks'])} test tasks (evaluator accuracy {acc:.1%}):")
    for line in text_summary(metrics["summary"]):
        print("  " + line)


def cmd_pretrain(args: argparse.Namespace) -> int:
    from mtgan.pipeline import run_pretrain

    run = _new_run(args)
    run_pretrain(run)
    _say(f"pretrained: {run.path('pretrain', 'model.safetensors')}")
    return 0


def cmd_meta_train(args: argparse.Namespace) -> int:
    from mtgan.distributed import init_from_env
    from mtgan.pipeline import run_meta_train

    run = _existing_run(args)
    _refuse_existing(run.path("meta", "model.safetensors"), args.overwrite)
    run.resume = not args.overwrite  # continue from meta/state.safetensors when present
    init_from_env(run.device)
    run_meta_train(run)
    _say(f"meta-trained: {run.path('meta', 'model.safetensors')}")
    return 0


def _say(line: str) -> None:
    """Print from the main process only (under torchrun the others stay quiet)."""
    from mtgan.distributed import is_main

    if is_main():
        print(line)


def cmd_adapt(args: argparse.Namespace) -> int:
    from mtgan.pipeline import adapt_to_folder, run_adapt

    run = _existing_run(args)
    if args.images is None:
        _refuse_existing(run.path("tasks"), args.overwrite)
        for task in run_adapt(run):
            k = task["task"]
            print(f"task {k}: {run.path('samples', f'task_{k}.png')}")
        return 0
    out = Path(args.out) if args.out else run.path("adapted", Path(args.images).name)
    _refuse_existing(out / "model.safetensors", args.overwrite)
    adapt_to_folder(run, args.images, out)
    print(f"adapted generator: {out / 'model.safetensors'}; samples: {out / 'samples.png'}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from mtgan.pipeline import load_phase_model, run_evaluate

    for name in ("tasks", "ways", "shots"):
        value = getattr(args, name)
        args.set += [] if value is None else [f"{_EVAL_KEYS[name]}={value}"]
    run = _existing_run(args)
    cfg = run.cfg
    name = f"{args.model}-{cfg.task.n_way}w{cfg.task.k_shot}s-{cfg.eval.tasks}t"
    out = Path(args.out) if args.out else run.path("evaluations", name)
    _refuse_existing(out / "metrics.json", args.overwrite)
    gan, _ = load_phase_model(run, args.model)
    if args.model == "pretrain":
        gan.reset_heads(cfg.task.n_way, cfg.model.head_init)
    metrics = run_evaluate(run, gan, out)
    _print_summary(f"{name} ", metrics)
    print(f"metrics: {out / 'metrics.json'}; plot: {out / 'scores.png'}")
    return 0


_EVAL_KEYS = {"tasks": "eval.tasks", "ways": "task.n_way", "shots": "task.k_shot"}


def _results_file(path: str) -> Path:
    """A benchmark's results .json, checked before anything is rewritten."""
    import json

    file = Path(path)
    try:
        report = json.loads(file.read_text())
        report["methods"], report["command"]
    except (OSError, ValueError, KeyError, TypeError):
        raise MtganError(f"{file} is not a results .json written by mtgan benchmark") from None
    return file


def cmd_benchmark(args: argparse.Namespace) -> int:
    from mtgan.benchmark import parse_methods, rewrite_reports, run_benchmark
    from mtgan.pipeline import Run
    from mtgan.report import mean_ci_text

    if args.report:
        rewrite_reports(_results_file(args.report))
        print(f"rewrote {Path(args.report).with_suffix('.md')} (.csv, _scores.png)")
        return 0
    methods = parse_methods(args.methods)
    if args.budget is not None and not 0 < args.budget < float("inf"):
        raise MtganError(f"--budget must be a positive number of seconds, got {args.budget}")
    args.set += [] if args.tasks is None else [f"eval.tasks={args.tasks}"]
    cfg = _config(args)
    name = Path(args.config).stem if args.config else cfg.data.name
    out = Path(args.out) if args.out else Path("results") / name
    if out.with_suffix(".json").exists() and not args.overwrite:
        raise MtganError(f"{out.with_suffix('.json')} exists; pass --overwrite or another --out")
    run = Run(out.parent, cfg, progress=not args.no_progress)
    command = "mtgan " + shlex.join(args.argv)

    def show(method: str, result: dict) -> None:
        ms, fid = result["summary"]["mode_score"], result["summary"]["fid"]
        print(f"{method:20s} Mode Score {mean_ci_text(ms):16s} FID {mean_ci_text(fid)}", flush=True)

    run_benchmark(run, methods, out, command, args.budget, show)
    print(f"results: {out.with_suffix('.md')} (.json, .csv, _scores.png, _samples.png)")
    return 0


def cmd_data_list(args: argparse.Namespace) -> int:
    from mtgan.data import DATASETS

    for name, info in DATASETS.items():
        splits = "/".join(theirs for _, theirs in info.splits) or "split by classes"
        print(f"{name:15s} {info.description} [{splits}]")
    return 0


def cmd_data_info(args: argparse.Namespace) -> int:
    from mtgan.data import load

    ds = load(args.name, args.root, args.split, strict=args.strict)
    counts = [len(ds.images_of(c)) for c in ds.classes]
    shape = tuple(ds.images_of(ds.classes[0]).shape[1:])
    print(
        f"{args.name}{' ' + args.split if args.split else ''}: {len(ds.classes)} classes, "
        f"{len(ds)} images of shape {shape}, {min(counts)} to {max(counts)} per class"
    )
    print("classes: " + ", ".join(ds.classes[:10]) + (", ..." if len(ds.classes) > 10 else ""))
    return 0


def cmd_data_download(args: argparse.Namespace) -> int:
    from mtgan.data.download import download

    for path in download(args.name, args.root):
        print(path)
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from mtgan.checkpoint import load_gan
    from mtgan.data.base import to_uint8
    from mtgan.phases.adapt import sample
    from mtgan.phases.common import resolve_device
    from mtgan.report import image_grid, save_png

    if args.per_class < 1:
        raise MtganError(f"--per-class must be at least 1, got {args.per_class}")
    gan, _ = load_gan(args.checkpoint)
    device = resolve_device(args.device or "auto")
    rng = torch.Generator().manual_seed(args.seed or 0)
    images, _ = sample(gan.to(device), args.per_class, rng, device)
    save_png(image_grid(to_uint8(images.cpu()), ncols=args.per_class), args.out)
    print(f"wrote {args.out}: {gan.n_classes} classes x {args.per_class}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
