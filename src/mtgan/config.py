"""Typed configuration: dataclasses with YAML in and out and checks with helpful errors.

A config has one section per concern. Keys are set from YAML files (``--config FILE``) and
from ``section.key=value`` overrides (``--set``); an unknown key names the closest valid one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mtgan.choices import (
    Channels,
    ClassInit,
    Device,
    GeneratorLoss,
    Granularity,
    HeadInit,
    HeadUpdate,
    LrSchedule,
    NmPart,
    OptimizerKind,
    OuterGenerator,
    Precision,
    SsSides,
    Upsampling,
    allowed,
    parse_policies,
)
from mtgan.errors import ConfigError


@dataclass
class DataConfig:
    """Which images, at which size, and how the classes split into train/validation/test.

    ``split`` picks one of the dataset's own files (for example ``train`` or ``test`` of the idx
    and CIFAR datasets) when it is split by classes; ``test_classes`` holds those classes out as
    the test classes (the rest train); otherwise a dataset without few-shot splits of its own
    is split by ``split_fractions`` with ``split_seed``. ``validation_classes`` > 0 holds that
    many training classes out (chosen with ``split_seed``) as validation classes where the split
    has none of its own (Omniglot's background set, a ``test_classes`` hold-out).
    ``train_per_class`` > 0 keeps only the first that many images of each training class
    (validation and test classes keep all theirs): learning curves over the amount of
    pretraining data. Unreadable
    images of an image folder are skipped with a warning, or refused with ``strict``
    (``--strict``).
    """

    name: str = "glyphs"
    root: str | None = None
    image_size: int = 32
    channels: Channels = 1
    per_class: int = 20
    split: str | None = None
    test_classes: list[str] | None = None
    split_fractions: list[float] = field(default_factory=lambda: [0.7, 0.1, 0.2])
    split_seed: int = 0
    validation_classes: int = 0
    train_per_class: int = 0
    strict: bool = False


@dataclass
class ModelConfig:
    """Network widths, scale-and-shift granularity, IC's upsampling, NM/CF initialisation,
    generator loss. ``spectral_norm`` divides each of FE's convolution weights by its largest
    singular value (SN-GAN, Miyato et al. 2018) in every phase."""

    z_dim: int = 64
    g_width: int = 32
    d_width: int = 32
    ss_granularity: Granularity = "channel"
    upsample: Upsampling = "resize"
    head_init: HeadInit = "pretrained"
    objective: GeneratorLoss = "eq6"
    spectral_norm: bool = False


@dataclass
class TaskConfig:
    """N-way K-shot tasks with Q query images per class (meta-training and testing)."""

    n_way: int = 5
    k_shot: int = 10
    q_query: int = 5


@dataclass
class PretrainConfig:
    """Phase (a): the conditional GAN on all training classes; a state file every
    ``checkpoint_every`` steps (0: none) to resume from. ``ema`` > 0 keeps an exponential
    moving average of G's weights with that decay per step and makes it the pretrained G.
    ``lr_schedule=linear`` keeps ``lr`` for the first half of the steps, then decays it
    linearly to 0. ``r1`` > 0 adds the R1 penalty on real images to D's loss with weight ``r1 / 2``;
    ``mode_seeking`` > 0 adds MSGAN's term to G's loss with that weight (each batch then holds
    pairs of images of one class). ``augment``: DiffAugment policies applied to D's inputs, as
    ``adapt.augment`` (empty: none), against D memorising a small training set."""

    steps: int = 3000
    batch_size: int = 64
    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    lr_schedule: LrSchedule = "constant"
    ema: float = 0.0
    r1: float = 0.0
    mode_seeking: float = 0.1
    augment: str = ""
    bn_calibration_batches: int = 20
    checkpoint_every: int = 100


@dataclass
class MetaConfig:
    """Phase (b): inner NM/CF steps on support sets (eq. 10), SS steps on query sets (eq. 11).

    ``head_update``: ``reset`` (default) returns NM and CF to their initial values after every
    outer step, so that only SS is meta-learned and adaptation starts from the heads derived from
    the pretrained ones; ``average`` sets them to the mean of the task-adapted ones (eq. 12),
    which measurably hurt (see the README's results); with ``average``, ``head_step`` < 1 moves
    them only that fraction of the way to the mean (Reptile's interpolation; 0 is ``reset``).
    ``ss_sides``: whose scale and shift the outer step trains, ``both``, ``g`` (IC's) or ``d``
    (FE's). ``learn_rates`` also learns the inner loops' learning rates of NM and CF, one
    multiplier per element (Meta-SGD; steps of ``rate_lr`` on their logarithms), and phase (c)
    adapts with them.
    A state file is written every ``checkpoint_every`` outer steps (0: none).
    ``outer_g``: what the outer step asks of G's scale and shift, eq. 11's L_G (the paper's,
    in which no query image appears) or ``features``, that the adapted G's images of each class
    match the query images' mean FE features (our extension).
    ``validate_every`` > 0 adapts the meta-model to ``validate_tasks`` fixed tasks of the
    validation classes before the first outer step and every ``validate_every`` steps, scores
    them (mean FID) and ends with the best meta-model seen, the starting one included.
    """

    steps: int = 150
    meta_batch: int = 4
    inner_steps: int = 10
    inner_lr: float = 2e-3
    inner_optimizer: OptimizerKind = "adam"
    outer_lr: float = 1e-4
    second_order: bool = False
    head_update: HeadUpdate = "reset"
    head_step: float = 1.0
    ss_sides: SsSides = "both"
    learn_rates: bool = False
    rate_lr: float = 1e-2
    checkpoint_every: int = 10
    validate_every: int = 0
    validate_tasks: int = 5
    outer_g: OuterGenerator = "eq11"


@dataclass
class AdaptConfig:
    """Phase (c): NM and CF trained on a new task's support set (eq. 10); a state file every
    ``checkpoint_every`` steps (0: none). ``augment``: DiffAugment policies applied to D's
    inputs here and in meta-training's inner steps, comma-separated (``translation``,
    ``cutout``, ``color``; empty: none). Translation alone is the default: on Omniglot cutout
    cost FID, on CIFAR-10 color and cutout helped (its presets add them).
    ``class_init``: ``heads`` starts a task's classes where NM and CF are (the mean of the
    pretrained classes', or what meta-training left); ``nearest`` starts each class from the
    pretrained classes D recognises in its support images (see :mod:`mtgan.nn.bank`), here and
    in meta-training's inner loops (there without the task's own classes).
    ``ss_lr`` > 0 also trains IC's and FE's scale and shift on the support set at that rate
    (AdaFM's fine-tuning of the modulation, Zhao et al. 2020); 0 keeps them fixed (the paper).
    ``nm``: which of NM's weights learn, here and in meta-training's inner loops: ``all`` (eq.
    10) or ``classes``, the class columns only, so that the noise columns and the bias keep the
    mapping of z that IC was trained on.
    ``mode_seeking`` > 0 adds MSGAN's term (:func:`mtgan.losses.mode_seeking`) at that weight
    to G's loss here (not in meta-training's inner loops), each class's support images paired
    (see :func:`mtgan.phases.adapt.class_pairs`): two noises of a new class must give different
    images, against adaptation drawing every sample of a class alike."""

    steps: int = 300
    lr: float = 2e-3
    optimizer: OptimizerKind = "adam"
    augment: str = "translation"
    class_init: ClassInit = "heads"
    ss_lr: float = 0.0
    nm: NmPart = "all"
    mode_seeking: float = 0.0
    checkpoint_every: int = 100


@dataclass
class SpeedConfig:
    """How fast the phases run, not what they compute (see the README's Speed section).

    ``tasks_at_once``: how many tasks of a meta-batch run their inner loops as one batched
    computation; 0 picks the whole meta-batch on CUDA and one task at a time on the CPU, where
    large batches measured slower. ``channels_last``: the convolutions' memory layout (faster
    on the CPU). ``precision``: ``fp32``, or ``bf16`` autocast (meant for CUDA).
    ``deterministic``: on CUDA, commands run PyTorch's deterministic kernels, so that a seeded
    run repeats, and a resumed one continues, bit for bit (the CPU's kernels always are).
    """

    tasks_at_once: int = 0
    channels_last: bool = True
    precision: Precision = "fp32"
    deterministic: bool = True


@dataclass
class EvalConfig:
    """Test tasks and samples."""

    tasks: int = 4
    samples_per_class: int = 10
    seed: int = 1234
    evaluator_epochs: int = 15


@dataclass
class FigrConfig:
    """The FIGR baseline: Reptile over an unconditional WGAN-GP, one class per meta-task.

    Defaults are FIGR's published ones (Clouatre and Demers 2019): SGD inner steps at 1e-3 on 4
    images of one class, Adam outer steps at 1e-4, z of size 100; ``adapt_steps`` inner steps on
    a new class's K images give its generator.
    """

    meta_steps: int = 3000
    task_images: int = 4
    inner_steps: int = 10
    inner_lr: float = 1e-3
    outer_lr: float = 1e-4
    z_dim: int = 100
    adapt_steps: int = 10


@dataclass
class FinetuneConfig:
    """The fine-tuning baseline: every weight of the pretrained GAN trained on the support set,
    by default without augmentation (``augment``, as ``adapt.augment``)."""

    steps: int = 300
    lr: float = 2e-4
    augment: str = ""


@dataclass
class ScratchConfig:
    """The from-scratch baseline: the conditional GAN trained on the support set alone."""

    steps: int = 600


@dataclass
class FewshotConfig:
    """The few-shot classification benchmark (``mtgan fewshot``): a classifier of the test
    tasks trained on the K shots with or without M generated images per class.

    ``generated``: the candidates for M, each condition's M chosen on ``validation_tasks``
    tasks of the validation classes; ``backbone_epochs``: epochs of the feature extractor
    trained on the training classes; ``flip``: mirror images left-right in the classic
    augmentation (natural images, not characters).
    """

    generated: list[int] = field(default_factory=lambda: [10, 25, 50])
    validation_tasks: int = 10
    backbone_epochs: int = 10
    flip: bool = False


@dataclass
class Config:
    """The whole run."""

    seed: int = 0
    device: Device = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    figr: FigrConfig = field(default_factory=FigrConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    scratch: ScratchConfig = field(default_factory=ScratchConfig)
    fewshot: FewshotConfig = field(default_factory=FewshotConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Config:
        """Build and validate a config from nested dicts; missing keys keep their defaults."""
        cfg = _build(cls, values, "")
        validate(cfg)
        return cfg


QUICK = {
    "data.per_class": 16,
    "model.g_width": 16,
    "model.d_width": 16,
    "task.k_shot": 5,
    "pretrain.steps": 150,
    "pretrain.batch_size": 32,
    "pretrain.bn_calibration_batches": 4,
    "pretrain.checkpoint_every": 25,
    "meta.steps": 8,
    "meta.meta_batch": 2,
    "meta.inner_steps": 3,
    "meta.checkpoint_every": 2,
    "adapt.steps": 20,
    "adapt.checkpoint_every": 5,
    "eval.tasks": 2,
    "eval.samples_per_class": 6,
    "eval.evaluator_epochs": 2,
    "figr.meta_steps": 10,
    "figr.adapt_steps": 3,
    "finetune.steps": 10,
    "scratch.steps": 20,
    "fewshot.generated": [4, 8],
    "fewshot.validation_tasks": 2,
    "fewshot.backbone_epochs": 1,
}
"""Overrides of ``--quick``: the whole pipeline on a tiny budget (well under a minute)."""


def load_config(
    path: str | os.PathLike | None = None, overrides: list[str] | None = None, quick: bool = False
) -> Config:
    """Defaults, then the YAML file, then ``--quick``'s budget, then ``key=value`` overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        values = _read_yaml(Path(path))
    if quick:
        for key, value in QUICK.items():
            _set_dotted(values, key, value)
    for item in overrides or []:
        _apply_override(values, item)
    return Config.from_dict(values)


def with_overrides(cfg: Config, overrides: list[str]) -> Config:
    """A validated copy of ``cfg`` with ``key=value`` overrides applied."""
    values = cfg.to_dict()
    for item in overrides:
        _apply_override(values, item)
    return Config.from_dict(values)


def _apply_override(values: dict[str, Any], item: str) -> None:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value, got {item!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise ConfigError(f"--set {key.strip()}: {raw!r} is not a valid value") from None
    _set_dotted(values, key.strip(), value)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}".splitlines()[0]) from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections")
    return values


def _set_dotted(values: dict[str, Any], key: str, value: Any) -> None:
    *sections, leaf = key.split(".")
    node = values
    for section in sections:
        node = node.setdefault(section, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set {key!r}: {section!r} is not a section")
    node[leaf] = value


def _build(cls: type, values: Any, where: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(_unknown_key_message(where + str(key), names, where))
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, f"{where}{key}.")
        else:
            kwargs[key] = _coerce(value, hint, where + key)
    return cls(**kwargs)


def _unknown_key_message(key: str, names: list[str], where: str) -> str:
    leaf = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(leaf, names, n=1)
    hint = f"did you mean '{where}{close[0]}'? " if close else ""
    valid = ", ".join(where + n for n in names)
    return f"unknown config key {key!r}; {hint}valid keys: {valid}"


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check (and where harmless, convert) a value against its annotated type."""
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        if value not in allowed(hint) or type(value) not in {type(a) for a in allowed(hint)}:
            raise ConfigError(f"{key} must be one of {list(allowed(hint))}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
        origin = typing.get_origin(hint)
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        with contextlib.suppress(ValueError):
            return float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
    if hint is str and isinstance(value, str | int) and not isinstance(value, bool):
        return str(value)  # class names such as MNIST's 7 may come as YAML numbers
    if hint is str and value is None:
        return ""  # `--set adapt.augment=` (nothing after =) switches a list of names off
    raise ConfigError(f"{key} must be {hint.__name__}, got {value!r}")


POSITIVE = (
    "data.image_size",
    "data.per_class",
    "model.z_dim",
    "model.g_width",
    "model.d_width",
    "task.n_way",
    "task.k_shot",
    "task.q_query",
    "pretrain.steps",
    "pretrain.batch_size",
    "pretrain.lr",
    "meta.meta_batch",
    "meta.inner_steps",
    "meta.inner_lr",
    "meta.outer_lr",
    "meta.rate_lr",
    "adapt.steps",
    "adapt.lr",
    "eval.tasks",
    "eval.samples_per_class",
    "eval.evaluator_epochs",
    "figr.meta_steps",
    "figr.task_images",
    "figr.inner_steps",
    "figr.inner_lr",
    "figr.outer_lr",
    "figr.z_dim",
    "figr.adapt_steps",
    "finetune.steps",
    "finetune.lr",
    "scratch.steps",
    "fewshot.validation_tasks",
    "fewshot.backbone_epochs",
    "meta.validate_tasks",
)
NON_NEGATIVE = (
    "data.validation_classes",
    "data.train_per_class",
    "meta.validate_every",
    "meta.steps",
    "pretrain.bn_calibration_batches",
    "pretrain.r1",
    "pretrain.mode_seeking",
    "adapt.ss_lr",
    "adapt.mode_seeking",
    "pretrain.checkpoint_every",
    "meta.checkpoint_every",
    "adapt.checkpoint_every",
    "speed.tasks_at_once",
)
SEEDS = ("seed", "data.split_seed", "eval.seed")
MAX_SEED = 2**63 - 1


ADDED_LATER = {"model.spectral_norm": False, "data.train_per_class": 0}
"""Settings added after pretrained models were first cached and state files first keyed on
their sections, each with the value that computes what was computed before it existed."""


def keyed(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` (sections as nested dicts) without the :data:`ADDED_LATER` entries that hold
    their earlier value: a cache key or state identity from before they existed still matches.

    Example:
        >>> keyed({"model": {"z_dim": 64, "spectral_norm": False}, "seed": 0})
        {'model': {'z_dim': 64}, 'seed': 0}
    """
    out = {}
    for section, part in settings.items():
        if isinstance(part, dict):
            part = {
                k: v
                for k, v in part.items()
                if f"{section}.{k}" not in ADDED_LATER or ADDED_LATER[f"{section}.{k}"] != v
            }
        out[section] = part
    return out


def get(cfg: Config, key: str) -> Any:
    """The value of a dotted key, for example ``get(cfg, "task.n_way")``."""
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def validate(cfg: Config) -> None:
    """Raise ConfigError naming the first out-of-range value."""
    _check_finite(cfg.to_dict(), "")
    for key in POSITIVE:
        if not get(cfg, key) > 0:
            raise ConfigError(f"{key} must be greater than 0, got {get(cfg, key)!r}")
    for key in NON_NEGATIVE:
        if get(cfg, key) < 0:
            raise ConfigError(f"{key} must be 0 or more, got {get(cfg, key)!r}")
    for key in SEEDS:
        if not 0 <= get(cfg, key) <= MAX_SEED:
            raise ConfigError(f"{key} must be between 0 and 2**63 - 1, got {get(cfg, key)}")
    for key in ("pretrain.augment", "adapt.augment", "finetune.augment"):
        try:
            parse_policies(get(cfg, key))
        except ValueError as e:
            raise ConfigError(f"{key}: {e}") from None
    for key in ("task.q_query", "eval.samples_per_class"):
        if get(cfg, key) < 2:
            raise ConfigError(
                f"{key} must be at least 2 (diversity compares images within a class)"
            )
    if cfg.data.image_size < 8:
        raise ConfigError(f"data.image_size must be at least 8, got {cfg.data.image_size}")
    if len(cfg.pretrain.betas) != 2 or not all(0 <= b < 1 for b in cfg.pretrain.betas):
        raise ConfigError(f"pretrain.betas must be two numbers in [0, 1), got {cfg.pretrain.betas}")
    if not 0 <= cfg.meta.head_step <= 1:
        raise ConfigError(f"meta.head_step must be in [0, 1], got {cfg.meta.head_step}")
    if not 0 <= cfg.pretrain.ema < 1:
        raise ConfigError(f"pretrain.ema must be in [0, 1), got {cfg.pretrain.ema}")
    if cfg.pretrain.mode_seeking and cfg.pretrain.batch_size % 2:
        raise ConfigError(
            f"pretrain.batch_size must be even with pretrain.mode_seeking (pairs of one class), "
            f"got {cfg.pretrain.batch_size}"
        )
    if not cfg.fewshot.generated or min(cfg.fewshot.generated) < 1:
        raise ConfigError(
            f"fewshot.generated must list numbers of at least 1, got {cfg.fewshot.generated}"
        )
    fractions = cfg.data.split_fractions
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ConfigError(
            f"data.split_fractions must be three positive numbers summing to 1, got {fractions}"
        )


def _check_finite(values: dict[str, Any], where: str) -> None:
    """Refuse NaN and infinite numbers anywhere in the config."""
    for key, value in values.items():
        items = value if isinstance(value, list) else [value]
        if isinstance(value, dict):
            _check_finite(value, f"{where}{key}.")
        elif any(isinstance(v, float) and not math.isfinite(v) for v in items):
            raise ConfigError(f"{where}{key} must be a finite number, got {value!r}")
