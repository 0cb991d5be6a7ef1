"""The paper's phases driven in a run folder: each phase's model is saved when it finishes and
loaded instead of trained again when a run resumes; a phase's state file lets it continue
where it stopped; a NaN either stops the phase or, with ``on_nan=restart``, continues it from
its last checkpoint with its learning rates halved.

:class:`RunContext` offers these phases to the methods (:mod:`mtgan.methods`), so that ``mtgan
run`` and ``mtgan evaluate --method NAME`` train and adapt any registered method in a run folder.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from mtgan.checkpoint import STATE_FILE
from mtgan.config import Config
from mtgan.data import ClassDataset
from mtgan.data.base import to_uint8
from mtgan.distributed import is_main
from mtgan.errors import MtganError, NumericalError
from mtgan.files import atomic_write
from mtgan.nn.gan import ARCHITECTURE_KEYS, ConditionalGAN, load_gan, save_gan
from mtgan.phases.adapt import HEADS, adapt, sample
from mtgan.phases.common import place
from mtgan.phases.evaluate import validation_fid
from mtgan.phases.meta_train import META_SECTIONS, meta_train, validation_curve, with_granularity
from mtgan.phases.pretrain import build_gan, pretrain
from mtgan.report import image_grid, save_curve, save_png
from mtgan.runs.folder import MODEL_FILE, Run, record
from mtgan.runs.loss_log import log_losses

LR_SCALE_FILE = "lr_scale.json"
MAX_NAN_RESTARTS = 3
PHASE_SECTIONS = {
    "pretrain": ("seed", "data", "model", "pretrain"),
    "meta-train": META_SECTIONS,
}
"""The settings that make a phase's model: a method that asks for other ones cannot use the
run folder's model."""


def run_pretrain(run: Run) -> ConditionalGAN:
    """Phase (a) on the training classes; writes ``pretrain/model.safetensors``."""
    if run.resume and run.path("pretrain", MODEL_FILE).is_file():
        return _finished(run, "pretrain")
    train = run.data()["train"]

    def attempt(cfg: Config, state: Path) -> tuple[ConditionalGAN, list]:
        torch.manual_seed(cfg.seed)
        gan = build_gan(cfg, len(train.classes))
        return gan, pretrain(gan, train, cfg, run.device, run.progress, state)

    gan, info = train_with_restarts(run, run.cfg, run.path("pretrain"), "pretrain", attempt)
    if is_main():  # under torchrun every process holds the same model; one writes it
        rng = torch.Generator().manual_seed(run.cfg.seed)
        shown = sample(gan, 10, rng, run.device, classes=10)[0]  # the first ten classes
        save_png(image_grid(to_uint8(shown.cpu()), ncols=10), run.path("samples", "pretrain.png"))
    _keep(run, "pretrain", info)
    log_losses(run, "pretrain")
    save_phase(gan, run.path("pretrain"), "pretrain", info, train.classes)
    return gan


def run_meta_train(run: Run, gan: ConditionalGAN | None = None) -> ConditionalGAN:
    """Phase (b) from the pretrained model; writes ``meta-train/model.safetensors``."""
    if run.resume and run.path("meta-train", MODEL_FILE).is_file():
        return _finished(run, "meta-train")
    pretrained = load_phase_model(run, "pretrain")[0] if gan is None else gan

    def attempt(cfg: Config, state: Path) -> tuple[ConditionalGAN, list]:
        gan = copy.deepcopy(pretrained)  # a restart starts from the pretrained model too
        torch.manual_seed(cfg.seed)  # head_init=random draws from it
        train, validate = run.data()["train"], meta_validator(run, cfg)
        return gan, meta_train(gan, train, cfg, run.device, run.progress, state, validate)

    gan, info = train_with_restarts(run, run.cfg, run.path("meta-train"), "meta", attempt)
    _keep(run, "meta-train", info)
    log_losses(run, "meta-train")
    _write_validation_curve(run, info.get("history", []))
    save_phase(gan, run.path("meta-train"), "meta-train", info)
    return gan


def meta_validator(run: Run, cfg: Config) -> Callable[[ConditionalGAN], float] | None:
    """The validation score of meta-models that ``meta.validate_every`` asks for, or None."""
    validation = validation_classes(run, cfg)
    return None if validation is None else validation_fid(validation, cfg, run.device)


