"""Speed of every phase, as ratios measured in one run on one machine (issue #6).

    python benchmarks/speed.py [--quick] [--json] [--device auto|cpu|cuda] [--threads N] [--compile]

Prints a table, and with ``--json`` one JSON line after it. The figures:

- pretraining images/s against a minimal hand-written PyTorch loop of the same networks, batch
  and optimizer (the overhead of our abstractions);
- the model FLOP/s of pretraining against this machine's fp32 matmul peak, measured here;
- the adaptation wall time of one 5-way 10-shot task with the default config, and FIGR's for the
  same task;
- meta-training tasks/s: first- against second-order, the batched meta-batch of 8 against the
  loop over its tasks, and (on the CPU) 2 processes of 1 thread against 1 process;
- the peak memory of each phase (CPU: the growth of the resident set, in a fresh process);
- adaptation with the contiguous memory layout against channels-last, and with ``--compile``
  what ``torch.compile`` of G and D costs and gains.

Images are random (speed does not depend on them), so that nothing needs downloading.
``--quick`` (under a minute) times fewer steps and says per-task times are extrapolated.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import multiprocessing
import os
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from mtgan.config import Config, load_config, with_overrides
from mtgan.data.base import ClassDataset
from mtgan.data.episodes import EpisodeSampler
from mtgan.methods.figr import FigrFitted, build_figr
from mtgan.phases.adapt import adapt
from mtgan.phases.common import place, resolve_device, to_device
from mtgan.phases.meta_train import meta_step, meta_train
from mtgan.phases.pretrain import build_gan, pretrain
from mtgan.phases.step import GanStep, Update, trainable_params
from mtgan.runs.results import machine

CLASSES = 64


def synthetic_dataset(cfg: Config, per_class: int = 20) -> ClassDataset:
    """Random uint8 images of ``CLASSES`` classes at the config's size."""
    g = torch.Generator().manual_seed(0)
    shape = (per_class, cfg.data.channels, cfg.data.image_size, cfg.data.image_size)
    return ClassDataset(
        "random", {f"c{i}": torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
                   for i in range(CLASSES)}
    )  # fmt: skip


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device) -> float:
    """Seconds that ``fn()`` takes."""
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def best_of(reps: int, fn, device: torch.device) -> float:
    """The fastest of ``reps`` timings (the least disturbed by other jobs)."""
    return min(timed(fn, device) for _ in range(reps))


# --- pretraining -----------------------------------------------------------------------------


def handwritten_pretrain(gan, images, labels, cfg: Config, device: torch.device) -> None:
    """The minimal PyTorch loop: the same networks, batch and Adam, with .backward() and
    torch.optim; scale and shift stay fixed at identity, as in our pretraining."""
    p, g, d = cfg.pretrain, gan.generator, gan.discriminator
    params = trainable_params(gan, gan.names("g") + gan.names("d"))
    opt_d = torch.optim.Adam([params[n] for n in gan.names("d")], p.lr, betas=tuple(p.betas))
    opt_g = torch.optim.Adam([params[n] for n in gan.names("g")], p.lr, betas=tuple(p.betas))
    rng = torch.Generator().manual_seed(cfg.seed)
    gan.train()
    for _ in range(p.steps):
        idx = torch.randint(len(images), (p.batch_size,), generator=rng)
        z = torch.randn(p.batch_size, g.z_dim, generator=rng).to(device)
        real, y = to_device(images[idx], device), labels[idx].to(device)
        fake = g(z, y)
        fake_class = torch.full_like(y, d.n_classes)
        loss_d = F.cross_entropy(d(real), y) + F.cross_entropy(d(fake.detach()), fake_class)
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        loss_g = F.cross_entropy(d(fake), y)
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()


