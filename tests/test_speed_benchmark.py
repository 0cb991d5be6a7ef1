"""benchmarks/speed.py --quick --json runs and reports every figure (a smoke test: the figures
themselves are never asserted, they depend on the machine and what else runs on it)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


ON_THE_DEVICE = {
    "cpu": ("meta_2proc_1thread_tasks_per_s",),
    "cuda": ("pretrain_large_batch_images_per_s", "adapt_nondeterministic_s"),
}
"""The figures measured on one kind of device only."""


def test_speed_benchmark_quick_json():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--quick", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=280,
    )
    assert r.returncode == 0, r.stderr
    figures = json.loads(r.stdout.strip().splitlines()[-1])
    for key in (
        "pretrain_images_per_s",
        "handwritten_images_per_s",
        "pretrain_flop_per_s",
        "matmul_peak_flop_per_s",
        "adapt_s",
        "meta_first_order_tasks_per_s",
        "meta_second_order_tasks_per_s",
        "meta_batch8_loop_tasks_per_s",
        "meta_batch8_batched_tasks_per_s",
        *ON_THE_DEVICE[figures["device"]],
        "pretrain_cost_r1",
        "pretrain_cost_transposed",
        "pretrain_cost_no_mode_seeking",
        "pretrain_cost_width64",
    ):
        assert figures[key] > 0 and math.isfinite(figures[key]), key
    assert set(figures["peak_memory"]) == {"pretrain", "meta_train", "adapt"}
    assert "hand-written loop" in r.stdout and "FIGR" in r.stdout
    assert "pretraining step with r1 / transposed / no_mode_seeking / width64" in r.stdout
