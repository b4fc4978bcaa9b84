"""The web page's server: upload two photos, pick a preset, watch the progress, compare, download.

One worker thread runs the transfers one at a time from a queue (the feature network is
loaded once per process by ``pipeline.get_encoder``); each job keeps its files in a folder of
a temporary directory that is removed when the server stops, and only the newest
``keep_jobs`` jobs are kept. Uploads are checked before a job is queued: too large gives
413, an unreadable or oversized photo gives 400 with the :class:`InputError` text, never 500.

API (JSON unless said otherwise):

- ``GET /api/config``: presets, bundled examples and limits.
- ``POST /api/jobs`` (multipart): ``content`` and ``style`` files, or ``content_example`` /
  ``style_example`` names, ``preset`` and optionally ``strength`` (0 to 1). Answers 202 with the job.
- ``GET /api/jobs/{id}``: state (queued, running, done, failed), step, total, loss terms,
  error, segment labels with their colours, and the URLs of its images.
- ``GET /api/jobs/{id}/files/{name}``: ``before.jpg`` (the content as read), ``preview.jpg``
  (working image during the run), the result, and segment masks.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import secrets
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import FormData, UploadFile

from .. import io
from ..batch import IMAGE_SUFFIXES
from ..errors import InputError, PhotostyleError
from ..masks import Segmentation, save_colour_mask
from ..pipeline import TransferConfig, TransferResult, transfer
from ..presets import PRESETS, preset_config

__all__ = ["create_app", "examples_dir"]

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
_CHUNK = 1 << 20
_PREVIEWS = 10  # working-image previews per run


def examples_dir() -> Path | None:
    """Folder of the bundled example photos: ``$PHOTOSTYLE_EXAMPLES``, else ``examples/`` of the source checkout."""
    env = os.environ.get("PHOTOSTYLE_EXAMPLES")
    folder = Path(env) if env else Path(__file__).resolve().parents[3] / "examples"
    return folder if folder.is_dir() else None


def _examples() -> dict[str, Path]:
    folder = examples_dir()
    if folder is None:
        return {}
    return {p.name: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}


class _Reject(Exception):
    """A request refused with an HTTP status and a message for the page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _strength(value: Any) -> dict[str, float]:
    """The page's strength slider as a config override; none when the field is absent."""
    if value is None or value == "":
        return {}
    try:
        strength = float(value)
    except (TypeError, ValueError):
        strength = math.nan
    if not 0.0 <= strength <= 1.0:
        raise _Reject(400, f"strength must be a number from 0 to 1, not {str(value)[:20]!r}")
    return {"strength": strength}


@dataclass
class Job:
    """One transfer requested from the page; its files live in ``folder``."""

    id: str
    folder: Path
    config: TransferConfig
    preset: str
    names: dict[str, str]  # "content"/"style" -> the name the user knows (upload or example)
    result_name: str
    state: str = "queued"
    step: int = 0
    preview_step: int = 0
    terms: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    report: dict[str, Any] | None = None
    segments: dict[str, list[Any]] = field(default_factory=lambda: {"labels": [], "images": []})
    files: set[str] = field(default_factory=lambda: {"before.jpg"})

    def public(self) -> dict[str, Any]:
        """The JSON the page polls."""
        url = f"/api/jobs/{self.id}/files/"
        return {
            "id": self.id, "state": self.state, "preset": self.preset, "names": self.names,
            "step": self.step, "total": self.config.iterations, "terms": self.terms, "error": self.error,
            "segments": self.segments, "report": self.report,
            "before": url + "before.jpg",
            "preview": f"{url}preview.jpg?step={self.preview_step}" if self.preview_step else None,
            "result": url + self.result_name if self.state == "done" else None,
            "download_name": f"{Path(self.names['content']).stem}-{self.preset}{Path(self.result_name).suffix}",
        }