def pretraining(cfg: Config, device: torch.device, steps: int, reps: int) -> dict:
    """Images/s of ``pretrain`` and of the hand-written loop, alternated, best of ``reps``."""
    cfg = copy.deepcopy(cfg)
    cfg.pretrain.steps, cfg.pretrain.bn_calibration_batches = steps, 0
    cfg.pretrain.mode_seeking = 0.0  # the hand-written loop has only eq. 4 and 6
    data = synthetic_dataset(cfg)
    images, labels = data.stacked()
    torch.manual_seed(0)
    gan = place(build_gan(cfg, CLASSES), device, cfg.speed.channels_last)
    ours, theirs = [], []
    for _ in range(reps):
        a, b = copy.deepcopy(gan), copy.deepcopy(gan)
        ours.append(timed(lambda: pretrain(a, data, cfg, device), device))  # noqa: B023
        theirs.append(timed(lambda: handwritten_pretrain(b, images, labels, cfg, device), device))  # noqa: B023
    n = steps * cfg.pretrain.batch_size
    flops = pretrain_step_flops(gan, data, cfg, device)
    return {
        "pretrain_images_per_s": n / min(ours),
        "handwritten_images_per_s": n / min(theirs),
        "pretrain_flop_per_step": flops,
        "pretrain_flop_per_s": flops * steps / min(ours),
    }


LARGE_BATCH = 10


def large_batch_pretraining(cfg: Config, device: torch.device, steps: int, reps: int) -> dict:
    """Images/s of ``pretrain`` with ``LARGE_BATCH`` times the config's batch: on a GPU a step
    of the default batch is bound by kernel launches, so a larger batch costs little more."""
    cfg = with_overrides(
        cfg,
        [
            f"pretrain.steps={steps}",
            "pretrain.bn_calibration_batches=0",
            f"pretrain.batch_size={cfg.pretrain.batch_size * LARGE_BATCH}",
        ],
    )
    data = synthetic_dataset(cfg)
    torch.manual_seed(0)
    gan = place(build_gan(cfg, CLASSES), device, cfg.speed.channels_last)
    seconds = best_of(reps, lambda: pretrain(gan, data, cfg, device), device)
    return {"pretrain_large_batch_images_per_s": steps * cfg.pretrain.batch_size / seconds}


BACKBONE_OPTIONS = {
    "r1": ["pretrain.r1=0.1"],
    "transposed": ["model.upsample=transposed"],
    "no_mode_seeking": ["pretrain.mode_seeking=0"],
    "width64": ["model.g_width=64", "model.d_width=64"],
}
"""Issue #13's backbone options whose cost per pretraining step is measured against the
default's (resizing and mode seeking; what a quality-per-minute comparison divides by)."""


def backbone_costs(cfg: Config, device: torch.device, steps: int, reps: int) -> dict:
    """Seconds per pretraining step of each backbone option over the default's, the runs
    alternated and the best of ``reps`` kept, so that both see the same machine load."""
    data = synthetic_dataset(cfg)
    short = [f"pretrain.steps={steps}", "pretrain.bn_calibration_batches=0"]
    configs = {"default": with_overrides(cfg, short)} | {
        name: with_overrides(cfg, [*short, *sets]) for name, sets in BACKBONE_OPTIONS.items()
    }
    best = dict.fromkeys(configs, math.inf)
    for _ in range(reps):
        for name, c in configs.items():
            torch.manual_seed(0)
            gan = place(build_gan(c, CLASSES), device, c.speed.channels_last)
            best[name] = min(best[name], timed(lambda: pretrain(gan, data, c, device), device))  # noqa: B023
    return {f"pretrain_cost_{name}": best[name] / best["default"] for name in BACKBONE_OPTIONS}


def pretrain_step_flops(gan, data: ClassDataset, cfg: Config, device: torch.device) -> float:
    """Model FLOPs (forward and backward) of one pretraining step, counted by PyTorch."""
    gan = copy.deepcopy(gan).train()
    params = trainable_params(gan, gan.names("g") + gan.names("d"))
    images, labels = data.stacked()
    b = cfg.pretrain.batch_size
    real, y = to_device(images[:b], device), labels[:b].to(device)
    z = torch.randn(b, gan.generator.z_dim, device=device)
    upd_d, upd_g = Update(gan.names("d"), 1e-4), Update(gan.names("g"), 1e-4)
    with FlopCounterMode(display=False) as counter:
        GanStep(gan, upd_d, upd_g)(params, real, y, z)
    return float(counter.get_total_flops())


