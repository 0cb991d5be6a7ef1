"""Multi-process training on ``torch.distributed``: gloo on the CPU, nccl on CUDA.

Launch with ``torchrun --nproc_per_node=P -m mtgan meta-train ...`` (or ``pretrain``): every
process runs the same phase on the same seed. Meta-training gives each process a share of every
meta-batch's tasks and sums the scale-and-shift gradients and the adapted NM and CF over the
processes (eq. 11 sums, eq. 12 averages); pretraining splits every batch across the processes
and averages the gradients, as ``DistributedDataParallel`` does. From Python, initialise the
default process group yourself (or with :func:`init_from_env`) before calling a phase.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

import torch
import torch.distributed as dist

from mtgan.errors import ConfigError


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher) with others."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: torch.device) -> None:
    """Join the process group that torchrun's environment describes (no-op without one).

    On CUDA every process takes the GPU of its ``LOCAL_RANK`` and talks over nccl; on the CPU
    the processes use gloo.
    """
    if not launched() or dist.is_initialized():
        return
    if device.type == "cuda":
        local, gpus = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
        if local >= gpus:
            raise ConfigError(
                f"torchrun started process {local} of this node, which has {gpus} GPU(s): "
                f"give --nproc_per_node at most {gpus}, or --device cpu"
            )
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def leave() -> None:
    """Leave the process group, if this process joined one (at the end of a command)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0 (or the only process): the one that writes files and shows progress."""
    return rank() == 0


def shard(n: int, what: str, even: bool = False) -> slice:
    """This process's contiguous share of ``n`` items (tasks of a meta-batch, images of a batch);
    ``even``: every process must get as many (the mean of the means is then the mean)."""
    p = world_size()
    if n < p or (even and n % p):
        need = "a multiple of" if even else "at least"
        raise ConfigError(f"{what} is {n}; with {p} processes it must be {need} {p}")
    r = rank()
    return slice(r * n // p, (r + 1) * n // p)


def all_reduce_sum(tensors: Sequence[torch.Tensor]) -> None:
    """Sum every tensor over the processes, in place (nothing to do for one process)."""
    if world_size() == 1:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    for t, part in zip(tensors, flat.split([t.numel() for t in tensors]), strict=True):
        t.copy_(part.view_as(t))


def mean_over_processes(values: dict[str, float]) -> dict[str, float]:
    """Each number averaged over the processes (the losses of data-parallel shards), so that
    every process records, and stops on, the same values."""
    if world_size() == 1:
        return values
    t = torch.tensor(list(values.values()), dtype=torch.float64)
    all_reduce_sum([t])
    return dict(zip(values, (t / world_size()).tolist(), strict=True))


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block before the other processes do (creating a run folder)."""
    if not is_main():
        dist.barrier()
    yield
    if is_main() and world_size() > 1:
        dist.barrier()