class JobRunner:
    """A queue of :class:`Job` served by one worker thread.

    Args:
        root: folder for the jobs' files.
        keep_jobs: finished jobs kept (files and state); older ones are deleted.
        max_queued: jobs waiting at most; :meth:`submit` refuses more.
    """

    def __init__(self, root: Path, keep_jobs: int = 16, max_queued: int = 8) -> None:
        self.root = root
        self.keep_jobs = keep_jobs
        self.max_queued = max_queued
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.lock = threading.Lock()
        self.queue: queue.Queue[Job | None] = queue.Queue()
        self.thread = threading.Thread(target=self._work, name="photostyle-web-worker", daemon=True)
        self.thread.start()

    def new_folder(self) -> tuple[str, Path]:
        job_id = secrets.token_hex(8)
        folder = self.root / job_id
        folder.mkdir()
        return job_id, folder

    def submit(self, job: Job) -> None:
        with self.lock:
            if self.queue.qsize() >= self.max_queued:
                raise _Reject(503, f"{self.queue.qsize()} jobs are waiting already; try again in a few minutes")
            self.jobs[job.id] = job
            self._forget_old()
        self.queue.put(job)

    def get(self, job_id: str) -> Job | None:
        with self.lock:
            return self.jobs.get(job_id)

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join(timeout=5)

    def _forget_old(self) -> None:
        finished = [j for j in self.jobs.values() if j.state in ("done", "failed")]
        for job in finished[: max(0, len(finished) - self.keep_jobs)]:
            del self.jobs[job.id]
            shutil.rmtree(job.folder, ignore_errors=True)

    def _work(self) -> None:
        while (job := self.queue.get()) is not None:
            job.state = "running"
            try:
                result = transfer(
                    job.folder / "content", job.folder / "style", job.folder / job.result_name, job.config,
                    overwrite=True, callback=lambda step, image, terms: self._progress(job, step, image, terms),
                )
                job.segments = self._save_segments(job, result)
                job.report = json.loads(json.dumps(result.report, default=str))
                job.files.add(job.result_name)
                job.state = "done"
            except PhotostyleError as err:
                job.error, job.state = self._friendly(job, str(err)), "failed"
            except Exception as err:  # the worker must outlive any bug; the page shows the message
                log.exception("job %s failed", job.id)
                job.error, job.state = f"internal error ({type(err).__name__}: {err}); see the server log", "failed"

    @staticmethod
    def _progress(job: Job, step: int, image: Any, terms: dict[str, float]) -> None:
        job.step, job.terms = step, dict(terms)
        if step % max(1, job.config.iterations // _PREVIEWS) == 0:
            io.save_image(image.cpu(), job.folder / "preview.jpg", overwrite=True, quality=85)
            job.files.add("preview.jpg")
            job.preview_step = step

    @staticmethod
    def _save_segments(job: Job, result: TransferResult) -> dict[str, list[Any]]:
        """The report's segment labels with their colours, and colour images of every segmentation it provides."""
        legend: dict[str, tuple[int, int, int]] = {}
        images = []
        for key, seg in _segmentations(result):
            name = f"segments-{key}.png"
            legend.update(save_colour_mask(seg, job.folder / name, overwrite=True))
            job.files.add(name)
            images.append({"name": key, "url": f"/api/jobs/{job.id}/files/{name}"})
        labels = [{"label": label, "colour": legend.get(label)} for label in result.report.get("segments", [])]
        return {"labels": labels, "images": images}

    @staticmethod
    def _friendly(job: Job, message: str) -> str:
        """The error text with the job's file paths replaced by the names the user gave."""
        for kind, name in job.names.items():
            message = message.replace(str(job.folder / kind), name)
        return message


def _segmentations(result: TransferResult) -> Iterator[tuple[str, Segmentation]]:
    """The content's and the style's segments, when the transfer used any."""
    for key in ("content_segments", "style_segments"):
        seg = getattr(result, key)
        if seg is not None:
            yield key, seg


async def _receive(form: FormData, kind: str, folder: Path, limit: int) -> str:
    """Store the ``kind`` photo (upload or example) as ``folder/kind``; return the name the user knows."""
    upload, example = form.get(kind), str(form.get(f"{kind}_example") or "")
    if isinstance(upload, UploadFile) and upload.filename:
        size = 0
        with open(folder / kind, "wb") as f:
            while chunk := await upload.read(_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise _Reject(413, f"the {kind} photo {upload.filename} is larger than the limit of "
                                       f"{limit / 2**20:.0f} MB; downscale or re-export it")
                f.write(chunk)
        return Path(upload.filename).name
    examples = _examples()
    if example in examples:
        shutil.copyfile(examples[example], folder / kind)
        return example
    raise _Reject(400, f"no {kind} photo; drop or pick one, or choose an example")


def create_app(
    *,
    max_upload_mb: float = 20,
    max_pixels: float = 40e6,
    config_overrides: Mapping[str, Any] | None = None,
    keep_jobs: int = 16,
) -> FastAPI:
    """Build the web application (serve it with ``uvicorn``; ``photostyle serve`` does).

    Args:
        max_upload_mb: largest accepted photo file; larger gives 413.
        max_pixels: largest accepted photo in pixels (read from the header); larger gives 400.
        config_overrides: :class:`TransferConfig` fields applied on top of every preset
            (e.g. ``device``, or tiny settings for tests).
        keep_jobs: finished jobs whose files are kept.
    """
    overrides = dict(config_overrides or {})
    preset_config("fast", **overrides)  # a bad override fails here, not in the first job
    limit = int(max_upload_mb * 2**20)
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        with tempfile.TemporaryDirectory(prefix="photostyle-web-") as tmp:
            state["runner"] = JobRunner(Path(tmp), keep_jobs=keep_jobs)
            yield
            state["runner"].close()

    app = FastAPI(title="photostyle", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(_Reject)
    async def reject(request: Request, err: _Reject) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status_code=err.status)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/api/config")
    async def config() -> dict[str, Any]:
        presets = {name: {k: getattr(preset_config(name, **overrides), k) for k in ("size", "iterations")}
                   for name in PRESETS}
        return {"presets": presets, "examples": list(_examples()), "max_upload_mb": max_upload_mb,
                "max_pixels": max_pixels}

    @app.get("/api/examples/{name}")
    async def example(name: str) -> FileResponse:
        examples = _examples()
        if name not in examples:
            raise _Reject(404, f"no example named {name!r}; choose one of: {', '.join(examples) or 'none'}")
        return FileResponse(examples[name])

    @app.post("/api/jobs", status_code=202)
    async def submit(request: Request) -> dict[str, Any]:
        declared = int(request.headers.get("content-length") or 0)
        if declared > 2 * limit + _CHUNK:
            raise _Reject(413, f"the upload is {declared / 2**20:.0f} MB; each photo may have at most "
                               f"{max_upload_mb:.0f} MB, downscale or re-export them")
        runner: JobRunner = state["runner"]
        job_id, folder = runner.new_folder()
        try:
            async with request.form(max_files=2, max_fields=8) as form:
                preset = str(form.get("preset") or "balanced")
                config = preset_config(preset, **{**overrides, **_strength(form.get("strength"))})
                names = {kind: await _receive(form, kind, folder, limit) for kind in ("content", "style")}
            content = await run_in_threadpool(_check_photos, folder, names, int(max_pixels))
            job = Job(job_id, folder, config, preset, names, "result.png" if content.alpha is not None else "result.jpg")
            runner.submit(job)
        except _Reject:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        except InputError as err:
            shutil.rmtree(folder, ignore_errors=True)
            raise _Reject(400, str(err)) from err
        return job.public()

    @app.get("/api/jobs/{job_id}")
    async def status(job_id: str) -> dict[str, Any]:
        return _job(job_id).public()

    @app.get("/api/jobs/{job_id}/files/{name}")
    async def file(job_id: str, name: str) -> FileResponse:
        job = _job(job_id)
        if name not in job.files:
            raise _Reject(404, f"job {job_id} has no file {name!r} (yet)")
        return FileResponse(job.folder / name, headers={"Cache-Control": "no-store"})

    def _job(job_id: str) -> Job:
        job = state["runner"].get(job_id)
        if job is None:
            raise _Reject(404, f"no job {job_id}; it finished long ago and was removed, run it again")
        return job

    return app


def _check_photos(folder: Path, names: dict[str, str], max_pixels: int) -> io.LoadedImage:
    """Decode both photos (InputError with the user's file names) and write the browser-safe ``before.jpg``."""
    loaded = {}
    for kind, name in names.items():
        try:
            loaded[kind] = io.load_image(folder / kind, max_pixels=max_pixels)
        except InputError as err:
            raise InputError(str(err).replace(str(folder / kind), f"{kind} photo {name}")) from err
    io.save_image(loaded["content"].tensor, folder / "before.jpg", overwrite=True)
    return loaded["content"]
