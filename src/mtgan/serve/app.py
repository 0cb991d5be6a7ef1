"""The web app of ``mtgan serve``: a page to name classes, drop their K images and adapt a run to
them, then browse, extend, re-seed and download the generated images.

Everything it writes lives in the run's ``adapted/`` folder (the workspace), one folder per
adaptation in the layout of ``mtgan adapt --images`` plus ``support/`` (the uploads) and
``job.json``; earlier adaptations there are listed and reopened. Paths that come from a request
are checked to stay inside the workspace.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import threading
import time
import zipfile
from importlib.resources import files
from pathlib import Path
from urllib.parse import quote, urlsplit

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.middleware.trustedhost import TrustedHostMiddleware
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

from mtgan.errors import MtganError
from mtgan.report import to_pil
from mtgan.runs.folder import MODEL_FILE, Run
from mtgan.runs.pipeline import sample_checkpoint
from mtgan.serve.jobs import JOB_FILE, Job, Jobs
from mtgan.serve.uploads import Limits, UploadError, store_support

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
"""What an adaptation's folder may be called (what a URL may name)."""

IMAGE_SUFFIXES = (".png", ".jpg", ".gif", ".bmp", ".tif")


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


def create_app(run: Run, limits: Limits | None = None, host: str = "127.0.0.1") -> FastAPI:
    """The app serving ``run``'s page and API; its worker stops with the app.

    Served on a loopback ``host``, it answers only requests addressed to a loopback name (no
    DNS rebinding); on any host it refuses state-changing requests sent by another site's page
    (their ``Origin`` is not this server).
    """
    limits = limits or Limits()
    lock = threading.Lock()  # one sampling or upload store at a time
    workspace = run.path("adapted")
    workspace.mkdir(parents=True, exist_ok=True)
    jobs: Jobs | None = None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        nonlocal jobs
        jobs = Jobs(run, workspace, limits.max_queued)
        yield
        jobs.stop()

    app = FastAPI(title="mtgan", lifespan=lifespan)
    if host in LOCAL_HOSTS:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost", "[::1]"])

    @app.middleware("http")
    async def same_origin(request: Request, call_next):
        origin = request.headers.get("origin")
        if request.method != "GET" and origin and urlsplit(origin).netloc != request.url.netloc:
            return JSONResponse({"error": "requests from other sites are refused"}, 403)
        return await call_next(request)

    @app.exception_handler(MtganError)
    async def refused(request: Request, exc: MtganError):
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return files("mtgan.serve").joinpath("page.html").read_text()

    @app.get("/api/info")
    def info() -> dict:
        cfg = run.cfg
        return {
            "run": run.root.name,
            "image_size": cfg.data.image_size,
            "channels": cfg.data.channels,
            "per_class": cfg.eval.samples_per_class,
            "limits": limits.__dict__,
        }

    @app.get("/api/dataset")
    def dataset() -> dict:
        """The classes of the run's test split, which the page offers instead of uploads."""
        return {"name": run.cfg.data.name, "classes": run.data()["test"].classes}

    @app.post("/api/adapt")
    async def adapt(request: Request) -> dict:
        size = request.headers.get("content-length")
        if size is None or not size.isdigit():
            raise UploadError("send the upload with its length (Content-Length)")
        if int(size) > limits.max_request_bytes:
            raise UploadError(f"the upload is larger than {limits.max_request_bytes // 2**20} MB")
        if jobs.full():
            raise UploadError("the queue is full; try again when an adaptation has finished")
        form = await request.form(max_files=limits.max_classes * limits.max_images_per_class + 1)
        classes = await _classes(form)
        shots = _int(form.get("shots"), run.cfg.task.k_shot, limits.max_images_per_class)
        classes = await run_in_threadpool(_with_dataset_shots, classes, form, run, shots)
        per_class = _int(
            form.get("per_class"), run.cfg.eval.samples_per_class, limits.max_per_class
        )

        def store() -> str:
            with lock:
                name = _new_name(workspace)
                store_support(classes, workspace / name / "support", limits)
                return name

        job = jobs.submit(Job(await run_in_threadpool(store), per_class))
        return {"job": job.name}

    @app.get("/api/jobs/{name}")
    def job(name: str) -> dict:
        found = jobs.jobs.get(name)
        if found is None:
            raise HTTPException(404, "no such adaptation in this server's queue")
        return found.__dict__

    @app.get("/api/adaptations")
    def adaptations() -> list[dict]:
        done = [p for p in workspace.iterdir() if (p / MODEL_FILE).is_file() and NAME.match(p.name)]
        return [_summary(p) for p in sorted(done, key=lambda p: p.stat().st_mtime, reverse=True)]

    @app.get("/api/adaptations/{name}")
    def adaptation(name: str) -> dict:
        return _summary(_folder(workspace, name), full=True)

    @app.post("/api/adaptations/{name}/sample")
    async def more(name: str, request: Request) -> dict:
        folder = _folder(workspace, name)
        try:
            asked = await request.json()
        except ValueError:
            asked = None
        if not isinstance(asked, dict):
            raise UploadError('send a JSON object such as {"per_class": 20, "seed": 1}')
        per_class = _int(
            asked.get("per_class"), run.cfg.eval.samples_per_class, limits.max_per_class
        )
        seed = _int(asked.get("seed"), 0, 2**31 - 1, least=0)
        out = folder / f"images-seed{seed}-n{per_class}"

        def draw() -> None:
            with lock:
                missing = [p for p in (out, out.with_suffix(".npz")) if not p.exists()]
                if missing:
                    model = folder / MODEL_FILE
                    sample_checkpoint(model, per_class, seed, run.cfg.device, *missing)

        await run_in_threadpool(draw)
        return _summary(folder, full=True)

    @app.get("/api/adaptations/{name}/download.zip")
    def download_zip(name: str, set: str = "images") -> Response:
        folder = _image_set(_folder(workspace, name), set)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(folder.rglob("*.png")):
                if path.parent != folder:  # the class folders, not the grid
                    zf.write(path, path.relative_to(folder).as_posix())
        headers = {"Content-Disposition": f'attachment; filename="{name}-{set}.zip"'}
        return Response(buf.getvalue(), media_type="application/zip", headers=headers)

    @app.get("/api/adaptations/{name}/download.npz")
    def download_npz(name: str, set: str = "images") -> FileResponse:
        folder = _image_set(_folder(workspace, name), set)
        return FileResponse(folder.with_suffix(".npz"), filename=f"{name}-{set}.npz")

    @app.get("/files/{name}/{path:path}")
    def file(name: str, path: str) -> FileResponse:
        folder = _folder(workspace, name).resolve()
        target = (folder / path).resolve()
        if not target.is_relative_to(folder) or target.suffix.lower() not in IMAGE_SUFFIXES:
            raise HTTPException(404, "no such image")
        if not target.is_file():
            raise HTTPException(404, "no such image")
        return FileResponse(target)

    return app


