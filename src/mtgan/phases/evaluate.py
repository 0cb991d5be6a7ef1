"""Phase (d): score generated images with the external classifier M.

M is trained on the real images of the split being evaluated (a held-out part of every class
measures its accuracy) and cached. For each test task it gives:

- Mode Score (eq. 3) and Inception Score (eq. 2) over the task's N classes (softmax over those N
  logits of M, upper bound N), over all the split's classes, and the same on the task's real
  query images as the ceiling (Che et al.'s original form is left out: it always equals IS);
- class fidelity: the share of images generated for slot y that M assigns to the task's class y;
- FID and KID between generated and real query images in M's penultimate features, and the FID
  between the support and query images as the real-data reference at the same sample sizes;
- diversity: mean pairwise feature distance within a class, generated and real;
- the copy ratio: generated images' pixel distance to their nearest support image over the same
  for the real query images (far below 1: the generator copies its K shots).
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_bytes

from mtgan.config import Config, with_overrides
from mtgan.data.base import ClassDataset, to_uint8
from mtgan.data.episodes import Task, seeded_tasks
from mtgan.files import atomic_write, cache_dir
from mtgan.metrics import (
    Evaluator,
    class_fidelity,
    copy_ratio,
    extract_features,
    features_and_logits,
    frechet_distance,
    inception_score,
    kernel_inception_distance,
    mean_confidence_interval,
    mode_score,
    pairwise_diversity,
    probs_from_logits,
    train_evaluator,
)
from mtgan.metrics.evaluator import stem_stride_for
from mtgan.nn.gan import ConditionalGAN
from mtgan.phases.adapt import adapt, sample
from mtgan.phases.common import noise, place

EVALUATOR_VERSION = 1
WEAK_EVALUATOR = 0.9


def evaluator_for(
    split: ClassDataset, cfg: Config, device: torch.device
) -> tuple[Evaluator, dict[str, Any]]:
    """M for ``split``'s classes: loaded from the cache, or trained and cached.

    The cache key hashes the images, class names and training settings, so a changed dataset or
    setting trains a new M. Warns when M's held-out accuracy is below 90%. The info's
    ``cache`` names the entry inside the cache folder (:func:`mtgan.files.cache_dir`), so that
    results files record no path of the machine that wrote them.
    """
    images, labels = split.stacked()
    settings = {"epochs": cfg.eval.evaluator_epochs, "seed": cfg.seed, "v": EVALUATOR_VERSION}
    digest = hashlib.sha256(images.numpy().tobytes())
    digest.update(json.dumps([split.classes, settings]).encode())
    path = cache_dir() / "evaluators" / f"{digest.hexdigest()[:24]}.safetensors"
    model = Evaluator(len(split.classes), images.shape[1], stem_stride_for(images))
    info = _load_evaluator(model, path)
    if info is None:
        model, info = train_evaluator(
            images,
            labels,
            len(split.classes),
            epochs=cfg.eval.evaluator_epochs,
            seed=cfg.seed,
            device=device,
        )
        info = {k: v for k, v in info.items() if not k.endswith("_indices")}
        tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        atomic_write(path, save_bytes(tensors, metadata={"info": json.dumps(info)}))
    if info["heldout_accuracy"] < WEAK_EVALUATOR:
        warnings.warn(
            f"the evaluator's held-out accuracy is {info['heldout_accuracy']:.1%}, below 90%: "
            "its scores mean little (raise eval.evaluator_epochs)",
            stacklevel=2,
        )
    entry = path.relative_to(cache_dir()).as_posix()
    return model.to(device).eval(), {**info, "cache": entry}


def _load_evaluator(model: Evaluator, path: Path) -> dict[str, Any] | None:
    """The cached M's training info, or None (a missing or unreadable entry is retrained)."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as f:
            info = json.loads(f.metadata()["info"])
            model.load_state_dict({k: f.get_tensor(k) for k in f.keys()})  # noqa: SIM118
    except (SafetensorError, OSError, KeyError, TypeError, ValueError, RuntimeError):
        return None
    return info


def score_task(
    evaluator: Evaluator,
    split_classes: list[str],
    task: Task,
    generated: torch.Tensor,
    generated_labels: torch.Tensor,
) -> dict[str, float]:
    """Every score of one task. Images are uint8; ``generated_labels`` are the task's slots."""
    index = {c: i for i, c in enumerate(split_classes)}
    subset = [index[c] for c in task.classes]
    real, real_labels = task.query, task.query_labels
    gen_f, gen_logits = features_and_logits(evaluator, generated)
    real_f, real_logits = features_and_logits(evaluator, real)
    support_f = extract_features(evaluator, task.support)
    gen_n, real_n = (probs_from_logits(x, subset) for x in (gen_logits, real_logits))
    gen_all, real_all = (probs_from_logits(x) for x in (gen_logits, real_logits))
    slot_to_class = torch.tensor(subset)
    scores = {
        "mode_score": mode_score(gen_n, real_n),
        "inception_score": inception_score(gen_n),
        "real_mode_score": mode_score(real_n, real_n),
        "mode_score_split": mode_score(gen_all, real_all),
        "real_mode_score_split": mode_score(real_all, real_all),
        "fidelity": class_fidelity(gen_n, generated_labels.cpu()),
        "real_fidelity": class_fidelity(real_all, slot_to_class[real_labels]),
        "fid": frechet_distance(gen_f, real_f),
        "real_fid": frechet_distance(support_f, real_f),
        "kid": kernel_inception_distance(gen_f, real_f)[0],
    }
    return scores | _per_class_scores(task, generated, generated_labels, gen_f, real_f)