def validation_classes(run: Run, cfg: Config) -> ClassDataset | None:
    """The validation classes when ``meta.validate_every`` asks for them (None when it does
    not); an error, before any training, when there are too few."""
    if not cfg.meta.validate_every:
        return None
    validation = run.data().get("validation")
    if validation is None or len(validation.classes) < cfg.task.n_way:
        have = 0 if validation is None else len(validation.classes)
        raise MtganError(
            f"meta.validate_every needs {cfg.task.n_way} validation classes, not {have}; "
            "hold training classes out with data.validation_classes"
        )
    return validation


def _write_validation_curve(run: Run, history: list[dict[str, float]]) -> None:
    """``meta-train/validation.json`` and ``.png``: the meta-model's validation FID by step."""
    curve = validation_curve(history, run.cfg.meta.validate_every)
    if curve and is_main():
        best = min(curve, key=lambda point: point[1])
        data = {"score": "mean FID of validation tasks", "curve": curve, "best": best}
        atomic_write(run.path("meta-train", "validation.json"), json.dumps(data, indent=2))
        save_curve(curve, "validation FID", run.path("meta-train", "validation.png"))


def load_phase_model(run: Run, phase: str) -> tuple[ConditionalGAN, dict[str, Any]]:
    """``<phase>/model.safetensors`` and its metadata, checked against the run's config, on
    the run's device as the phase left it: a resumed run computes what follows it (new heads,
    say) on the same device as an uninterrupted one, and so to the same bits."""
    path = run.path(phase, MODEL_FILE)
    if not path.is_file():
        raise MtganError(f"{path} does not exist; run the {phase} phase first")
    gan, meta = load_gan(path)
    want = {**dataclasses.asdict(run.cfg.model), **dataclasses.asdict(run.cfg.data)}
    for key in ARCHITECTURE_KEYS:
        if gan.config[key] != want[key]:
            section = "data" if key in ("image_size", "channels") else "model"
            raise MtganError(
                f"{path} was trained with {section}.{key}={gan.config[key]!r} but the run's "
                f"config says {want[key]!r}; it comes from another run, or drop that --set"
            )
    place(gan, run.device, run.cfg.speed.channels_last)
    return gan, meta


def train_with_restarts(
    run: Run,
    cfg: Config,
    folder: Path,
    section: str,
    attempt: Callable[[Config, Path], tuple[ConditionalGAN, list]],
) -> tuple[ConditionalGAN, dict[str, Any]]:
    """Train one phase with its state file in ``folder``, continued when resuming (else
    removed first). On NaN with ``on_nan=restart`` it continues from the last checkpoint with
    the learning rates of ``cfg``'s ``section`` halved; ``folder/lr_scale.json`` keeps the
    factor for a later resume and ``run.json`` records every restart.

    Returns:
        The model and ``history`` (losses), ``seconds`` and ``lr_scale``.
    """
    state, scale_file = folder / STATE_FILE, folder / LR_SCALE_FILE
    if not run.resume:
        state.unlink(missing_ok=True)
        scale_file.unlink(missing_ok=True)
    scale = json.loads(scale_file.read_text())["lr_scale"] if scale_file.is_file() else 1.0
    start = time.perf_counter()
    for restart in range(MAX_NAN_RESTARTS + 1):
        try:
            gan, history = attempt(_scaled_lrs(cfg, section, scale), state)
            break
        except NumericalError as exc:
            if run.on_nan != "restart" or restart == MAX_NAN_RESTARTS:
                raise
            scale /= 2
            atomic_write(scale_file, json.dumps({"lr_scale": scale}))
            entry = {"folder": str(folder), "lr_scale": scale, "error": exc.reason}
            record(run, "nan_restarts", entry)
            warnings.warn(
                f"{exc.reason}: going on from its last checkpoint (or its start) with the "
                f"learning rate x{scale:g}",
                stacklevel=2,
            )
    return gan, {"history": history, "seconds": time.perf_counter() - start, "lr_scale": scale}


def _scaled_lrs(cfg: Config, section: str, scale: float) -> Config:
    """``cfg`` with every learning rate of ``section`` times ``scale``."""
    part = getattr(cfg, section)
    names = [f.name for f in dataclasses.fields(part) if f.name.endswith("lr")]
    lrs = {name: getattr(part, name) * scale for name in names}
    return dataclasses.replace(cfg, **{section: dataclasses.replace(part, **lrs)})


