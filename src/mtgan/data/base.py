"""The interface every dataset loader returns: images grouped by class."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from mtgan.errors import DataError


class ClassDataset:
    """Images grouped by class, each class a uint8 tensor of shape (n, C, H, W).

    Args:
        name: the dataset's name, for messages.
        images: class name -> uint8 array or tensor (n, C, H, W) or (n, H, W).

    Example:
        >>> ds = ClassDataset("toy", {"a": np.zeros((3, 8, 8), np.uint8)})
        >>> ds.classes, len(ds), tuple(ds.images_of("a").shape)
        (['a'], 3, (3, 1, 8, 8))
    """

    def __init__(self, name: str, images: Mapping[str, np.ndarray | torch.Tensor]):
        self.name = name
        self._images: dict[str, torch.Tensor] = {}
        for cls, arr in images.items():
            t = torch.as_tensor(np.asarray(arr))
            if t.dtype != torch.uint8:
                raise DataError(f"{name}: class {cls!r} has dtype {t.dtype}, expected uint8")
            if t.ndim == 3:
                t = t.unsqueeze(1)
            if t.ndim != 4:
                raise DataError(
                    f"{name}: class {cls!r} has shape {tuple(t.shape)}, expected (n, C, H, W)"
                )
            self._images[str(cls)] = t
        self.classes: list[str] = list(self._images)

    def __len__(self) -> int:
        return sum(len(t) for t in self._images.values())

    def __repr__(self) -> str:
        return f"ClassDataset({self.name!r}, classes={len(self.classes)}, images={len(self)})"

    def images_of(self, cls: str) -> torch.Tensor:
        """The images of one class, uint8 (n, C, H, W)."""
        try:
            return self._images[cls]
        except KeyError:
            raise DataError(f"{self.name}: no class {cls!r}") from None

    def stacked(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All images (uint8) and their class slots, in ``classes`` order: a support set."""
        images = [self.images_of(c) for c in self.classes]
        labels = [torch.full((len(x),), i) for i, x in enumerate(images)]
        return torch.cat(images), torch.cat(labels)

    def subset(self, classes: Iterable[str]) -> ClassDataset:
        """The same dataset restricted to some classes, in the given order."""
        return ClassDataset(self.name, {c: self.images_of(c) for c in classes})

    def first(self, count: int) -> ClassDataset:
        """The same classes, each with its first ``count`` images (all of a smaller class)."""
        return ClassDataset(self.name, {c: self.images_of(c)[:count] for c in self.classes})

    def conformed(self, image_size: int, channels: int) -> ClassDataset:
        """Every class resized (bilinear, antialiased) to image_size and converted to channels."""
        out = {}
        for cls, t in self._images.items():
            if t.shape[1] != channels:
                t = _convert_channels(t, channels)
            if t.shape[-2:] != (image_size, image_size):
                x = F.interpolate(
                    t.float(), size=(image_size, image_size), mode="bilinear", antialias=True
                )
                t = x.round().clamp(0, 255).to(torch.uint8)
            out[cls] = t
        return ClassDataset(self.name, out)


def _convert_channels(t: torch.Tensor, channels: int) -> torch.Tensor:
    """Grey to colour by repetition, colour to grey by ITU-R 601 luma."""
    if t.shape[1] == 1 and channels == 3:
        return t.expand(-1, 3, -1, -1).contiguous()
    if t.shape[1] == 3 and channels == 1:
        luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (t.float() * luma).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    raise DataError(f"cannot convert {t.shape[1]} channels to {channels}")


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], the generator's tanh range."""
    return images.to(torch.get_default_dtype()).div(127.5).sub(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255]."""
    return images.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)
