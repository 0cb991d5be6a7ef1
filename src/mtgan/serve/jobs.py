"""Adaptations requested from the page, run one at a time by a worker thread: a second request
waits in the queue, and stopping the server stops the running one between two steps."""

from __future__ import annotations

import json
import queue
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mtgan.errors import MtganError
from mtgan.files import atomic_write
from mtgan.phases.loop import Interrupted, Watch, watching
from mtgan.runs.folder import Run
from mtgan.runs.pipeline import adapt_to_folder

JOB_FILE = "job.json"


@dataclass
class Job:
    """One adaptation: its folder under the workspace and how far it got."""

    name: str
    per_class: int
    status: str = "queued"  # queued, running, done, failed, stopped
    step: int = 0
    steps: int = 0
    message: str = ""
    result: dict[str, Any] = field(default_factory=dict)
    created: float = field(default_factory=time.time)


class Jobs:
    """The queue of adaptations of ``run`` into folders of ``workspace`` and its worker."""

    def __init__(self, run: Run, workspace: Path, max_queued: int = 8):
        self.run, self.workspace, self.max_queued = run, workspace, max_queued
        _mark_unfinished(workspace)
        self.jobs: dict[str, Job] = {}
        self.queue: queue.Queue[Job | None] = queue.Queue()
        self.watch = Watch(on_step=self._on_step)
        self.current: Job | None = None
        self.worker = threading.Thread(target=self._work, name="mtgan-adapt", daemon=True)
        self.worker.start()

    def full(self) -> bool:
        """Whether the queue already holds ``max_queued`` adaptations waiting their turn."""
        return self.queue.qsize() >= self.max_queued

    def submit(self, job: Job) -> Job:
        finished = [n for n, j in self.jobs.items() if j.status not in ("queued", "running")]
        for name in finished[: max(0, len(self.jobs) - 100)]:  # keep the latest 100 in memory
            del self.jobs[name]
        self.jobs[job.name] = job
        self._save(job)
        self.queue.put(job)
        return job

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the running adaptation between two steps and the worker after it."""
        self.watch.stop()
        self.queue.put(None)
        self.worker.join(timeout)

    def _on_step(self, phase: str, step: int, steps: int) -> None:
        if self.current is not None:
            self.current.step, self.current.steps = step, steps

    def _work(self) -> None:
        while (job := self.queue.get()) is not None:
            try:
                if self.watch.stopped.is_set():
                    job.status, job.message = "stopped", "the server stopped before it ran"
                else:
                    self.current, job.status = job, "running"
                    self._save(job)
                    self._run(job)
                self._save(job)
            except Exception as exc:  # the worker must outlive any one job (a full disk...)
                job.status, job.message = "failed", f"{type(exc).__name__}: {exc}"
            finally:
                self.current = None

    def _run(self, job: Job) -> None:
        folder = self.workspace / job.name
        try:
            with watching(self.watch):
                job.result = adapt_to_folder(self.run, folder / "support", folder, job.per_class)
            job.status = "done"
        except Interrupted as exc:
            job.status, job.message = "stopped", str(exc)
            _remove_partial(folder)
        except MtganError as exc:
            job.status, job.message = "failed", str(exc)
            _remove_partial(folder)
        except Exception as exc:  # a runtime failure: the page says so, the server goes on
            job.status, job.message = "failed", f"{type(exc).__name__}: {exc}"
            _remove_partial(folder)

    def _save(self, job: Job) -> None:
        atomic_write(self.workspace / job.name / JOB_FILE, json.dumps(asdict(job), indent=2))


def _mark_unfinished(workspace: Path) -> None:
    """Adaptations that a stopped server left queued or running: marked stopped, their partial
    files removed (only the uploads and job.json stay)."""
    for file in workspace.glob(f"*/{JOB_FILE}"):
        try:
            job = json.loads(file.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(job, dict) and job.get("status") in ("queued", "running"):
            job["status"], job["message"] = "stopped", "the server stopped before it finished"
            _remove_partial(file.parent)
            atomic_write(file, json.dumps(job, indent=2))


def _remove_partial(folder: Path) -> None:
    """What an adaptation that did not finish leaves: only its support images and job.json."""
    for path in folder.iterdir():
        if path.name not in ("support", JOB_FILE):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    for tmp in folder.rglob(".*.tmp"):
        tmp.unlink()
