"""Datasets: every loader returns a :class:`ClassDataset`; episodes sample tasks from them."""

from __future__ import annotations

from mtgan.config import DataConfig
from mtgan.data.base import ClassDataset
from mtgan.data.episodes import EpisodeSampler, Task, split_classes
from mtgan.errors import DataError

DATASETS = ("glyphs", "folder")

__all__ = ["ClassDataset", "EpisodeSampler", "Task", "load", "load_splits", "split_classes"]


def load(name: str, root: str | None = None, image_size: int = 32, channels: int = 1, **kw):
    """A dataset by name, conformed to ``image_size`` and ``channels``.

    Example:
        >>> ds = load("glyphs", image_size=32)  # doctest: +SKIP
    """
    if name == "glyphs":
        from mtgan.data.glyphs import load_glyphs

        ds = load_glyphs(image_size=image_size, per_class=kw.get("per_class", 20))
    elif name == "folder":
        from mtgan.data.folder import load_folder

        if root is None:
            raise DataError("dataset 'folder' needs data.root: a folder of class subfolders")
        ds = load_folder(root, image_size, channels)
    else:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return ds.conformed(image_size, channels)


def load_splits(cfg: DataConfig) -> dict[str, ClassDataset]:
    """The train, validation and test classes of the configured dataset (disjoint)."""
    ds = load(cfg.name, cfg.root, cfg.image_size, cfg.channels, per_class=cfg.per_class)
    parts = split_classes(ds.classes, cfg.split_fractions, cfg.split_seed)
    return {
        name: ds.subset(p) for name, p in zip(("train", "validation", "test"), parts, strict=True)
    }
