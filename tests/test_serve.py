"""``mtgan serve`` as a person and as an attacker meet it: a real headless Chromium uploads two
classes, adapts and downloads the zip; bad uploads, traversal names, size limits, two requests at
once and SIGTERM are answered safely."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import tiny_run

pytest.importorskip("fastapi", reason="the serve extra is not installed")
pytest.importorskip("multipart", reason="the serve extra is not installed")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("serve"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``mtgan serve`` in its own process, on a free port."""

    def __init__(self, run: Path, *extra: str, warnings: str = "ignore"):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONWARNINGS": warnings}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mtgan", "serve", "--run", str(run),
             "--port", str(self.port), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )  # fmt: skip
        for _ in range(300):
            try:
                self.get("/api/info")
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise AssertionError(self.proc.stderr.read().decode()) from None
                time.sleep(0.1)
        raise AssertionError("the server did not start")

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return r.read()

    def status(self, path: str) -> int:
        try:
            self.get(path)
            return 200
        except urllib.error.HTTPError as e:
            return e.code

    def post(
        self, path: str, fields: list[tuple[str, str | tuple[str, bytes]]]
    ) -> tuple[int, dict]:
        """A multipart POST of text fields and (file name, bytes) files."""
        boundary = uuid.uuid4().hex
        body = io.BytesIO()
        for name, value in fields:
            body.write(f"--{boundary}\r\n".encode())
            if isinstance(value, tuple):
                disposition = f'form-data; name="{name}"; filename="{value[0]}"'
                body.write(f"Content-Disposition: {disposition}\r\n".encode())
                body.write(b"Content-Type: application/octet-stream\r\n\r\n" + value[1] + b"\r\n")
            else:
                body.write(f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
                body.write(value.encode() + b"\r\n")
        body.write(f"--{boundary}--\r\n".encode())
        request = urllib.request.Request(
            self.url + path, body.getvalue(), method="POST",
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def wait(self, job: str, timeout: float = 120) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            state = json.loads(self.get(f"/api/jobs/{job}"))
            if state["status"] in ("done", "failed", "stopped"):
                return state
            time.sleep(0.2)
        raise AssertionError(f"job {job} did not finish")

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=20)


@pytest.fixture(scope="module")
def server(run_folder):
    running = Server(run_folder)
    yield running
    running.close()


def _png(seed: int, size: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((np.random.RandomState(seed).rand(size, size) * 255).astype(np.uint8)).save(
        buf, format="PNG"
    )
    return buf.getvalue()


def _two_classes(k: int = 3) -> list:
    fields = []
    for c, name in enumerate(("alpha", "beta")):
        fields.append((f"name_{c}", name))
        fields += [(f"files_{c}", (f"{i}.png", _png(10 * c + i))) for i in range(k)]
    return fields


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (apt-get install chromium)")
def test_a_browser_uploads_adapts_sees_images_and_downloads_the_zip(server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    for c in ("alpha", "beta"):
        (tmp_path / c).mkdir()
        for i in range(3):
            (tmp_path / c / f"{i}.png").write_bytes(_png(100 + i + 10 * len(c)))
    flags = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=flags)
        page = browser.new_page()
        page.goto(server.url)
        for i, c in enumerate(("alpha", "beta")):
            page.fill(f"input[name=name_{i}]", c)
            page.set_input_files(
                f"input[name=files_{i}]", sorted(str(f) for f in (tmp_path / c).iterdir())
            )
        page.fill("#per_class", "4")
        page.click("#adapt")
        page.wait_for_function(
            "document.querySelectorAll('img.generated').length === 8", timeout=120_000
        )
        assert page.locator("img.support").count() == 6
        assert page.locator("#error").inner_text() == ""
        loaded = "[...document.images].every((i) => i.complete && i.naturalWidth > 0)"
        page.wait_for_function(loaded, timeout=30_000)  # every image shown, none broken
        with page.expect_download() as download:
            page.click("#zip")
        saved = tmp_path / "images.zip"
        download.value.save_as(saved)
        browser.close()
    names = zipfile.ZipFile(saved).namelist()
    assert sorted(names) == [f"{c}/{i:04d}.png" for c in ("alpha", "beta") for i in range(4)]


def test_bad_uploads_get_a_message_and_the_server_goes_on(server, run_folder):
    bomb = io.BytesIO()
    Image.new("L", (6000, 6000)).save(bomb, format="PNG")  # 36 megapixels in a small file
    cases = {
        "not a readable image": [("name_0", "a"), ("files_0", ("a.png", b"not an image"))],
        "is empty": [("name_0", "a"), ("files_0", ("a.png", b""))],
        "more than allowed": [("name_0", "a"), ("files_0", ("big.png", bomb.getvalue()))],
        "larger than 10 MB": [("name_0", "a"), ("files_0", ("x.png", b"\0" * (11 * 2**20)))],
        "at most 50 images": [("name_0", "a")]
        + [("files_0", (f"{i}.png", _png(i))) for i in range(51)],
        "has no images": [("name_0", "a")],
        "name of its own": [("name_0", "a"), ("files_0", ("0.png", _png(0))), ("name_1", "a"),
                            ("files_1", ("1.png", _png(1)))],
    }  # fmt: skip
    workspace = run_folder / "adapted"
    before = sorted(p.name for p in workspace.iterdir())
    for words, fields in cases.items():
        status, body = server.post("/api/adapt", fields)
        assert status == 400 and words in body["error"], (words, body)
    assert sorted(p.name for p in workspace.iterdir()) == before  # nothing written
    assert server.status("/api/info") == 200


def test_names_from_requests_never_leave_the_workspace(server, run_folder):
    fields = [("name_0", "../../escape"), ("files_0", ("../../../../x.png", _png(1)))]
    fields += [("name_1", "ok"), ("files_1", ("/etc/passwd.png", _png(2)))]
    status, body = server.post("/api/adapt", fields)
    assert status == 200, body
    assert server.wait(body["job"])["status"] == "done"
    folder = run_folder / "adapted" / body["job"]
    classes = sorted(p.name for p in (folder / "support").iterdir())
    assert len(classes) == 2 and not any(c.startswith(".") or "/" in c for c in classes)
    for path in folder.rglob("*"):
        assert path.resolve().is_relative_to(folder.resolve()), path
    job = body["job"]
    for url in (
        "/files/x/../../config.yaml",
        f"/files/{job}/../../config.yaml",
        f"/files/{job}/%2e%2e/%2e%2e/config.yaml",
        "/api/adaptations/..",
        f"/api/adaptations/{job}/download.zip?set=../..",
        f"/files/{job}/job.json",
    ):
        assert server.status(url) == 404, url  # fmt: skip


def test_two_adapt_requests_at_once_queue_and_both_finish(server):
    answers = []

    def send():
        answers.append(server.post("/api/adapt", _two_classes()))

    threads = [threading.Thread(target=send) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [status for status, _ in answers] == [200, 200]
    jobs = [body["job"] for _, body in answers]
    assert len(set(jobs)) == 2
    assert [server.wait(j)["status"] for j in jobs] == ["done", "done"]
    listed = [a["name"] for a in json.loads(server.get("/api/adaptations"))]
    assert set(jobs) <= set(listed)
    more = json.loads(server.get(f"/api/adaptations/{jobs[0]}"))
    assert set(more["support"]) == {"alpha", "beta"} and len(more["support"]["alpha"]) == 3


def test_sigterm_stops_a_running_adaptation_within_seconds(run_folder):
    server = Server(run_folder, "--set", "adapt.steps=1000000")
    status, body = server.post("/api/adapt", _two_classes())
    assert status == 200
    for _ in range(100):
        if json.loads(server.get(f"/api/jobs/{body['job']}"))["step"] > 0:
            break
        time.sleep(0.1)
    start = time.time()
    server.proc.send_signal(signal.SIGTERM)
    # uvicorn shuts down, then re-raises the signal so that the exit status tells of it
    assert server.proc.wait(timeout=15) in (0, -signal.SIGTERM)
    assert time.time() - start < 10
    folder = run_folder / "adapted" / body["job"]
    assert not (folder / "model.safetensors").exists() and not list(folder.rglob("*.tmp"))
    assert json.loads((folder / "job.json").read_text())["status"] == "stopped"


def test_serve_refuses_what_is_not_a_run_and_warns_off_this_machine(run_folder, tmp_path):
    r = subprocess.run([sys.executable, "-m", "mtgan", "serve", "--run", str(tmp_path)],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2 and "not a run folder" in r.stderr
    open_to_all = Server(run_folder, "--host", "0.0.0.0", warnings="default")
    open_to_all.close()
    assert "anyone who reaches this machine" in open_to_all.proc.stderr.read().decode()


def _raw(server: Server, method: str, path: str, body: bytes, headers: dict) -> int:
    request = urllib.request.Request(server.url + path, body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_other_sites_and_odd_requests_are_refused(server):
    form = {"Content-Type": "multipart/form-data; boundary=x"}
    body = b'--x\r\nContent-Disposition: form-data; name="name_0"\r\n\r\na\r\n--x--\r\n'
    evil = {**form, "Origin": "https://evil.example"}
    assert _raw(server, "POST", "/api/adapt", body, evil) == 403  # another site's page
    assert _raw(server, "GET", "/api/info", None, {"Host": "evil.example"}) == 400  # rebinding
    chunked = {**form, "Transfer-Encoding": "chunked"}
    assert _raw(server, "POST", "/api/adapt", None, chunked) == 400  # no length given
    long_name = [("name_0", "n" * 65), ("files_0", ("0.png", _png(0)))]
    status, answer = server.post("/api/adapt", long_name)
    assert status == 400 and "at most 64 characters" in answer["error"]
    status, answer = server.post("/api/adapt", _two_classes())
    done = answer["job"]
    assert server.wait(done)["status"] == "done"
    json_headers = {"Content-Type": "application/json"}
    assert _raw(server, "POST", f"/api/adaptations/{done}/sample", b"[1]", json_headers) == 400
    assert _raw(server, "POST", f"/api/adaptations/{done}/sample", b"{", json_headers) == 400
    assert server.status("/api/info") == 200


def test_a_class_of_the_runs_test_split_can_stand_for_uploads(server, run_folder):
    test_classes = json.loads(server.get("/api/dataset"))["classes"]
    fields = [("name_0", ""), ("dataset_0", test_classes[0]), ("shots", "2")]
    fields += [("name_1", "mine"), ("files_1", ("0.png", _png(5))), ("files_1", ("1.png", _png(6)))]
    status, body = server.post("/api/adapt", fields)
    assert status == 200, body
    assert server.wait(body["job"])["status"] == "done"
    support = run_folder / "adapted" / body["job"] / "support"
    assert sorted(p.name for p in support.iterdir()) == sorted([test_classes[0], "mine"])
    assert len(list((support / test_classes[0]).iterdir())) == 2
    status, body = server.post("/api/adapt", [("name_0", "x"), ("dataset_0", "no such class")])
    assert status == 400 and "not a class of the run's test split" in body["error"]