def matmul_peak(device: torch.device, sizes: tuple[int, ...], reps: int) -> float:
    """FLOP/s of n x n fp32 matmuls, the best over ``sizes`` and ``reps`` (this machine's
    practical peak)."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
        a @ b
        best = max(best, 2 * n**3 / best_of(reps, lambda: a @ b, device))  # noqa: B023
    return best


def compile_check(cfg: Config, device: torch.device, steps: int) -> dict:
    """``torch.compile`` of G and D's forward (and its backward) on an adaptation-sized batch:
    the compile time and the speed-up per step afterwards."""
    gan = _meta_gan(cfg, device)
    nm = gan.generator.nm.weight
    n = cfg.task.n_way * cfg.task.k_shot
    z = torch.randn(n, gan.generator.z_dim, device=device)
    y = torch.arange(n, device=device) % cfg.task.n_way
    forward = lambda z, y: gan.discriminator(gan.generator(z, y)).sum()  # noqa: E731
    compiled = torch.compile(forward)
    step = lambda f: torch.autograd.grad(f(z, y), [nm])  # noqa: E731
    compile_s = timed(lambda: step(compiled), device)
    step(forward)
    eager, fast = (
        best_of(3, lambda f=f: [step(f) for _ in range(steps)], device) for f in (forward, compiled)
    )
    return {"compile_s": compile_s, "compile_speedup": eager / fast}


# --- adaptation and meta-training ------------------------------------------------------------


def _meta_gan(cfg: Config, device: torch.device):
    torch.manual_seed(0)
    gan = build_gan(cfg, CLASSES)
    gan.reset_heads(cfg.task.n_way, cfg.model.head_init)
    place(gan, device, cfg.speed.channels_last).freeze_backbone()
    return gan


def adaptation(cfg: Config, device: torch.device, steps: int, reps: int) -> dict:
    """Seconds to adapt to one N-way K-shot task, scaled to ``adapt.steps`` when fewer ran."""
    full = cfg.adapt.steps
    cfg = copy.deepcopy(cfg)
    cfg.adapt.steps = steps
    gan = _meta_gan(cfg, device)
    task = EpisodeSampler(synthetic_dataset(cfg), cfg.task.n_way, cfg.task.k_shot, 1, 0).sample()
    bf16, contiguous = copy.deepcopy(cfg), copy.deepcopy(cfg)
    bf16.speed.precision, contiguous.speed.channels_last = "bf16", False
    seconds = {}
    for key, c in (("adapt_s", cfg), ("adapt_bf16_s", bf16), ("adapt_contiguous_s", contiguous)):
        run = lambda c=c: adapt(gan, task.support, task.support_labels, c, device)  # noqa: E731
        seconds[key] = best_of(reps, run, device) * full / steps
    if device.type == "cuda":  # the commands' deterministic kernels against the fastest ones
        deterministic = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(False)
        run = lambda: adapt(gan, task.support, task.support_labels, cfg, device)  # noqa: E731
        seconds["adapt_nondeterministic_s"] = best_of(reps, run, device) * full / steps
        torch.use_deterministic_algorithms(deterministic)
    figr = figr_adaptation(cfg, task, device, reps)
    return seconds | {"adapt_steps_timed": steps, "figr_adapt_s": figr}


def figr_adaptation(cfg: Config, task, device: torch.device, reps: int) -> float:
    """FIGR's adaptation seconds for the same task: one generator per class, each from
    ``figr.adapt_steps`` inner steps on its K images (then its BatchNorm statistics)."""
    torch.manual_seed(0)
    fitted = FigrFitted(build_figr(cfg).to(device), cfg, device, {})
    shots = task.support, task.support_labels
    return best_of(reps, lambda: fitted.adapt(*shots, seed=0).sample(1, 0), device)


def meta_runner(cfg: Config, device: torch.device, outer_steps: int, **speed):
    """A function running ``outer_steps`` outer steps of meta-training (``speed`` overrides
    config keys, ``section__key=value``), and the number of tasks it runs."""
    cfg = copy.deepcopy(cfg)
    for key, value in speed.items():
        section, name = key.split("__")
        setattr(getattr(cfg, section), name, value)
    data = synthetic_dataset(cfg)
    gan = _meta_gan(cfg, device)
    sampler = EpisodeSampler(data, cfg.task.n_way, cfg.task.k_shot, cfg.task.q_query, 1)
    outer = {
        side: Update(gan.names(f"ss_{side}"), cfg.meta.outer_lr, "adam", (0.9, 0.999))
        for side in "gd"
    }
    rng = torch.Generator().manual_seed(0)
    batches = [[sampler.sample() for _ in range(cfg.meta.meta_batch)] for _ in range(outer_steps)]
    run = lambda: [meta_step(gan, b, cfg, outer, rng, device) for b in batches]  # noqa: E731
    return run, outer_steps * cfg.meta.meta_batch


def tasks_per_s(reps: int, device: torch.device, *runners) -> list[float]:
    """Tasks per second of each runner, best of ``reps`` with the runners interleaved, so that
    a change in the machine's load does not favour one of them."""
    best = [float("inf")] * len(runners)
    for _ in range(reps):
        for i, (run, _) in enumerate(runners):
            best[i] = min(best[i], timed(run, device))
    return [tasks / seconds for (_, tasks), seconds in zip(runners, best, strict=True)]


