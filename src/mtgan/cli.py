"""The ``mtgan`` command: the whole pipeline (``run``) or one phase at a time."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
import warnings
from pathlib import Path

from mtgan import __version__
from mtgan.config import load_config
from mtgan.data import DATASETS, load
from mtgan.data.download import download
from mtgan.distributed import init_from_env, is_main, launched, leave
from mtgan.errors import MtganError
from mtgan.methods import METHODS, parse_methods
from mtgan.report import mean_ci_text, text_summary
from mtgan.runs.benchmark import run_benchmark, run_steps_benchmark
from mtgan.runs.drivers import run_meta_train, run_pretrain
from mtgan.runs.fewshot import run_fewshot
from mtgan.runs.folder import Run, new_run, open_run, record, remove_leftovers
from mtgan.runs.outputs import check_out
from mtgan.runs.pipeline import (
    adapt_tasks,
    adapt_to_folder,
    augment_folder,
    fit,
    run_all,
    run_evaluate,
    sample_checkpoint,
)
from mtgan.runs.results import compare_results, results_file, rewrite_reports


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
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    new_run = ("config", "set", "quick", "device", "seed", "no_progress", "strict", "on_nan")
    in_run = ("set", "device", "no_progress", "strict", "on_nan")

    p = _command(sub, "run", "all phases on a dataset, into a new run folder", cmd_run, new_run)
    _new_run_options(p)
    p = _command(sub, "pretrain", "phase (a) into a new run folder", cmd_pretrain, new_run)
    _new_run_options(p)

    p = _command(sub, "meta-train", "phase (b) in a run folder", cmd_meta_train, in_run)
    _run_option(p, "holding pretrain/model.safetensors")
    p.add_argument("--overwrite", action="store_true", help="replace meta-train/model.safetensors")

    p = _command(
        sub, "adapt", "phase (c): the run's test tasks, or your own images with --images",
        cmd_adapt, (*in_run, "seed"),
    )  # fmt: skip
    _run_option(p, "holding meta-train/model.safetensors")
    p.add_argument("--images", help="folder with one subfolder of K images per class")
    p.add_argument(
        "--per-class",
        type=int,
        help="images to generate per class (default eval.samples_per_class)",
    )
    p.add_argument("--out", help="output folder for --images (default RUN/adapted/<name>)")
    p.add_argument("--overwrite", action="store_true", help="replace earlier adapted models")

    p = _command(
        sub, "config", "print the resolved config (defaults, file, --set)", cmd_config,
        ("config", "set", "quick", "device", "seed"),
    )  # fmt: skip

    p = _command(
        sub, "evaluate", "phase (d): adapt a method to seeded test tasks and score it",
        cmd_evaluate, in_run,
    )  # fmt: skip
    _run_option(p, "holding the finished phases")
    p.add_argument("--tasks", type=int, help="number of test tasks (default eval.tasks)")
    p.add_argument("--ways", type=int, help="N (default task.n_way)")
    p.add_argument("--shots", type=int, help="K (default task.k_shot)")
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--method",
        choices=list(METHODS),
        default="mtgan",
        metavar="NAME",
        help="a registered method: mtgan (default, the run's meta-learned model), frozen (fresh "
        "NM and CF on the run's pretrained networks), finetune, finetune-augmented (from the "
        "pretrained networks), scratch, figr (trained here); the ablations of mtgan need a "
        "meta-training of their own (mtgan benchmark)",
    )
    which.add_argument(
        "--model",
        choices=list(MODEL_ALIASES),
        help="the older spelling: meta (= --method mtgan), pretrain (= --method frozen)",
    )
    p.add_argument("--out", help="output folder (default RUN/evaluations/<method>-<N>w<K>s-<T>t)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier evaluation")

    p = _command(
        sub, "benchmark", "methods and baselines on the same seeded test tasks", cmd_benchmark,
        ("config", "set", "quick", "device", "seed", "no_progress", "strict"),
    )  # fmt: skip
    p.add_argument(
        "--methods",
        default="mtgan,figr,finetune,frozen,scratch",
        help="comma-separated registered methods: " + ", ".join(METHODS) + " (default: the "
        "method and the four baselines)",
    )
    p.add_argument("--tasks", type=int, help="number of test tasks (default eval.tasks)")
    p.add_argument("--budget", type=float, help="training seconds for every method")
    p.add_argument(
        "--adapt-steps",
        metavar="T[,T...]",
        help="adapt every method with each of these step counts (e.g. 25,50,100,300) and write "
        "quality against steps to results/<config name>-steps.{json,md,png}",
    )
    p.add_argument(
        "--split",
        choices=["test", "validation"],
        default="test",
        help="whose classes the tasks come from: test (default) or validation, to choose "
        "settings on (data.validation_classes holds training classes out where a dataset has none)",
    )
    p.add_argument(
        "--reuse-pretraining",
        action="store_true",
        help="take the pretrained GAN from the cache folder when an earlier benchmark made it "
        "with the same data and settings (else pretrain and keep it there)",
    )
    p.add_argument(
        "--out", help="results path stem (default results/<config name>): writes .json, .csv, .md"
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing results")
    p.add_argument(
        "--report", metavar="JSON", help="only rewrite the tables and plots of a results .json"
    )
    p.add_argument(
        "--compare",
        nargs=2,
        metavar=("BEFORE", "AFTER"),
        help="only compare two results .json of the same tasks (AFTER - BEFORE, task by task)",
    )

    p = _command(
        sub, "fewshot", "few-shot classification with and without generated images",
        cmd_fewshot, ("config", "set", "quick", "device", "seed", "no_progress", "strict"),
    )  # fmt: skip
    p.add_argument(
        "--methods",
        default="mtgan,frozen,finetune-augmented,figr",
        help="comma-separated registered methods whose images augment the K shots "
        "(default: mtgan,frozen,finetune-augmented,figr)",
    )
    p.add_argument("--tasks", type=int, help="number of test tasks (default eval.tasks)")
    p.add_argument(
        "--generated",
        metavar="M[,M...]",
        help="candidates for the generated (and copied) images per class, chosen on the "
        "validation classes (default fewshot.generated); one value needs no validation classes",
    )
    p.add_argument("--out", help="results path stem (default results/fewshot-<config name>)")
    p.add_argument("--overwrite", action="store_true", help="replace existing results")

    p = sub.add_parser("data", help="list, inspect and download datasets", description="Datasets.")
    data = p.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    _command(data, "list", "the registered datasets and their splits", cmd_data_list, ())
    d = _command(data, "info", "classes and images of a dataset", cmd_data_info, ("strict",))
    d.add_argument("name")
    d.add_argument("--root", help="folder holding the published files (or your own copy)")
    d.add_argument("--split", help="one of the dataset's own files (see mtgan data list)")
    d = _command(data, "download", "download a dataset with public files", cmd_data_download, ())
    d.add_argument("name")
    d.add_argument("--root", required=True, help="folder to download into")

    p = _command(
        sub, "augment", "a training set from K shots: generated images per class, as folders",
        cmd_augment, (*in_run, "seed"),
    )  # fmt: skip
    _run_option(p, "holding meta-train/model.safetensors")
    p.add_argument(
        "--images", required=True, help="folder with one subfolder of K images per class"
    )
    p.add_argument("--per-class", type=int, required=True, help="generated images per class")
    p.add_argument("--out", required=True, help="the dataset folder to write: OUT/<class>/*.png")
    p.add_argument(
        "--with-support", action="store_true", help="copy the K original images in as well"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an OUT that mtgan wrote")

    p = _command(
        sub, "serve", "a local web page to adapt a run to your images and browse them",
        cmd_serve, ("set", "device"),
    )  # fmt: skip
    _run_option(p, "holding meta-train/model.safetensors")
    p.add_argument("--port", type=int, default=8000, help="default 8000")
    p.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (this machine only)")

    p = _command(sub, "sample", "images from a model checkpoint", cmd_sample, ("device", "seed"))
    p.add_argument("--checkpoint", required=True, help="a model.safetensors")
    p.add_argument("--per-class", type=int, default=10, help="images per class (default 10)")
    p.add_argument(
        "--out",
        required=True,
        help="a folder (one PNG per image under <class>/, and grid.png), a .png (the labelled "
        "grid) or a .npz (images uint8 (classes, per_class, C, H, W) and classes)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return parser


OPTIONS = {
    "config": (("--config",), {"help": "YAML config file (see configs/)"}),
    "set": (
        ("--set",),
        {
            "action": "append",
            "default": [],
            "metavar": "KEY=VALUE",
            "help": "override a config key",
        },
    ),
    "quick": (("--quick",), {"action": "store_true", "help": "tiny budget, for checks"}),
    "device": (("--device",), {"choices": ["auto", "cpu", "cuda"], "help": "default auto"}),
    "seed": (("--seed",), {"type": int, "help": "random seed"}),
    "no_progress": (("--no-progress",), {"action": "store_true", "help": "no progress output"}),
    "strict": (
        ("--strict",),
        {"action": "store_true", "help": "refuse unreadable images instead of skipping them"},
    ),
    "on_nan": (
        ("--on-nan",),
        {
            "choices": ["stop", "restart"],
            "default": "stop",
            "help": "when a loss or weight becomes NaN: stop (default), or restart from the last "
            "checkpoint with the learning rate halved",
        },
    ),
}
"""The options that several commands share; each command lists the ones it uses."""


def _command(sub, name: str, what: str, func, options: tuple[str, ...]):
    """A subcommand with its one-line description and its own shared options."""
    p = sub.add_parser(name, help=what, description=what[0].upper() + what[1:] + ".")
    for key in options:
        flags, spec = OPTIONS[key]
        p.add_argument(*flags, **spec)
    p.add_argument("--debug", action="store_true", help="tracebacks for errors")
    p.set_defaults(func=func)
    return p


def _new_run_options(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group()
    where.add_argument("--out", help="run folder (default runs/<timestamp>)")
    where.add_argument("--resume", metavar="DIR", help="continue a stopped run where it stopped")
    p.add_argument("--overwrite", action="store_true", help="reuse a non-empty run folder")


def _run_option(p: argparse.ArgumentParser, holding: str) -> None:
    p.add_argument(
        "--run",
        "--from",  # torchrun's own parser takes --run for its --run-path
        dest="run",
        required=True,
        help=f"run folder {holding} (--from is the same)",
    )


def _overrides(args: argparse.Namespace) -> list[str]:
    device, seed = getattr(args, "device", None), getattr(args, "seed", None)
    extra = [f"device={device}"] if device else []
    extra += [f"seed={seed}"] if seed is not None else []
    extra += ["data.strict=true"] if getattr(args, "strict", False) else []
    return list(getattr(args, "set", [])) + extra


def _config(args: argparse.Namespace):
    return load_config(args.config, _overrides(args), quick=args.quick)


def _check_launcher(command: str) -> None:
    if launched() and command not in ("pretrain", "meta-train"):
        raise MtganError(f"only pretrain and meta-train run under torchrun, not {command}")


def _new_run(args: argparse.Namespace) -> Run:
    """A new run folder, or with ``--resume`` the stopped run to continue."""
    if args.resume:
        if args.overwrite:
            raise MtganError("--resume continues a run; it cannot be combined with --overwrite")
        if args.config or args.quick:
            raise MtganError("a run folder keeps its own config.yaml; change keys with --set")
        args.run = args.resume
        run = _existing_run(args)
        run.resume = True
        remove_leftovers(run)
        init_from_env(run.device)
        record(run, "resumed", {"command": sys.argv})
        return run
    if launched() and not args.out:
        raise MtganError("under torchrun give the run folder with --out")
    out = args.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    run = new_run(out, _config(args), _overrides(args), args.overwrite, not args.no_progress)
    run.on_nan = args.on_nan
    return run


def _existing_run(args: argparse.Namespace) -> Run:
    run = open_run(args.run, _overrides(args), progress=not getattr(args, "no_progress", False))
    run.on_nan = getattr(args, "on_nan", "stop")
    return run


def _refuse_existing(path: Path, overwrite: bool) -> None:
    """No command replaces an earlier result without ``--overwrite``."""
    if path.exists() and not overwrite:
        raise MtganError(f"{path} exists; pass --overwrite to replace it")


def cmd_config(args: argparse.Namespace) -> int:
    print(_config(args).to_yaml(), end="")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    run = _new_run(args)
    start = time.perf_counter()
    metrics = run_all(run)
    print(f"run finished in {time.perf_counter() - start:.0f} s: {run.root}")
    _print_summary("", metrics)
    print(f"samples: {run.path('samples')}/task_*.png; report: {run.path('report.md')}")
    return 0


def _print_summary(title: str, metrics: dict) -> None:
    acc = metrics["evaluator"]["heldout_accuracy"]
    print(f"{title}over {len(metrics['tasks'])} test tasks (evaluator accuracy {acc:.1%}):")
    for line in text_summary(metrics["summary"]):
        print("  " + line)


def cmd_pretrain(args: argparse.Namespace) -> int:
    run = _new_run(args)
    run_pretrain(run)
    _say(f"pretrained: {run.path('pretrain', 'model.safetensors')}")
    return 0


def cmd_meta_train(args: argparse.Namespace) -> int:
    run = _existing_run(args)
    _refuse_existing(run.path("meta-train", "model.safetensors"), args.overwrite)
    run.resume = not args.overwrite  # continue from meta-train/state.safetensors when present
    remove_leftovers(run)
    init_from_env(run.device)
    run_meta_train(run)
    _say(f"meta-trained: {run.path('meta-train', 'model.safetensors')}")
    return 0


def _say(line: str) -> None:
    """Print from the main process only (under torchrun the others stay quiet)."""
    if is_main():
        print(line)


def cmd_adapt(args: argparse.Namespace) -> int:
    run = _existing_run(args)
    if args.images is None:
        _refuse_existing(run.path("tasks"), args.overwrite)
        for task in adapt_tasks(run, fit(run, "mtgan")):
            k = task["task"]
            print(f"task {k}: {run.path('samples', f'task_{k}.png')}")
        return 0
    if args.per_class is not None and args.per_class < 1:
        raise MtganError(f"--per-class must be at least 1, got {args.per_class}")
    out = Path(args.out) if args.out else run.path("adapted", Path(args.images).name)
    if out.is_file():
        raise MtganError(f"--out {out} is a file; give a folder for the adapted model and images")
    _refuse_existing(out / "model.safetensors", args.overwrite)
    info = adapt_to_folder(run, args.images, out, args.per_class)
    print(
        f"adapted in {info['adapt_s']:.1f} s to {len(info['classes'])} classes, in slot order: "
        + ", ".join(info["classes"])
    )
    print(f"model: {out / 'model.safetensors'}; samples: {out / 'samples.png'}")
    print(f"{info['per_class']} images per class: {out / 'images'}/<class>/, {out / 'images.npz'}")
    return 0


MODEL_ALIASES = {"meta": "mtgan", "pretrain": "frozen"}
"""``evaluate --model``, the older spelling of ``--method``."""

_EVAL_KEYS = {"tasks": "eval.tasks", "ways": "task.n_way", "shots": "task.k_shot"}


def cmd_evaluate(args: argparse.Namespace) -> int:
    for name in ("tasks", "ways", "shots"):
        value = getattr(args, name)
        args.set += [] if value is None else [f"{_EVAL_KEYS[name]}={value}"]
    run = _existing_run(args)
    method = MODEL_ALIASES[args.model] if args.model else args.method
    cfg = run.cfg
    name = f"{method}-{cfg.task.n_way}w{cfg.task.k_shot}s-{cfg.eval.tasks}t"
    out = Path(args.out) if args.out else run.path("evaluations", name)
    _refuse_existing(out / "metrics.json", args.overwrite)
    metrics = run_evaluate(run, fit(run, method), out)
    _print_summary(f"{name} ", metrics)
    print(f"metrics: {out / 'metrics.json'}; plot: {out / 'scores.png'}")
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    if args.compare:
        before, after = (json.loads(results_file(p).read_text()) for p in args.compare)
        print("\n".join(compare_results(before, after)))
        return 0
    if args.report:
        print(f"rewrote {rewrite_reports(results_file(args.report))}")
        return 0
    methods = parse_methods(args.methods)
    args.set += [] if args.tasks is None else [f"eval.tasks={args.tasks}"]
    steps = None if args.adapt_steps is None else _numbers(args.adapt_steps, "--adapt-steps")
    if steps is not None and args.budget is not None:
        raise MtganError("--adapt-steps and --budget cannot be combined")
    out, run = _results_run(args, "", "-steps" if steps else "")

    def show(method: str, result: dict, steps: int | None = None) -> None:
        ms, fid = result["summary"]["mode_score"], result["summary"]["fid"]
        label = method if steps is None else f"{method} ({steps} steps)"
        print(f"{label:28s} Mode Score {mean_ci_text(ms):16s} FID {mean_ci_text(fid)}", flush=True)

    command = "mtgan " + shlex.join(args.argv)
    if steps is not None:
        reuse = args.reuse_pretraining
        run_steps_benchmark(run, methods, steps, out, command, show, args.split, reuse)
        print(f"results: {out.with_suffix('.md')} (.json, .png)")
        return 0
    run_benchmark(run, methods, out, command, args.budget, show, args.split, args.reuse_pretraining)
    print(f"results: {out.with_suffix('.md')} (.json, .csv, _scores.png, _samples.png)")
    return 0


def _results_run(args: argparse.Namespace, prefix: str, suffix: str) -> tuple[Path, Run]:
    """A benchmark's results path stem (``--out``, or results/<prefix><config name><suffix>),
    refused when its .json exists without ``--overwrite``, and the run its phases use."""
    cfg = _config(args)
    name = prefix + (Path(args.config).stem if args.config else cfg.data.name) + suffix
    out = Path(args.out) if args.out else Path("results") / name
    if out.with_suffix(".json").exists() and not args.overwrite:
        raise MtganError(f"{out.with_suffix('.json')} exists; pass --overwrite or another --out")
    return out, Run(out.parent, cfg, progress=not args.no_progress)


def _numbers(text: str, option: str) -> list[int]:
    """Comma-separated positive whole numbers."""
    try:
        numbers = [int(part) for part in text.split(",")]
    except ValueError:
        numbers = []
    if not numbers or min(numbers) < 1:
        raise MtganError(
            f"{option} takes whole numbers of at least 1, like 25,50,100; got {text!r}"
        )
    return numbers


def cmd_fewshot(args: argparse.Namespace) -> int:
    methods = parse_methods(args.methods)
    args.set += [] if args.tasks is None else [f"eval.tasks={args.tasks}"]
    if args.generated is not None:
        args.set.append(f"fewshot.generated=[{args.generated}]")
    out, run = _results_run(args, "fewshot-", "")

    def show(condition: str, result: dict) -> None:
        accuracy = mean_ci_text(result["summary"]["accuracy"])
        print(f"{condition:28s} M {result['per_class']:<4d} accuracy {accuracy}", flush=True)

    run_fewshot(run, methods, out, "mtgan " + shlex.join(args.argv), show)
    print(f"results: {out.with_suffix('.md')} (.json, .png)")
    return 0


def cmd_data_list(args: argparse.Namespace) -> int:
    for name, info in DATASETS.items():
        print(f"{name:15s} {info.description} [{info.split_text()}]")
    return 0


def cmd_data_info(args: argparse.Namespace) -> int:
    info = DATASETS.get(args.name)
    ds = load(args.name, args.root, args.split, strict=args.strict)
    counts = [len(ds.images_of(c)) for c in ds.classes]
    shape = tuple(ds.images_of(ds.classes[0]).shape[1:])
    part = ""
    if info is not None and info.parts:
        split = args.split or info.parts[0]
        others = [p for p in info.parts if p != split]
        part = f", split {split}" + ("" if args.split else " (the default)")
        part += f"; --split {'/'.join(others)} for the other{'s' if len(others) > 1 else ''}"
    print(
        f"{args.name}{part}: {len(ds.classes)} classes, "
        f"{len(ds)} images of shape {shape}, {min(counts)} to {max(counts)} per class"
    )
    print("classes: " + ", ".join(ds.classes[:10]) + (", ..." if len(ds.classes) > 10 else ""))
    return 0


def cmd_data_download(args: argparse.Namespace) -> int:
    for path in download(args.name, args.root):
        print(path)
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    if args.per_class < 1:
        raise MtganError(f"--per-class must be at least 1, got {args.per_class}")
    out = check_out(args.out, args.overwrite)
    start = time.perf_counter()
    classes = sample_checkpoint(
        args.checkpoint, args.per_class, args.seed or 0, args.device or "auto", out
    )
    seconds = time.perf_counter() - start
    print(f"wrote {out}: {len(classes)} classes x {args.per_class} in {seconds:.1f} s")
    print("classes in slot order: " + ", ".join(classes))
    return 0


def cmd_augment(args: argparse.Namespace) -> int:
    if args.per_class < 1:
        raise MtganError(f"--per-class must be at least 1, got {args.per_class}")
    if Path(args.out).suffix.lower() in (".png", ".npz"):
        raise MtganError(f"--out {args.out}: give the folder of the dataset to write")
    out = check_out(args.out, args.overwrite)
    run = _existing_run(args)
    info = augment_folder(run, args.images, out, args.per_class, args.with_support)
    print(
        f"adapted in {info['adapt_s']:.1f} s to {len(info['classes'])} classes: "
        + ", ".join(info["classes"])
    )
    extra = " and the K originals" if args.with_support else ""
    print(f"wrote {out}/<class>/: {args.per_class} generated images per class{extra}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:  # the serve extra: a web server is not needed by the rest of the package
        import uvicorn

        from mtgan.serve.app import create_app
    except ImportError as exc:
        raise MtganError(
            f"mtgan serve needs the serve extra ({exc.name} is missing): pip install 'mtgan[serve]'"
        ) from None
    run = _existing_run(args)
    fit(run, "mtgan")  # refuse a run without a meta-trained model before listening
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        warnings.warn(
            f"listening on {args.host}: anyone who reaches this machine can use the page",
            stacklevel=1,
        )
    print(f"mtgan serve: http://{args.host}:{args.port}/ (Ctrl-C stops it)", flush=True)
    app = create_app(run, host=args.host)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
