"""Safe reading of downloaded dataset files: pickles that may only rebuild arrays, HTML sniffing.

The published few-shot datasets (CIFAR batches, FC100 / CIFAR-FS pickles, the miniImageNet
cache) are Python pickles, and unpickling runs whatever callable the file names. A restricted
unpickler admits only the few numpy callables that rebuild arrays (``_reconstruct``,
``ndarray``, ``dtype``, ``scalar``, ``_frombuffer`` for protocol 5) and ``_codecs.encode``
(how protocol 2 stores ``bytes``), so a tampered file is refused instead of executed.

Files are read with ``encoding="latin1"``: Python 2 pickles (the original CIFAR batches and
most meta-learning pickles) then load, and their numpy arrays keep their raw bytes. Dict keys
that come back as ``bytes`` (files written by Python 3 with bytes keys) are decoded to ``str``.
"""

from __future__ import annotations

import os
import pickle
import zipfile
import zlib
from pathlib import Path

from mtgan.errors import DataError

_NUMPY_ARRAY_CALLABLES = {"_reconstruct", "scalar", "_frombuffer", "ndarray", "dtype"}
_NUMPY_MODULES = {
    "numpy",
    "numpy.core.multiarray",
    "numpy._core.multiarray",
    "numpy.core.numeric",
    "numpy._core.numeric",
}
_OTHER_ALLOWED = {("_codecs", "encode"), ("collections", "OrderedDict")}

#: Exceptions that mean a file is cut short or not what its name says.
CORRUPT_ERRORS = (
    EOFError,
    pickle.UnpicklingError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    OverflowError,
    NotImplementedError,  # a zip member with an unknown compression method
    zipfile.BadZipFile,
    zlib.error,
)

_HTML_PREFIXES = (b"<!doctype html", b"<html")


def require_file(path: str | os.PathLike) -> Path:
    """The path, checked to be an existing file that is not an HTML page.

    Args:
        path: the file a loader is about to read.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a folder, not a file; point to the dataset's file")
    if not path.is_file():
        raise DataError(f"{path} does not exist; download the dataset and point to its folder")
    check_not_html(path)
    return path


def require_folder(path: str | os.PathLike, what: str, fix: str) -> Path:
    """The path, checked to be an existing folder; ``what`` names it and ``fix`` says what to
    do when it does not exist (a file where a folder is needed gets its own message)."""
    path = Path(path)
    if path.is_file():
        raise DataError(f"{what} {path} is a file, not a folder; give the folder that holds it")
    if not path.is_dir():
        raise DataError(f"{what} {path} does not exist; {fix}")
    return path


def check_not_html(path: str | os.PathLike) -> None:
    """Raise DataError when the file starts like an HTML page (a failed download).

    Args:
        path: the file to sniff; only its first bytes are read.
    """
    with open(path, "rb") as f:
        head = f.read(512).lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(_HTML_PREFIXES):
        raise DataError(
            f"{path} is an HTML page, not the dataset (a failed download, "
            "e.g. a Google Drive quota page); download it again"
        )


def corrupt(path: str | os.PathLike) -> DataError:
    """The error for a file that is truncated or not in the expected format."""
    return DataError(f"{path} is truncated or corrupt; download it again")


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the callables numpy arrays need."""

    def __init__(self, file, path: Path):
        super().__init__(file, encoding="latin1")
        self._path = path

    def find_class(self, module: str, name: str):
        numpy_ok = module in _NUMPY_MODULES and name in _NUMPY_ARRAY_CALLABLES
        if not numpy_ok and (module, name) not in _OTHER_ALLOWED:
            raise DataError(
                f"{self._path}: refusing to unpickle {module}.{name} (a dataset pickle may only "
                "hold arrays, dicts, lists, strings and numbers)"
            )
        if module.startswith("numpy.core."):
            module = _current_numpy_core(module)
        return super().find_class(module, name)


def _current_numpy_core(module: str) -> str:
    """numpy 2 renamed ``numpy.core`` to ``numpy._core``; map old names without warnings."""
    import numpy as np

    if int(np.__version__.split(".")[0]) >= 2:
        return "numpy._core." + module.removeprefix("numpy.core.")
    return module


def safe_load_pickle(path: str | os.PathLike) -> object:
    """Unpickle a dataset file that may hold only arrays, dicts, lists, strings and numbers.

    Args:
        path: the pickle file.

    Returns:
        The unpickled object, with ``bytes`` dict keys decoded to ``str`` (recursively).
    """
    path = require_file(path)
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, path).load()
    except DataError:
        raise
    except CORRUPT_ERRORS:
        raise corrupt(path) from None
    except MemoryError:  # a corrupt length field asks for more memory than the file could fill
        raise DataError(f"{path} is corrupt or too large to load; download it again") from None
    return _str_keys(obj)


def _str_keys(obj: object) -> object:
    """Decode bytes dict keys to str, in nested dicts too."""
    if isinstance(obj, dict):
        return {_to_str(k): _str_keys(v) for k, v in obj.items()}
    return obj


def _to_str(key: object) -> object:
    return key.decode("latin1") if isinstance(key, bytes) else key
