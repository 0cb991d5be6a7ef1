"""The user's cache folder, shared by the glyph renderings and the evaluators."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$MTGAN_CACHE``, else ``$XDG_CACHE_HOME/mtgan``, else ``~/.cache/mtgan``."""
    if os.environ.get("MTGAN_CACHE"):
        return Path(os.environ["MTGAN_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mtgan"
