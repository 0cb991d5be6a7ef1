"""The losses of a run in files a researcher can plot: ``losses.csv`` in the run folder always
(one row per phase, step and loss), and TensorBoard scalars under ``tensorboard/`` when the
``tensorboard`` package is installed (``pip install "mtgan[tensorboard]"``)."""

from __future__ import annotations

import csv
import importlib.util
import io

from mtgan.distributed import is_main
from mtgan.files import atomic_write
from mtgan.runs.folder import Run

LOSS_FILE = "losses.csv"
TENSORBOARD_FOLDER = "tensorboard"


def log_losses(run: Run, phase: str) -> None:
    """Rewrite ``losses.csv`` from every phase's losses so far, and add ``phase``'s losses to
    the TensorBoard log (call it once per phase trained, so that no step is logged twice)."""
    if not is_main():
        return
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["phase", "step", "loss", "value"])
    for name, history in run.histories.items():
        for step, losses in enumerate(history, start=1):
            writer.writerows([name, step, key, value] for key, value in losses.items())
    atomic_write(run.path(LOSS_FILE), buf.getvalue())
    if importlib.util.find_spec("tensorboard") is not None:
        _tensorboard(run, phase)


def _tensorboard(run: Run, phase: str) -> None:
    from torch.utils.tensorboard import SummaryWriter  # needs the optional tensorboard package

    with SummaryWriter(str(run.path(TENSORBOARD_FOLDER))) as writer:
        for step, losses in enumerate(run.histories.get(phase, []), start=1):
            for key, value in losses.items():
                writer.add_scalar(f"{phase}/{key}", value, step)
