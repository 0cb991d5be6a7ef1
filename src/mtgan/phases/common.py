"""What the phases share: devices, seeded noise, batches of real images, progress bars, and
what identifies a phase's state file."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch
from tqdm import tqdm

from mtgan.config import Config, get, keyed
from mtgan.data.base import to_model_range
from mtgan.distributed import is_main
from mtgan.errors import ConfigError
from mtgan.nn.gan import ConditionalGAN

#: Keys a resumed phase may change: learning rates (``--on-nan restart`` halves them), the
#: checkpoint interval, where the data lives and how strictly it is read.
RESUMABLE_CHANGES = ("lr", "checkpoint_every", "root", "strict")


def resolve_device(name: str, deterministic: bool = True) -> torch.device:
    """The device a command runs on: ``auto`` picks CUDA when present, else the CPU. On CUDA
    this also sets PyTorch's deterministic kernels on or off for the process
    (``speed.deterministic``): with them, atomic additions in backward passes cannot reorder
    floating-point sums from one run to the next."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda was asked for but CUDA is not available; use --device cpu")
    if name == "cuda":
        # cuBLAS repeats its sums only with a fixed workspace, read when it starts
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(deterministic)
    return torch.device(name)


def place(gan: ConditionalGAN, device: torch.device, channels_last: bool) -> ConditionalGAN:
    """``gan`` on ``device``, its convolutions channels-last or contiguous (``speed.channels_last``:
    channels-last measured faster on the CPU; the values are the same up to rounding)."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    return gan.to(device, memory_format=layout)


def autocast(cfg: Config, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast where ``speed.precision`` asks for it (GAN steps only; updates stay fp32)."""
    return torch.autocast(device.type, torch.bfloat16, enabled=cfg.speed.precision == "bf16")


def noise(n: int, z_dim: int, rng: torch.Generator, device: torch.device) -> torch.Tensor:
    """Standard normal z drawn on the CPU from ``rng`` (the same on every device)."""
    return torch.randn(n, z_dim, generator=rng).to(device)


def to_device(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 images to model-range floats on ``device``."""
    return to_model_range(images.to(device))


def progress_bar(total: int, desc: str, enabled: bool, initial: int = 0) -> tqdm | LineProgress:
    """Progress on stderr, shown by the main process only: a tqdm bar on a terminal, plain
    lines (no carriage returns) when stderr is a file or a pipe."""
    shown = enabled and is_main()
    if shown and not sys.stderr.isatty():
        return LineProgress(total, desc, initial)
    return tqdm(
        total=total, initial=initial, desc=desc, disable=not shown, file=sys.stderr, leave=True
    )


class LineProgress:
    """Progress as one plain line every tenth of the way (and at the end), for logs.

    Example:
        >>> import io, contextlib
        >>> err = io.StringIO()
        >>> with contextlib.redirect_stderr(err), LineProgress(20, "adapt") as bar:
        ...     for _ in range(20):
        ...         bar.set_postfix({"loss_d": 0.5})
        ...         bar.update()
        >>> lines = err.getvalue().splitlines()
        >>> len(lines), lines[0].startswith("adapt: step 2/20 (10%)"), lines[-1].endswith("0.5")
        (10, True, True)
    """

    def __init__(self, total: int, desc: str, initial: int = 0):
        self.total, self.desc, self.n = total, desc, initial
        self.every = max(1, total // 10)
        self.postfix: dict[str, float] = {}
        self.start = time.perf_counter()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def set_postfix(self, values: dict[str, float], refresh: bool = False) -> None:
        self.postfix = dict(values)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.n % self.every == 0 or self.n == self.total:
            losses = "".join(f", {k} {v:.4g}" for k, v in self.postfix.items())
            seconds = time.perf_counter() - self.start
            percent = 100 * self.n // max(self.total, 1)
            print(
                f"{self.desc}: step {self.n}/{self.total} ({percent}%), {seconds:.0f} s{losses}",
                file=sys.stderr,
                flush=True,
            )


def state_identity(
    cfg: Config, sections: Sequence[str], *start: torch.Tensor | torch.nn.Module
) -> dict[str, Any]:
    """What a phase's state file must match to be resumed: the settings of ``sections`` (but
    :data:`RESUMABLE_CHANGES`, and :data:`mtgan.config.ADDED_LATER` at their earlier values) and
    a digest of the phase's starting weights and data."""
    settings = keyed(cfg.to_dict())
    values = {}
    for section in sections:
        part = settings[section] if "." not in section else get(cfg, section)
        flat = {f"{section}.{k}": v for k, v in part.items()} if isinstance(part, dict) else {}
        values |= flat or {section: part}
    values = {k: v for k, v in values.items() if not k.endswith(RESUMABLE_CHANGES)}
    digest = hashlib.sha256()
    for item in start:
        tensors = item.state_dict().values() if isinstance(item, torch.nn.Module) else [item]
        for t in tensors:
            digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    values["start"] = digest.hexdigest()[:16]
    return json.loads(json.dumps(values))
