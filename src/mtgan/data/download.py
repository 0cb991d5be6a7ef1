"""Download the datasets that have public URLs, resumably and verified.

Each file goes to ``<root>/<filename>.part`` first. An interrupted download keeps its part and
the next call resumes it with an HTTP ``Range`` request; only a part whose digest matches the
published one is renamed to its final name, so a file under the final name is always whole.
Tarballs are then extracted, member names checked first, through a temporary folder inside
``root``. Only the standard library is used (``urllib``).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from mtgan.errors import DataError

CHUNK = 1 << 16
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
HTML_STARTS = (b"<!doctype html", b"<html")

Progress = Callable[[str, int, int | None], None]
"""Called as ``progress(filename, bytes_so_far, total_bytes_or_None)`` while downloading."""


@dataclass(frozen=True)
class Source:
    """One file of a dataset: where it lives and the digest it must have.

    Args:
        url: Where to download it from.
        filename: Its name inside the dataset's folder.
        sha256: Its published SHA-256 hex digest, if known.
        md5: Its published MD5 hex digest, if known (used when no SHA-256 is given).
    """

    url: str
    filename: str
    sha256: str | None = None
    md5: str | None = None

    @property
    def digest(self) -> tuple[str, str] | None:
        """``(algorithm, hex digest)`` to check the file against, or None when unknown."""
        if self.sha256:
            return "sha256", self.sha256.lower()
        if self.md5:
            return "md5", self.md5.lower()
        return None


def _mirror(base: str, files: dict[str, str]) -> list[Source]:
    return [Source(base + name, name, md5=md5) for name, md5 in files.items()]


OMNIGLOT_BASE = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/"
MNIST_BASE = "https://ossci-datasets.s3.amazonaws.com/mnist/"
FASHION_MNIST_BASE = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
KMNIST_BASE = "http://codh.rois.ac.jp/kmnist/dataset/kmnist/"
CIFAR_BASE = "https://www.cs.toronto.edu/~kriz/"

SOURCES: dict[str, list[Source]] = {
    "omniglot": _mirror(
        OMNIGLOT_BASE,
        {
            "images_background.zip": "68d2efa1b9178cc56df9314c21c6e718",
            "images_evaluation.zip": "6b91aef0f799c5bb55b94e3f2daec811",
        },
    ),
    "mnist": _mirror(
        MNIST_BASE,
        {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
    "fashion-mnist": _mirror(
        FASHION_MNIST_BASE,
        {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    ),
    "kmnist": _mirror(
        KMNIST_BASE,
        {
            "train-images-idx3-ubyte.gz": "bdb82020997e1d708af4cf47b453dcf7",
            "train-labels-idx1-ubyte.gz": "e144d726b3acfaa3e44228e80efcd344",
            "t10k-images-idx3-ubyte.gz": "5c965bf0a639b31b8f53240b1b52f4d7",
            "t10k-labels-idx1-ubyte.gz": "7320c461ea6c1c855c0b718fb2a4b134",
        },
    ),
    "cifar10": _mirror(CIFAR_BASE, {"cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"}),
    "cifar100": _mirror(
        CIFAR_BASE, {"cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85"}
    ),
}
"""Downloadable datasets. The MNIST-like sets share file names: give each its own ``root``."""


def download(
    name: str, root: str | os.PathLike, *, progress: Progress | None = None, timeout: float = 60
) -> list[Path]:
    """Download (or resume, or just verify) every file of dataset ``name`` into ``root``.

    Args:
        name: A key of :data:`SOURCES`.
        root: The folder for this dataset's files; created if missing.
        progress: Optional callback, see :data:`Progress`.
        timeout: Seconds a connection may stay silent before the download counts as interrupted.

    Returns:
        The paths of the verified files, in the order of the dataset's sources.
    """
    if name not in SOURCES:
        raise DataError(f"no download for dataset {name!r}; downloadable: {', '.join(SOURCES)}")
    return download_sources(SOURCES[name], root, progress=progress, timeout=timeout)


def download_sources(
    sources: Iterable[Source],
    root: str | os.PathLike,
    *,
    progress: Progress | None = None,
    timeout: float = 60,
) -> list[Path]:
    """Download (or resume, or just verify) ``sources`` into ``root``; extract tarballs.

    Args:
        sources: The files to fetch.
        root: The folder to put them in; created if missing.
        progress: Optional callback, see :data:`Progress`.
        timeout: Seconds a connection may stay silent before the download counts as interrupted.

    Returns:
        The paths of the verified files, in the order of ``sources``.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for source in sources:
        path = _fetch(source, root, progress, timeout)
        if source.filename.endswith(ARCHIVE_SUFFIXES):
            extract_tarball(path, root)
        paths.append(path)
    return paths


class _HtmlServed(Exception):
    """The server answered with a web page (a login, quota or error page), not the file."""


