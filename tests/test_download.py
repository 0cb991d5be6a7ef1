"""Resumable, verified downloads against a small HTTP server on the loopback address."""

from __future__ import annotations

import hashlib
import http.server
import io
import socket
import tarfile
import threading

import pytest

from mtgan.data import download as dl
from mtgan.data.download import Source, download, download_sources, file_digest
from mtgan.errors import DataError

PAYLOAD = bytes(range(256)) * 400  # 100 KiB, more than one chunk
TIMEOUT = 5


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files``; ``server.modes`` makes a path misbehave (see ``Server``)."""

    def do_GET(self):
        srv = self.server
        srv.seen.append((self.path, self.headers.get("Range")))
        body = srv.files.get(self.path)
        if body is None:
            return self._send(404, b"not found", "text/plain")
        mode = srv.modes.get(self.path)
        if mode == "html":
            return self._send(200, b"<!DOCTYPE html><p>quota exceeded</p>", "text/html")
        start = _range_start(self.headers.get("Range"))
        if mode == "ignore-range" or start is None:
            start = 0
            status = 200
        elif start >= len(body):
            return self._send(416, b"", "text/plain")
        else:
            status = 206
        if mode == "cut-once":
            srv.modes.pop(self.path)
            return self._send(status, body[start:], cut=(len(body) - start) // 2)
        return self._send(status, body[start:])

    def _send(self, status, body, content_type="application/octet-stream", cut=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[:cut])
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        """Keep the test output quiet."""


def _range_start(header):
    if header is None:
        return None
    return int(header.removeprefix("bytes=").split("-")[0])


class Server:
    """A loopback HTTP server with the files a test puts in ``files``.

    ``modes[path]`` can be ``"html"`` (answer a web page), ``"ignore-range"`` (always answer
    200 with the whole body) or ``"cut-once"`` (send half the body, then close, once).
    ``seen`` lists ``(path, Range header)`` of every request.
    """

    def __init__(self):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.files, self.httpd.modes, self.httpd.seen = {}, {}, []
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def source(self, name, data, mode=None, digest="md5"):
        """Serve ``data`` as ``/name`` and return a Source for it with its ``digest``."""
        self.httpd.files[f"/{name}"] = data
        if mode:
            self.httpd.modes[f"/{name}"] = mode
        url = f"http://127.0.0.1:{self.httpd.server_port}/{name}"
        return Source(url, name, **{digest: hashlib.new(digest, data).hexdigest()})

    @property
    def seen(self):
        return self.httpd.seen

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(TIMEOUT)


@pytest.fixture
def server():
    srv = Server()
    yield srv
    srv.close()


def fetch(sources, root, **kwargs):
    return download_sources(sources, root, timeout=TIMEOUT, **kwargs)


@pytest.mark.parametrize("digest", ["md5", "sha256"])
def test_good_file_is_verified_and_renamed(server, tmp_path, digest):
    source = server.source("a.bin", PAYLOAD, digest=digest)
    calls = []
    (path,) = fetch([source], tmp_path, progress=lambda *a: calls.append(a))
    assert path == tmp_path / "a.bin"
    assert path.read_bytes() == PAYLOAD
    assert not (tmp_path / "a.bin.part").exists()
    assert calls[-1] == ("a.bin", len(PAYLOAD), len(PAYLOAD))


def test_verified_file_is_not_downloaded_again(server, tmp_path):
    source = server.source("a.bin", PAYLOAD)
    fetch([source], tmp_path)
    fetch([source], tmp_path)
    assert len(server.seen) == 1


def test_damaged_final_file_is_downloaded_again(server, tmp_path):
    source = server.source("a.bin", PAYLOAD)
    (tmp_path / "a.bin").write_bytes(b"stale")
    fetch([source], tmp_path)
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD


@pytest.mark.parametrize("mode", ["html", "html-body"])
def test_html_page_is_refused(server, tmp_path, mode):
    if mode == "html":
        source = server.source("a.bin", PAYLOAD, mode="html")
    else:
        source = server.source("a.bin", b"\n  <!DOCTYPE html><title>Sign in</title>")
    with pytest.raises(DataError, match="served an HTML page instead of the file") as err:
        fetch([source], tmp_path)
    assert str(tmp_path) in str(err.value)
    assert sorted(tmp_path.iterdir()) == []


def test_wrong_checksum_names_both_digests(server, tmp_path):
    good = server.source("a.bin", PAYLOAD)
    bad = Source(good.url, good.filename, md5="0" * 32)
    with pytest.raises(DataError) as err:
        fetch([bad], tmp_path)
    message = str(err.value)
    assert "a.bin" in message and "0" * 32 in message and good.md5 in message
    assert sorted(tmp_path.iterdir()) == []


def test_cut_connection_keeps_part_and_resumes_with_range(server, tmp_path):
    source = server.source("a.bin", PAYLOAD, mode="cut-once")
    part = tmp_path / "a.bin.part"
    with pytest.raises(DataError, match="interrupted.*rerun to resume"):
        fetch([source], tmp_path)
    assert part.read_bytes() == PAYLOAD[: len(PAYLOAD) // 2]
    assert not (tmp_path / "a.bin").exists()
    (path,) = fetch([source], tmp_path)
    assert server.seen[-1] == ("/a.bin", f"bytes={len(PAYLOAD) // 2}-")
    assert file_digest(path, "md5") == source.md5
    assert not part.exists()


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    source = server.source("a.bin", PAYLOAD, mode="ignore-range")
    (tmp_path / "a.bin.part").write_bytes(b"junk that must not stay in front")
    (path,) = fetch([source], tmp_path)
    assert server.seen == [("/a.bin", "bytes=32-")]
    assert path.read_bytes() == PAYLOAD


def test_complete_part_answered_416_is_verified(server, tmp_path):
    source = server.source("a.bin", PAYLOAD)
    (tmp_path / "a.bin.part").write_bytes(PAYLOAD)
    (path,) = fetch([source], tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert server.seen == [("/a.bin", f"bytes={len(PAYLOAD)}-")]


def test_missing_file_is_a_data_error(server, tmp_path):
    source = server.source("a.bin", PAYLOAD)
    missing = Source(source.url.replace("a.bin", "nope"), "nope", md5=source.md5)
    with pytest.raises(DataError, match="HTTP 404.*by hand"):
        fetch([missing], tmp_path)
    assert not (tmp_path / "nope").exists()


def test_refused_connection_is_an_interruption(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    source = Source(f"http://127.0.0.1:{port}/a.bin", "a.bin")
    with pytest.raises(DataError, match="interrupted"):
        fetch([source], tmp_path)


def _tarball(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_tarball_is_extracted(server, tmp_path):
    archive = _tarball({"set/data_1": b"one", "set/meta": b"two"})
    source = server.source("set.tar.gz", archive)
    fetch([source], tmp_path)
    assert (tmp_path / "set" / "data_1").read_bytes() == b"one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set", "set.tar.gz"]


def test_tarball_escaping_root_is_refused(server, tmp_path):
    root = tmp_path / "root"
    source = server.source("evil.tar.gz", _tarball({"ok/a": b"a", "../evil": b"x"}))
    with pytest.raises(DataError, match="refusing to extract.*evil"):
        fetch([source], root)
    assert not (tmp_path / "evil").exists()
    assert sorted(p.name for p in root.iterdir()) == ["evil.tar.gz"]


def test_tarball_with_symlink_is_refused(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        link = tarfile.TarInfo("set/passwd")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    (tmp_path / "x.tar").write_bytes(buf.getvalue())
    with pytest.raises(DataError, match="link"):
        dl.extract_tarball(tmp_path / "x.tar", tmp_path)
    assert not (tmp_path / "set").exists()


def test_download_by_name_uses_sources(server, tmp_path, monkeypatch):
    source = server.source("train-images-idx3-ubyte.gz", PAYLOAD)
    monkeypatch.setitem(dl.SOURCES, "mnist", [source])
    assert download("mnist", tmp_path, timeout=TIMEOUT) == [tmp_path / source.filename]


def test_unknown_dataset_lists_names(tmp_path):
    with pytest.raises(DataError, match="omniglot.*cifar100"):
        download("imagenet", tmp_path)


def test_sources_are_well_formed():
    assert set(dl.SOURCES) == {
        "omniglot",
        "mnist",
        "fashion-mnist",
        "kmnist",
        "cifar10",
        "cifar100",
    }
    for sources in dl.SOURCES.values():
        for source in sources:
            assert source.url.endswith("/" + source.filename)
            algorithm, digest = source.digest
            assert len(digest) == hashlib.new(algorithm).digest_size * 2
            int(digest, 16)
