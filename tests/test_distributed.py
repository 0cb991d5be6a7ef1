"""Two processes on the CPU (gloo) against one: data-parallel pretraining keeps the replicas
identical, and meta-training splits the tasks yet takes the single-process steps."""

import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mtgan.config import load_config
from mtgan.distributed import init_from_env
from mtgan.errors import ConfigError
from mtgan.phases.meta_train import meta_train
from mtgan.phases.pretrain import build_gan, pretrain
from tests.conftest import TINY, make_toy_dataset

CPU = torch.device("cpu")
OVERRIDES = TINY + ["meta.meta_batch=4", "meta.steps=3", "pretrain.steps=4"]


def _state(gan):
    return {k: v.detach().clone() for k, v in gan.state_dict().items()}


def _worker(rank: int, world: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        cfg, data = load_config(overrides=OVERRIDES), make_toy_dataset()
        torch.manual_seed(0)
        gan = build_gan(cfg, len(data.classes))
        history = pretrain(gan, data, cfg, CPU)
        pretrained = _state(gan)
        meta_train(gan, data, cfg, CPU)
        state = {"pretrained": pretrained, "meta": _state(gan), "history": history}
        torch.save(state, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_two_processes_match_one(tmp_path):
    out = str(tmp_path / "state")
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), out), nprocs=2)
    ranks = [torch.load(f"{out}.{r}") for r in range(2)]
    for k, v in ranks[0]["pretrained"].items():
        assert torch.equal(v, ranks[1]["pretrained"][k]), f"replicas diverged in pretraining: {k}"
    # every process records (and stops on) the losses averaged over the shards
    assert ranks[0]["history"] == ranks[1]["history"]
    cfg, data = load_config(overrides=OVERRIDES), make_toy_dataset()
    gan = build_gan(cfg, len(data.classes))
    gan.load_state_dict(ranks[0]["pretrained"])
    meta_train(gan, data, cfg, CPU)
    for k, v in _state(gan).items():
        for r in range(2):
            assert torch.allclose(ranks[r]["meta"][k], v, rtol=1e-5, atol=1e-6), (r, k)
    assert any(not torch.equal(v, ranks[0]["pretrained"][k]) for k, v in _state(gan).items())


def test_torchrun_runs_pretrain_and_meta_train_commands(tmp_path):
    """The commands as the README launches them: two CPU processes, one run folder, and a clean
    exit (every process leaves its process group)."""
    run = tmp_path / "run"
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    quick = ["--quick", "--set", "meta.meta_batch=2"]  # kept in the run's config.yaml
    first = ["pretrain", "--out", str(run), "--device", "cpu", *quick]
    for command in (first, ["meta-train", "--from", str(run)]):
        done = subprocess.run(
            [*launch, "-m", "mtgan", *command, "--no-progress"], env=env, capture_output=True,
            text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        assert "destroy_process_group" not in done.stderr
    for phase in ("pretrain", "meta-train"):
        assert (run / phase / "model.safetensors").is_file()
    assert not list(run.rglob("state.safetensors")), "finished phases leave no state file"


def test_more_processes_than_gpus_is_a_one_line_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match="--nproc_per_node at most 1, or --device cpu"):
        init_from_env(torch.device("cuda"))