def save_phase(
    gan: ConditionalGAN,
    folder: Path,
    phase: str,
    info: dict[str, Any],
    classes: list[str] | None = None,
) -> None:
    """The model (losses, seconds and learning-rate factor in its header), written last: a
    phase is finished when it exists. Then the state it was resumable from goes. Under torchrun
    only the main process writes."""
    if not is_main():
        return
    save_gan(gan, folder / MODEL_FILE, classes, phase=phase, **info)
    (folder / STATE_FILE).unlink(missing_ok=True)
    (folder / LR_SCALE_FILE).unlink(missing_ok=True)


def _keep(run: Run, phase: str, info: dict[str, Any]) -> None:
    """A phase's losses and seconds, for the report."""
    run.histories[phase] = info.get("history", [])
    run.timings[phase] = info.get("seconds", 0.0)


def _finished(run: Run, phase: str) -> ConditionalGAN:
    """A finished phase's model, when resuming a run (a leftover state file goes)."""
    gan, meta = load_phase_model(run, phase)
    _keep(run, phase, meta)
    (run.path(phase, STATE_FILE)).unlink(missing_ok=True)
    return gan


class RunContext:
    """The run folder as the place where a method's phases run (:class:`mtgan.methods.Context`).

    With ``train``, phases (a) and (b) are trained and saved, or loaded when the run resumes and
    they are finished (``mtgan run``); without, the run's finished models are loaded (``mtgan
    evaluate``, ``mtgan adapt``). A method whose settings for a phase differ from the run's
    config (``config.yaml`` with any ``--set``) is refused with the first differing key.
    Adaptation keeps its state in the folder the caller gives, under the same NaN policy.
    """

    def __init__(self, run: Run, train: bool = False, show_adaptation: bool = False):
        self.run, self.train, self.show_adaptation = run, train, show_adaptation

    @property
    def device(self) -> torch.device:
        return self.run.device

    @property
    def progress(self) -> bool:
        return self.run.progress

    def training_set(self) -> ClassDataset:
        return self.run.data()["train"]

    def pretrained(self, cfg: Config) -> tuple[ConditionalGAN, float]:
        self._check_settings(cfg, "pretrain")
        if not self.train:
            gan, meta = load_phase_model(self.run, "pretrain")
            return gan, meta.get("seconds", 0.0)
        return run_pretrain(self.run), self.run.timings["pretrain"]

    def meta_trained(self, cfg: Config) -> tuple[ConditionalGAN, dict[str, float]]:
        self._check_settings(cfg, "meta-train")
        if not self.train:
            gan, meta = load_phase_model(self.run, "meta-train")
            return gan, {"meta-train": meta.get("seconds", 0.0)}
        pretrained, _ = self.pretrained(cfg)
        gan = run_meta_train(self.run, with_granularity(pretrained, cfg))
        return gan, {p: self.run.timings[p] for p in ("pretrain", "meta-train")}

    def adapted(
        self,
        gan: ConditionalGAN,
        support: torch.Tensor,
        labels: torch.Tensor,
        cfg: Config,
        seed: int,
        folder: Path | None,
        groups: Sequence[str] = HEADS,
    ) -> tuple[ConditionalGAN, dict[str, Any]]:
        run, progress = self.run, self.show_adaptation

        def attempt(cfg: Config, state: Path | None) -> tuple[ConditionalGAN, list]:
            return adapt(gan, support, labels, cfg, run.device, seed, progress, state, groups)

        if folder is None:
            start = time.perf_counter()
            adapted, history = attempt(cfg, None)
            return adapted, {"history": history, "seconds": time.perf_counter() - start}
        return train_with_restarts(run, cfg, folder, "adapt", attempt)

    def _check_settings(self, cfg: Config, phase: str) -> None:
        mine, theirs = _flat(cfg.to_dict()), _flat(self.run.cfg.to_dict())
        for key in mine:
            if key.startswith(PHASE_SECTIONS[phase]) and mine[key] != theirs[key]:
                raise MtganError(
                    f"this method's {phase} phase needs {key}={mine[key]!r}, but the run folder "
                    f"{self.run.root} was made with {theirs[key]!r}; compare such variants with "
                    "mtgan benchmark"
                )


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[prefix + key] = value
    return flat