def meta_tasks_per_s(
    cfg: Config, device: torch.device, outer_steps: int, reps: int = 2, **speed
) -> float:
    """Meta-training tasks per second over ``outer_steps`` outer steps, best of ``reps``."""
    return tasks_per_s(reps, device, meta_runner(cfg, device, outer_steps, **speed))[0]


def _process_worker(
    rank: int, world: int, threads: int, init: str, cfg: Config, steps: int, reps: int, out
) -> None:
    import torch.distributed as dist

    torch.set_num_threads(threads)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        rate = meta_tasks_per_s(cfg, torch.device("cpu"), steps, reps)
        if rank == 0:
            out.put(rate)
    finally:
        if world > 1:
            dist.destroy_process_group()


def processes(cfg: Config, steps: int, reps: int, world: int, threads: int) -> float:
    """Meta-training tasks/s of ``world`` fresh CPU processes of ``threads`` threads each (gloo
    between them, as torchrun runs it). Every configuration starts fresh processes, so that
    none profits from an allocator already warmed by the benchmarks before it."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        init = os.path.join(tmp, "init")
        procs = [
            ctx.Process(
                target=_process_worker, args=(r, world, threads, init, cfg, steps, reps, out)
            )
            for r in range(world)
        ]
        for p in procs:
            p.start()
        rate = out.get(timeout=600)
        for p in procs:
            p.join()
    return rate


def meta_training(cfg: Config, device: torch.device, steps: int, reps: int) -> dict:
    """First- against second-order, batched against looped tasks, processes against threads."""
    so = max(1, steps // 2)
    result = {
        "meta_first_order_tasks_per_s": meta_tasks_per_s(cfg, device, steps, reps),
        "meta_second_order_tasks_per_s": meta_tasks_per_s(
            cfg, device, 1, reps=1, meta__second_order=True
        ),
    }
    result["meta_batch8_loop_tasks_per_s"], result["meta_batch8_batched_tasks_per_s"] = tasks_per_s(
        reps + 1,
        device,
        meta_runner(cfg, device, so, meta__meta_batch=8, speed__tasks_at_once=1),
        meta_runner(cfg, device, so, meta__meta_batch=8, speed__tasks_at_once=8),
    )
    if device.type == "cpu":
        for world, threads in ((1, 1), (1, 2), (2, 1)):
            key = f"meta_{world}proc_{threads}thread{'s' * (threads > 1)}_tasks_per_s"
            result[key] = processes(cfg, steps, reps, world, threads)
    return result


# --- memory ----------------------------------------------------------------------------------


def _rss_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _memory_worker(phase: str, cfg: Config, device: torch.device, threads: int, out) -> None:
    """One phase in a fresh process: the growth of its peak resident set over the set-up."""
    torch.set_num_threads(threads)
    data = synthetic_dataset(cfg)
    gan = _meta_gan(cfg, device) if phase != "pretrain" else build_gan(cfg, CLASSES)
    task = EpisodeSampler(data, cfg.task.n_way, cfg.task.k_shot, 1, 0).sample()
    runs = {
        "pretrain": lambda: pretrain(gan, data, cfg, device),
        "meta_train": lambda: meta_train(gan, data, cfg, device),
        "adapt": lambda: adapt(gan, task.support, task.support_labels, cfg, device),
    }
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak resident set (VmHWM)
    base = _rss_mib("VmRSS")
    runs[phase]()
    cuda = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    out.put({"rss_growth_mib": _rss_mib("VmHWM") - base, "cuda_peak_mib": cuda})


def peak_memory(cfg: Config, device: torch.device, threads: int) -> dict:
    """Peak memory of each phase, each in a fresh process (a few steps: the peak is reached in
    the first)."""
    cfg = copy.deepcopy(cfg)
    cfg.pretrain.steps, cfg.pretrain.bn_calibration_batches = 3, 1
    cfg.meta.steps, cfg.adapt.steps = 1, 3
    ctx = multiprocessing.get_context("spawn")
    result = {}
    for phase in ("pretrain", "meta_train", "adapt"):
        out = ctx.Queue()
        p = ctx.Process(target=_memory_worker, args=(phase, cfg, device, threads, out))
        p.start()
        result[phase] = out.get(timeout=600)
        p.join()
    return result


# --- report ----------------------------------------------------------------------------------


def measure(quick: bool, device: torch.device, threads: int, with_compile: bool) -> dict:
    cfg = load_config(overrides=[f"device={device.type}"])
    steps = {"pretrain": 5 if quick else 40, "adapt": 30 if quick else cfg.adapt.steps}
    reps = 2 if quick else 3
    result: dict = {"machine": machine(device), "device": device.type, "quick": quick}
    result |= pretraining(cfg, device, steps["pretrain"], reps)
    result |= backbone_costs(cfg, device, steps["pretrain"], reps)
    sizes = (1024,) if quick else (1024, 2048)
    if device.type == "cuda":  # a GPU reaches its peak only on larger products
        sizes = (4096,) if quick else (2048, 4096, 8192)
        result |= large_batch_pretraining(cfg, device, steps["pretrain"], reps)
    result["matmul_peak_flop_per_s"] = matmul_peak(device, sizes, reps)
    result |= adaptation(cfg, device, steps["adapt"], reps)
    meta_cfg = cfg if not quick else load_config(overrides=["meta.inner_steps=2"])
    result |= meta_training(meta_cfg, device, 1 if quick else 4, 1 if quick else 2)
    result["peak_memory"] = peak_memory(cfg, device, threads)
    if with_compile:
        result |= compile_check(cfg, device, 20)
    return result


def ratios(r: dict) -> list[tuple[str, str]]:
    """The table's rows: what, and the figure (a ratio where one fits)."""
    rate = lambda key: r.get(key, float("nan"))  # noqa: E731
    rows = [
        ("machine", r["machine"]),
        (
            "pretraining: ours / hand-written loop (images/s)",
            f"{r['pretrain_images_per_s'] / r['handwritten_images_per_s']:.3f} "
            f"({r['pretrain_images_per_s']:.0f} / {r['handwritten_images_per_s']:.0f})",
        ),
        (
            "pretraining model FLOP/s / fp32 matmul peak",
            f"{r['pretrain_flop_per_s'] / r['matmul_peak_flop_per_s']:.3f} "
            f"({r['pretrain_flop_per_s'] / 1e9:.1f} / {r['matmul_peak_flop_per_s'] / 1e9:.1f} "
            "GFLOP/s)",
        ),
    ]
    if "pretrain_large_batch_images_per_s" in r:
        large, default = r["pretrain_large_batch_images_per_s"], r["pretrain_images_per_s"]
        rows.append(
            (
                f"pretraining: batch x{LARGE_BATCH} / default batch (images/s)",
                f"{large / default:.2f} ({large:.0f} / {default:.0f})",
            )
        )
    rows += [
        (
            "pretraining step with " + " / ".join(BACKBONE_OPTIONS) + " over the default (time)",
            " / ".join(f"{r[f'pretrain_cost_{name}']:.2f}" for name in BACKBONE_OPTIONS),
        ),
        (
            "adaptation, one 5-way 10-shot task (s)",
            f"{r['adapt_s']:.2f}"
            + (" (extrapolated)" if r["quick"] else "")
            + f"; FIGR {r['figr_adapt_s']:.2f} (ratio {r['adapt_s'] / r['figr_adapt_s']:.2f})",
        ),
        ("adaptation: fp32 / bf16 autocast (time)", f"{r['adapt_s'] / r['adapt_bf16_s']:.2f}"),
        (
            "adaptation: contiguous / channels-last layout (time)",
            f"{r['adapt_contiguous_s'] / r['adapt_s']:.2f}",
        ),
        (
            "meta-training: first- / second-order (tasks/s)",
            f"{rate('meta_first_order_tasks_per_s') / rate('meta_second_order_tasks_per_s'):.1f}"
            f" ({rate('meta_first_order_tasks_per_s'):.2f} / "
            f"{rate('meta_second_order_tasks_per_s'):.2f})",
        ),
        (
            "meta-batch 8: batched / loop over tasks (tasks/s)",
            f"{rate('meta_batch8_batched_tasks_per_s') / rate('meta_batch8_loop_tasks_per_s'):.2f}",
        ),
    ]
    if "adapt_nondeterministic_s" in r:
        rows.append(
            (
                "adaptation: deterministic / default kernels (time)",
                f"{r['adapt_s'] / r['adapt_nondeterministic_s']:.2f}",
            )
        )
    if "meta_2proc_1thread_tasks_per_s" in r:
        two = rate("meta_2proc_1thread_tasks_per_s")
        rows.append(
            (
                "meta-training: 2 processes / 1 process (1 thread; 2 threads)",
                f"{two / rate('meta_1proc_1thread_tasks_per_s'):.2f}; "
                f"{two / rate('meta_1proc_2threads_tasks_per_s'):.2f}",
            )
        )
    if "compile_s" in r:
        rows.append(
            (
                "torch.compile of G and D: speed-up per step (compile s)",
                f"{r['compile_speedup']:.2f} ({r['compile_s']:.0f} s)",
            )
        )
    for phase, mem in r["peak_memory"].items():
        cuda = "" if mem["cuda_peak_mib"] is None else f", CUDA {mem['cuda_peak_mib']:.0f} MiB"
        rows.append((f"peak memory, {phase}", f"+{mem['rss_growth_mib']:.0f} MiB resident{cuda}"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run, under a minute")
    parser.add_argument("--json", action="store_true", help="also print one JSON line")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--compile", action="store_true", help="also time torch.compile (compiling takes long)"
    )
    parser.add_argument(
        "--threads", type=int, default=torch.get_num_threads(), help="torch threads"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    result = measure(args.quick, resolve_device(args.device), args.threads, args.compile)
    result["benchmark_s"] = time.perf_counter() - start
    width = max(len(k) for k, _ in ratios(result))
    for what, figure in ratios(result):
        print(f"{what:<{width}}  {figure}")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