def _training_tasks(
    train: ClassDataset, cfg: Config, device: torch.device
) -> tuple[list[Task], list[str], Evaluator]:
    """``eval.tasks`` seeded N-way tasks of the training classes, their classes, and M trained
    on those classes."""
    t, e = cfg.task, cfg.eval
    tasks = seeded_tasks(train, t.n_way, t.k_shot, t.q_query, e.seed, e.tasks)
    classes = sorted({c for task in tasks for c in task.classes})
    evaluator, _ = evaluator_for(train.subset(classes), cfg, device)
    return tasks, classes, evaluator


def score_pretrained(
    gan: ConditionalGAN, train: ClassDataset, cfg: Config, device: torch.device
) -> tuple[list[dict[str, float]], tuple[Task, torch.Tensor, torch.Tensor]]:
    """The pretrained G's own images of training classes, scored as a test task's are; and
    the first task with its generated images and their slots (for a grid).

    ``eval.tasks`` seeded N-way tasks of the training classes; M is trained on the classes of
    those tasks; each task's generated images are ``eval.samples_per_class`` samples of its
    classes from the pretrained G (NM's columns of the training classes). FID and diversity
    against the same scores of the real images show what the backbone can draw before any
    adaptation (a weak backbone caps every method built on it).
    """
    tasks, classes, evaluator = _training_tasks(train, cfg, device)
    per_class, seed = cfg.eval.samples_per_class, cfg.eval.seed
    column = {c: i for i, c in enumerate(train.classes)}
    place(gan, device, cfg.speed.channels_last).eval()
    rows, first = [], None
    for k, task in enumerate(tasks):
        slots = torch.arange(task.n_way).repeat_interleave(per_class)
        labels = torch.tensor([column[c] for c in task.classes])[slots]
        z = noise(len(labels), gan.generator.z_dim, torch.Generator().manual_seed(seed + k), device)
        with torch.no_grad():
            fake = to_uint8(gan.generator(z, labels.to(device)).cpu())
        rows.append(score_task(evaluator, classes, task, fake, slots))
        first = first or (task, fake, slots)
    return rows, first


def score_relearned(
    gan: ConditionalGAN, train: ClassDataset, cfg: Config, device: torch.device
) -> list[dict[str, float]]:
    """The tasks of :func:`score_pretrained`, their training classes learned again from their
    K shots: fresh NM and CF (``model.head_init``, as ``frozen`` starts a new task) adapted by
    phase (c) with ``cfg.adapt``, sampled and scored by the same M.

    Against :func:`score_pretrained`'s rows this separates what adaptation from K shots loses
    (IC can draw these classes: NM's pretrained columns do) from what the novelty of test
    classes loses. Each class starts from the mean of the pretrained columns even under
    ``adapt.class_init=nearest``, whose bank would hold the very class.
    """
    tasks, classes, evaluator = _training_tasks(train, cfg, device)
    cfg, e = with_overrides(cfg, ["adapt.class_init=heads"]), cfg.eval
    rows = []
    for k, task in enumerate(tasks):
        fresh = gan.with_fresh_heads(task.n_way, cfg.model.head_init)
        adapted, _ = adapt(fresh, task.support, task.support_labels, cfg, device, e.seed + k)
        rng = torch.Generator().manual_seed(e.seed + k)
        fake, slots = sample(adapted, e.samples_per_class, rng, device)
        rows.append(score_task(evaluator, classes, task, to_uint8(fake.cpu()), slots))
    return rows


def validation_fid(
    validation: ClassDataset, cfg: Config, device: torch.device
) -> Callable[[ConditionalGAN], float]:
    """Meta-training's yardstick (``meta.validate_every``): a function of a meta-model giving
    the mean FID over ``meta.validate_tasks`` fixed seeded tasks of the validation classes, each
    adapted with phase (c) and sampled as a test task is, in the features of M trained on the
    validation classes. Lower is better."""
    t, e = cfg.task, cfg.eval
    tasks = seeded_tasks(validation, t.n_way, t.k_shot, t.q_query, e.seed, cfg.meta.validate_tasks)
    evaluator, _ = evaluator_for(validation, cfg, device)

    def score(gan: ConditionalGAN) -> float:
        fids = []
        for k, task in enumerate(tasks):
            adapted, _ = adapt(gan, task.support, task.support_labels, cfg, device, e.seed + k)
            rng = torch.Generator().manual_seed(e.seed + k)
            fake, slots = sample(adapted, e.samples_per_class, rng, device)
            scores = score_task(evaluator, validation.classes, task, to_uint8(fake.cpu()), slots)
            fids.append(scores["fid"])
        return sum(fids) / len(fids)

    return score


def _per_class_scores(task, generated, generated_labels, gen_f, real_f) -> dict[str, float]:
    """Diversity and copy ratio, averaged over the task's classes."""
    rows = []
    for slot in range(task.n_way):
        g, r = generated_labels.cpu() == slot, task.query_labels == slot
        support = task.support[task.support_labels == slot]
        rows.append(
            {
                "diversity": pairwise_diversity(gen_f[g]),
                "real_diversity": pairwise_diversity(real_f[r]),
                "copy_ratio": copy_ratio(
                    generated[g].float(), support.float(), task.query[r].float()
                ),
            }
        )
    return {k: sum(row[k] for row in rows) / len(rows) for k in rows[0]}


def summarize(per_task: list[dict[str, float]]) -> dict[str, dict[str, float | None]]:
    """Mean and 95% confidence half-width of every score over the tasks."""
    summary = {}
    for key in per_task[0]:
        values = [row[key] for row in per_task if isinstance(row.get(key), int | float)]
        if not values:
            continue
        mean, half = mean_confidence_interval(values)
        summary[key] = {"mean": mean, "ci95": None if math.isnan(half) else half, "n": len(values)}
    return summary