def _fetch(source: Source, root: Path, progress: Progress | None, timeout: float) -> Path:
    """Make ``root/source.filename`` a verified copy of ``source``, downloading what's missing."""
    final = root / source.filename
    if final.is_file() and _matches(final, source):
        return final
    part = root / f"{source.filename}.part"
    offset = part.stat().st_size if part.is_file() else 0
    try:
        _receive(source, part, offset, progress, timeout)
    except _HtmlServed as err:
        part.unlink(missing_ok=True)
        raise DataError(
            f"{source.url} served an HTML page instead of the file ({source.filename}, {err}); "
            f"download it by hand into {root}"
        ) from None
    except urllib.error.HTTPError as err:
        if not (err.code == 416 and offset):
            raise DataError(
                f"{source.url} answered HTTP {err.code} {err.reason}; "
                f"download {source.filename} by hand into {root}"
            ) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as e:
        reason = str(getattr(e, "reason", e)) or type(e).__name__
        raise DataError(
            f"download of {source.filename} from {source.url} was interrupted ({reason}); "
            f"rerun to resume it ({part} is kept)"
        ) from None
    _verify_part(part, source)
    os.replace(part, final)
    return final


def _receive(
    source: Source, part: Path, offset: int, progress: Progress | None, timeout: float
) -> None:
    """Append the rest of ``source`` to ``part``, or rewrite it when the server starts over.

    A 416 answer to the range request comes out as :class:`urllib.error.HTTPError`; a body
    shorter than its Content-Length as :class:`http.client.IncompleteRead`.
    """
    request = urllib.request.Request(source.url, headers={"Accept-Encoding": "identity"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        if response.status != 206:
            offset = 0  # the server ignored the range: start over
        content_type = response.headers.get("Content-Type", "")
        if "text/html" in content_type.lower():
            raise _HtmlServed(f"Content-Type {content_type}")
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None

        def report(done: int) -> None:
            if progress is not None:
                progress(source.filename, done, total)

        done = _stream(response, part, offset, report)
    if total is not None and done < total:
        raise http.client.IncompleteRead(b"", total - done)


def _stream(
    response: http.client.HTTPResponse, part: Path, offset: int, report: Callable[[int], None]
) -> int:
    """Write ``response``'s body to ``part`` from byte ``offset``; returns the part's size."""
    chunk = response.read(CHUNK)
    if offset == 0 and chunk.lstrip()[:16].lower().startswith(HTML_STARTS):
        raise _HtmlServed("the body is an HTML document")
    done = offset
    with open(part, "ab" if offset else "wb") as f:
        try:
            while chunk:
                f.write(chunk)
                done += len(chunk)
                report(done)
                chunk = response.read(CHUNK)
        finally:
            f.flush()
            os.fsync(f.fileno())
    return done


def _verify_part(part: Path, source: Source) -> None:
    """Raise, deleting ``part``, unless it has ``source``'s published digest."""
    if source.digest is None:
        return
    algorithm, expected = source.digest
    got = file_digest(part, algorithm)
    if got != expected:
        part.unlink()
        raise DataError(
            f"{source.filename} from {source.url} is damaged: {algorithm} expected {expected}, "
            f"got {got}; the partial file was deleted, rerun to download it again"
        )


def _matches(path: Path, source: Source) -> bool:
    """Whether ``path`` has ``source``'s digest (any file does when none is known)."""
    if source.digest is None:
        return True
    algorithm, expected = source.digest
    return file_digest(path, algorithm) == expected


def file_digest(path: str | os.PathLike, algorithm: str) -> str:
    """The hex digest of the file at ``path``.

    Args:
        path: The file to hash.
        algorithm: A :mod:`hashlib` name such as ``"sha256"`` or ``"md5"``.
    """
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def extract_tarball(archive: str | os.PathLike, root: str | os.PathLike) -> None:
    """Extract ``archive`` into ``root`` unless its top-level entries are all there already.

    Every member is checked first: absolute paths, ``..``, links and devices are refused. The
    members go to a temporary folder inside ``root`` and each top-level entry is then renamed
    into place, so ``root`` never holds a half-extracted folder.

    Args:
        archive: A (possibly compressed) tar file.
        root: The folder to extract into.
    """
    archive, root = Path(archive), Path(root)
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            tops = {_checked_top(archive, m) for m in members}
            if all((root / top).exists() for top in tops):
                return
            tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{archive.name}."))
            try:
                tar.extractall(tmp, members=members, filter="data")
                for top in tops:
                    if not (root / top).exists():
                        os.replace(tmp / top, root / top)
            finally:
                shutil.rmtree(tmp)
    except (tarfile.TarError, EOFError, OSError) as err:
        raise DataError(f"cannot extract {archive}: {err}") from None


def _checked_top(archive: Path, member: tarfile.TarInfo) -> str:
    """The top-level entry that ``member`` belongs to; raises for an unsafe member."""
    parts = PurePosixPath(member.name).parts
    unsafe = (
        not parts
        or PurePosixPath(member.name).is_absolute()
        or ".." in parts
        or not (member.isfile() or member.isdir())
    )
    if unsafe:
        raise DataError(
            f"refusing to extract {archive}: member {member.name!r} is a link or device, "
            "or points outside the folder"
        )
    return parts[0]
