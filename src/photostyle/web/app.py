"""The web page's server: upload two photos, pick a preset, watch the progress, compare, download.

One worker thread runs the transfers one at a time from a queue (the feature network is
loaded once per process by ``pipeline.get_encoder``); each job keeps its files in a folder of
a temporary directory that is removed when the server stops, and only the newest
``keep_jobs`` jobs are kept. Stopping the server cancels the running job through the
optimiser's Ctrl-C path and waits for the worker, so the process exits cleanly.

Uploads are checked before a job is queued, and a refused request leaves no folder behind: a
body larger than two photos is cut off while it streams (413, whatever Content-Length says,
chunked or not), a photo over the size limit gives 413, an unreadable, too small or too large
(in pixels) photo gives 400 with the :class:`InputError` text naming the user's file, never 500.

:class:`Guard` sits in front of every request: the Host header must be one of the allowed names
(400, so DNS rebinding fails), a request from another page's Origin gets 403, a server reachable
from other machines wants its access token (``?token=``, then a cookie, or the
``X-Photostyle-Token`` header; 403 without it), and every answer carries security headers.

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
import re
import secrets
import shutil
import socket
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import FormData, MutableHeaders, UploadFile
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import io
from ..batch import IMAGE_SUFFIXES
from ..errors import InputError, PhotostyleError
from ..masks import Segmentation, save_colour_mask
from ..pipeline import TransferConfig, TransferResult, check_photo_size, transfer
from ..presets import PRESETS, preset_config

__all__ = ["LOCAL_HOSTS", "Guard", "access", "create_app", "examples_dir"]

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
_CHUNK = 1 << 20
_PREVIEWS = 10  # working-image previews per run
_FORM_MARGIN = 1 << 16  # multipart boundaries and small fields around the two photos

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
"""Names of this machine only: a server bound to one of them needs no token."""
TOKEN_COOKIE = "photostyle_token"
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
                               "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-resource-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
}
_HOST = re.compile(r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(?::\d{1,5})?")


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


def access(host: str, port: int, extra_hosts: Iterable[str] = ()) -> tuple[frozenset[str], str | None, str]:
    """What a server listening on ``host`` admits: the Host names it answers to, its token, its address.

    On this machine only (``127.0.0.1``, ``localhost``, ``::1``) there is no token. Bound to
    another address, the server answers to that address (for ``0.0.0.0`` / ``::``: this
    machine's name) and to ``extra_hosts`` (``--allow-host``: the address or name others use),
    and wants a fresh random token, which the address carries as ``?token=``. Nothing here opens
    a connection.
    """
    names = set(LOCAL_HOSTS) | {h.lower() for h in extra_hosts}
    if host in LOCAL_HOSTS:
        return frozenset(names), None, f"http://{'[::1]' if host == '::1' else host}:{port}/"
    shown = host
    if host in ("0.0.0.0", "::", ""):
        shown = socket.gethostname()
        names.add(shown.lower())
    else:
        names.add(host.lower())
    token = secrets.token_urlsafe(18)
    return frozenset(names), token, f"http://{f'[{shown}]' if ':' in shown else shown}:{port}/?token={token}"


def _hostname(value: str) -> str:
    """The name part of a Host header, lower case; empty when it is not a plain name or address."""
    match = _HOST.fullmatch(value)
    return match.group(1).strip("[]").lower() if match else ""


class Guard:
    """Pure ASGI middleware in front of the app: who may ask, how much may be sent, what every answer says.

    Args:
        app: the application behind.
        hosts: Host names answered (lower case); any other gives 400, so DNS rebinding fails.
        token: when set, every request needs it (``?token=``, the cookie that query sets,
            or the ``X-Photostyle-Token`` header); 403 without it.
        max_body: request bodies larger than this are refused with 413: from Content-Length at
            once, and while the body streams (chunked or not) as soon as it passes the limit.
    """

    def __init__(self, app: ASGIApp, *, hosts: Collection[str], token: str | None, max_body: int) -> None:
        self.app, self.hosts, self.token, self.max_body = app, frozenset(hosts), token, max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        query_token = request.query_params.get("token")
        cookie = self.token is not None and query_token is not None and self._valid(query_token)

        async def secure_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.update(SECURITY_HEADERS)
                if cookie:
                    headers.append("set-cookie", f"{TOKEN_COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict")
            await send(message)

        refusal = self._refusal(request, query_token)
        if refusal is not None:
            await JSONResponse({"error": refusal[1]}, status_code=refusal[0])(scope, receive, secure_send)
            return
        await self.app(scope, self._limited(receive), secure_send)

    def _valid(self, candidate: str | None) -> bool:
        return bool(candidate) and secrets.compare_digest(candidate.encode(), str(self.token).encode())

    def _refusal(self, request: Request, query_token: str | None) -> tuple[int, str] | None:
        """The status and message refusing ``request``, or None when it may go on."""
        host = request.headers.get("host", "")
        if _hostname(host) not in self.hosts:
            return 400, (f"this server does not answer to the host name {host[:100]!r}; open the address it printed "
                         "when it started, or start it with --allow-host NAME")
        origin = request.headers.get("origin")
        if origin is not None and origin.lower() != f"{request.url.scheme}://{host}".lower():
            return 403, f"requests from another site ({origin[:100]}) are refused; use photostyle's own page"
        offered = (query_token, request.cookies.get(TOKEN_COOKIE), request.headers.get("x-photostyle-token"))
        if self.token is not None and not any(self._valid(c) for c in offered):
            return 403, "this server needs its access token: open the address with ?token= it printed when it started"
        declared = request.headers.get("content-length", "0")
        if not declared.isdigit() or int(declared) > self.max_body:
            return 413, self._too_large()
        return None

    def _too_large(self) -> str:
        return f"the upload is larger than {self.max_body / 2**20:.1f} MB, the limit for two photos; downscale or re-export them"

    def _limited(self, receive: Receive) -> Receive:
        """``receive`` that raises 413 as soon as the body read so far passes the limit; nothing more is read."""
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body:
                raise _Reject(413, self._too_large())
            return message

        return limited


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
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._work, name="photostyle-web-worker", daemon=True)
        self.thread.start()

    def new_folder(self) -> tuple[str, Path]:
        """A fresh job id and its empty folder."""
        job_id = secrets.token_hex(8)
        folder = self.root / job_id
        folder.mkdir()
        return job_id, folder

    def submit(self, job: Job) -> None:
        """Queue ``job``; 503 when ``max_queued`` jobs are waiting already."""
        with self.lock:
            if self.queue.qsize() >= self.max_queued:
                raise _Reject(503, f"{self.queue.qsize()} jobs are waiting already; try again in a few minutes")
            self.jobs[job.id] = job
            self._forget_old()
        self.queue.put(job)

    def get(self, job_id: str) -> Job | None:
        """The job with this id, if it is still kept."""
        with self.lock:
            return self.jobs.get(job_id)

    def close(self) -> None:
        """Stop: cancel the running job at its next optimiser step, drop the waiting ones, wait for the worker.

        The worker must be gone before the interpreter exits: a thread still inside PyTorch then
        aborts the process ("terminate called without an active exception").
        """
        self.stopping.set()
        self.queue.put(None)
        self.thread.join()

    def _forget_old(self) -> None:
        finished = [j for j in self.jobs.values() if j.state in ("done", "failed")]
        for job in finished[: max(0, len(finished) - self.keep_jobs)]:
            del self.jobs[job.id]
            shutil.rmtree(job.folder, ignore_errors=True)

    def _work(self) -> None:
        while (job := self.queue.get()) is not None and not self.stopping.is_set():
            job.state = "running"
            try:
                result = transfer(
                    job.folder / "content", job.folder / "style", job.folder / job.result_name, job.config,
                    overwrite=True, callback=lambda step, image, terms: self._progress(job, step, image, terms),
                )
                if result.report["interrupted"]:
                    job.error, job.state = "the server was stopped before this job finished", "failed"
                    continue
                job.segments = self._save_segments(job, result)
                job.report = json.loads(json.dumps(result.report, default=str))
                job.files.add(job.result_name)
                job.state = "done"
            except PhotostyleError as err:
                job.error, job.state = self._friendly(job, str(err)), "failed"
            except Exception as err:  # the worker must outlive any bug; the page shows the message
                log.exception("job %s failed", job.id)
                job.error, job.state = f"internal error ({type(err).__name__}: {err}); see the server log", "failed"

    def _progress(self, job: Job, step: int, image: Any, terms: dict[str, float]) -> None:
        """Record a step; the optimiser takes the KeyboardInterrupt as Ctrl-C and returns the best so far."""
        if self.stopping.is_set():
            raise KeyboardInterrupt
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
        name, size = Path(upload.filename).name, 0
        with open(folder / kind, "wb") as f:
            while chunk := await upload.read(_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise _Reject(413, f"the {kind} photo {name} is larger than the limit of "
                                       f"{limit / 2**20:.2g} MB; downscale or re-export it")
                f.write(chunk)
        return name
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
    allowed_hosts: Collection[str] = LOCAL_HOSTS,
    token: str | None = None,
) -> FastAPI:
    """Build the web application (serve it with ``uvicorn``; ``photostyle serve`` does).

    Args:
        max_upload_mb: largest accepted photo file; larger gives 413.
        max_pixels: largest accepted photo in pixels (read from the header); larger gives 400.
        config_overrides: :class:`TransferConfig` fields applied on top of every preset
            (e.g. ``device``, or tiny settings for tests).
        keep_jobs: finished jobs whose files are kept.
        allowed_hosts: Host header names answered (see :func:`access`); others give 400.
        token: access token every request must carry (see :class:`Guard`); None on this machine only.
    """
    overrides = dict(config_overrides or {})
    preset_config("fast", **overrides)  # a bad override fails here, not in the first job
    limit = int(max_upload_mb * 2**20)
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        with tempfile.TemporaryDirectory(prefix="photostyle-web-") as tmp:
            state["runner"] = app.state.runner = JobRunner(Path(tmp), keep_jobs=keep_jobs)
            try:
                yield
            finally:
                await run_in_threadpool(state["runner"].close)

    app = FastAPI(title="photostyle", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_middleware(Guard, hosts={h.lower() for h in allowed_hosts}, token=token, max_body=2 * limit + _FORM_MARGIN)
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
        runner: JobRunner = state["runner"]
        async with request.form(max_files=2, max_fields=8) as form:  # Guard cuts an oversized body short
            preset = str(form.get("preset") or "balanced")
            try:
                config = preset_config(preset, **{**overrides, **_strength(form.get("strength"))})
            except InputError as err:
                raise _Reject(400, str(err)) from err
            job_id, folder = runner.new_folder()
            try:  # whatever goes wrong from here, the job's folder goes
                names = {kind: await _receive(form, kind, folder, limit) for kind in ("content", "style")}
                content = await run_in_threadpool(_check_photos, folder, names, int(max_pixels), config)
                result_name = "result.png" if content.alpha is not None else "result.jpg"
                job = Job(job_id, folder, config, preset, names, result_name)
                runner.submit(job)
            except BaseException as err:
                shutil.rmtree(folder, ignore_errors=True)
                if isinstance(err, InputError):
                    raise _Reject(400, str(err)) from err
                raise
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


def _check_photos(folder: Path, names: dict[str, str], max_pixels: int, config: TransferConfig) -> io.LoadedImage:
    """Decode both photos and check their sizes (InputError naming the user's files); write ``before.jpg``."""
    loaded = {}
    for kind, name in names.items():
        try:
            loaded[kind] = io.load_image(folder / kind, max_pixels=max_pixels)
        except InputError as err:
            raise InputError(str(err).replace(str(folder / kind), f"{kind} photo {name}")) from err
        check_photo_size(f"{kind} photo {name}", *loaded[kind].tensor.shape[-2:], config)
    io.save_image(loaded["content"].tensor, folder / "before.jpg", overwrite=True)
    return loaded["content"]