async def _classes(form) -> list[tuple[str, str, list[tuple[str, bytes]]]]:
    """(i, name, [(file name, bytes)]) per class from fields ``name_<i>`` and ``files_<i>``."""
    classes = []
    for key, value in form.multi_items():
        match = re.fullmatch(r"name_(\d{1,3})", key)
        if match:
            uploads = form.getlist(f"files_{match.group(1)}")
            data = [(u.filename or "?", await u.read()) for u in uploads if hasattr(u, "read")]
            classes.append((match.group(1), str(value), data))
    return classes


def _with_dataset_shots(classes, form, run: Run, shots: int) -> list:
    """(name, files) per class; a class without uploads but with ``dataset_<i>`` naming a class
    of the run's test split gets that class's first ``shots`` images, as PNG files."""
    picked = dict(form.multi_items())
    test, rows = None, []
    for i, name, uploads in classes:
        wanted = str(picked.get(f"dataset_{i}", "")).strip()
        if not uploads and wanted:
            test = test or run.data()["test"]
            if wanted not in test.classes:
                raise UploadError(f"{wanted!r} is not a class of the run's test split")
            images = test.images_of(wanted)[:shots]
            uploads = [(f"{k}.png", _png(x)) for k, x in enumerate(images)]
        rows.append((name.strip() or wanted, uploads))
    return rows


def _png(image) -> bytes:
    buf = io.BytesIO()
    to_pil(image).save(buf, format="PNG")
    return buf.getvalue()


def _int(value, default: int, most: int, least: int = 1) -> int:
    if value in (None, ""):
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise UploadError(f"{value!r} is not a whole number") from None
    if not least <= number <= most:
        raise UploadError(f"{number} must lie between {least} and {most}")
    return number


def _new_name(workspace: Path) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    n = 1
    while (workspace / f"web-{stamp}-{n}").exists():
        n += 1
    return f"web-{stamp}-{n}"


def _folder(workspace: Path, name: str) -> Path:
    """An adaptation's folder by the name a request gave, never outside the workspace."""
    folder = workspace / name
    if not NAME.match(name) or not folder.is_dir():
        raise HTTPException(404, "no such adaptation")
    return folder


def _image_set(folder: Path, name: str) -> Path:
    if not NAME.match(name) or not name.startswith("images") or not (folder / name).is_dir():
        raise HTTPException(404, "no such set of images")
    return folder / name


def _summary(folder: Path, full: bool = False) -> dict:
    """An adaptation's classes and, with ``full``, the URLs of its images by set and class."""
    job = folder / JOB_FILE
    status = json.loads(job.read_text()) if job.is_file() else {}
    support = folder / "support"
    classes = sorted(p.name for p in support.iterdir()) if support.is_dir() else []
    summary = {"name": folder.name, "classes": classes, "status": status.get("status", "done")}
    if not full:
        return summary

    def urls(where: Path) -> dict[str, list[str]]:
        return {
            c: [f"/files/{folder.name}/{quote(p.relative_to(folder).as_posix())}"
                for p in sorted((where / c).glob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
            for c in classes
        }  # fmt: skip

    sets = sorted(
        (p for p in folder.glob("images*") if p.is_dir()), key=lambda p: p.stat().st_mtime
    )
    summary["support"] = urls(support)
    summary["sets"] = [{"name": s.name, "images": urls(s)} for s in sets]
    return summary
