"""The web page's server: two photos in, a finished photo out, with the look adjustable afterwards.

A photographer picks a content photo and a style photo, starts, watches honest progress (place
in line, elapsed and remaining time, a preview of the photo as it would come out now), can cancel
(closing the tab cancels too), and gets the result in view: before/after slider, side by side
with the style photo, fit or 100%; strength and colour faded live in the page; the pairings of
parts in words, which can be merged or dropped, or replaced by hand-made masks, and re-run; a
download in the uploaded format at full resolution with the chosen strength and colour.

Jobs run one at a time on one worker thread (:mod:`photostyle.web.jobs`). Uploads are checked
before a job is queued, and a refused request leaves no folder behind: a body larger than two
photos is cut off while it streams (413, whatever Content-Length says, chunked or not), a photo
over the size limit gives 413, an unreadable, too small or too large (in pixels) photo gives 400
with a message naming the user's file, never 500.

:class:`Guard` sits in front of every request: the Host header must be one of the allowed names
(400, so DNS rebinding fails), a request from another page's Origin gets 403, a server reachable
from other machines wants its access token (``?token=``, then a cookie, or the
``X-Photostyle-Token`` header; 403 without it), and every answer carries security headers
(the page's script and style live in ``static/``: the policy allows nothing inline).

API (JSON unless said otherwise):

- ``GET /api/config``: presets, bundled examples and limits.
- ``POST /api/preview`` (multipart ``photo``, ``kind``): a JPEG preview of a photo the browser
  cannot show itself (TIFF, 16-bit), or 400 saying in plain words why the photo cannot be used.
- ``POST /api/jobs`` (multipart): ``content`` and ``style`` files, or ``content_example`` /
  ``style_example`` names, ``preset``, and optionally ``strength`` and ``chroma`` (0 to 1, where the
  page's look sliders start). Answers 202 with the job.
- ``GET /api/jobs/{id}``: state (queued, running, done, failed, cancelled), phase, step and total,
  place in line, elapsed / remaining / waiting seconds, the pairings of parts, the URLs of its images.
  A job nobody asks about for ``abandon_after`` seconds is cancelled (its page was closed).
- ``POST /api/jobs/{id}/cancel`` or ``DELETE /api/jobs/{id}``: a waiting job leaves the line, a
  running one stops at its next optimiser step; its files are deleted. The page sends it with
  ``navigator.sendBeacon`` when it is closed.
- ``POST /api/jobs/{id}/rerun`` (multipart): the same photos again with ``groups`` (JSON: for each
  pairing the pairing it now belongs to, or null to drop it) or hand-made DPST masks
  ``content_mask`` and ``style_mask``; ``preset``. Answers 202 with the new job.
- ``GET /api/jobs/{id}/download?strength=&chroma=``: the result faded toward the content by those
  shares, full resolution, in the uploaded format (JPEG quality 95), with the content's profile,
  EXIF (orientation applied) and alpha; ``view?...`` the same as an sRGB JPEG for the 100% view.
- ``GET /api/jobs/{id}/files/{name}``: the job's pictures (before, style, result, preview, segments).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import secrets
import shutil
import socket
import tempfile
from collections.abc import Collection, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.datastructures import FormData, MutableHeaders, UploadFile
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import io
from ..batch import IMAGE_SUFFIXES
from ..errors import InputError, MaskError, PhotostyleError
from ..masks import DPST_COLOURS, load_mask_pair
from ..pipeline import TransferConfig
from ..runtime import check_photo_size
from ..settings import PRESETS, from_preset, setting_of
from . import regions
from .jobs import LIVE_PIXELS, Job, JobRunner, Reject, plain_words, shrink

__all__ = ["LOCAL_HOSTS", "Guard", "access", "create_app", "examples_dir"]

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
_CHUNK = 1 << 20
STYLE_SIDE = 2048  # long side of the style photo as the page shows it
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


_Reject = Reject


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


def _share(value: Any, name: str, default: float = 1.0) -> float:
    """The ``strength`` or ``chroma`` setting from a form or query, checked as the settings check it; ``default`` when absent."""
    if value is None or value == "":
        return default
    try:
        share = float(value)
    except (TypeError, ValueError):
        share = math.nan
    try:
        setting_of(name).check(name, share)
    except InputError:
        raise _Reject(400, f"{name} must be {setting_of(name).describe()}, not {str(value)[:20]!r}") from None
    return round(share, 2)


_FORMATS = {"JPEG": (".jpg", "JPEG"), "MPO": (".jpg", "JPEG"), "PNG": (".png", "PNG"), "TIFF": (".tif", "TIFF"),
            "WEBP": (".webp", "WebP"), "BMP": (".bmp", "BMP")}  # MPO: a phone's JPEG with a second picture


def _output(path: Path, loaded: io.LoadedImage) -> dict[str, Any]:
    """The format the download keeps: the uploaded one (PNG for formats photostyle does not write, and
    for transparent JPEG/BMP, which cannot hold the alpha), with its depth and the content's size."""
    try:
        with Image.open(path) as im:
            uploaded = im.format or ""
    except (OSError, ValueError, SyntaxError):  # TIFFs only the full-depth reader opens
        uploaded = "TIFF"
    ext, name = _FORMATS.get(uploaded, (".png", "PNG"))
    if loaded.alpha is not None and ext in (".jpg", ".bmp"):
        ext, name = ".png", "PNG"
    height, width = loaded.tensor.shape[-2:]
    uploaded = "JPEG" if uploaded == "MPO" else uploaded
    return {"format": name, "ext": ext, "uploaded": uploaded or "image",
            "bit_depth": io.output_bit_depth(Path("result" + ext), loaded.bit_depth),
            "quality": 95 if ext in (".jpg", ".webp") else None, "width": int(width), "height": int(height),
            "alpha": loaded.alpha is not None, "icc": loaded.icc_profile is not None, "exif": loaded.exif is not None}


def _display_name(kind: str, height: int, width: int) -> str:
    """Copies the page shows: lossless PNG up to the size the page fades live, JPEG above."""
    return f"{kind}.png" if height * width <= LIVE_PIXELS else f"{kind}.jpg"


async def _store(upload: UploadFile, path: Path, limit: int, what: str) -> str:
    """Stream ``upload`` into ``path`` (413 past ``limit`` bytes); return the name the user gave it."""
    name, size = Path(upload.filename or what).name, 0
    with open(path, "wb") as f:
        while chunk := await upload.read(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise _Reject(413, f"the {what} {name} is larger than the limit of "
                                   f"{limit / 2**20:.2g} MB; downscale or re-export it")
            f.write(chunk)
    return name


async def _receive(form: FormData, kind: str, folder: Path, limit: int) -> str:
    """Store the ``kind`` photo (upload or example) as ``folder/kind``; return the name the user knows."""
    upload, example = form.get(kind), str(form.get(f"{kind}_example") or "")
    if isinstance(upload, UploadFile) and upload.filename:
        return await _store(upload, folder / kind, limit, f"{kind} photo")
    examples = _examples()
    if example in examples:
        shutil.copyfile(examples[example], folder / kind)
        return example
    raise _Reject(400, f"no {kind} photo; drop or pick one, or choose an example")


def _friendly_input(err: PhotostyleError, paths: dict[Path, str]) -> _Reject:
    return _Reject(400, plain_words(str(err), paths))


def create_app(
    *,
    max_upload_mb: float = 20,
    max_pixels: float = 40e6,
    config_overrides: Mapping[str, Any] | None = None,
    keep_jobs: int = 16,
    allowed_hosts: Collection[str] = LOCAL_HOSTS,
    token: str | None = None,
    abandon_after: float | None = 180.0,
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
        abandon_after: a job whose page has not asked about it for this many seconds is cancelled.
    """
    overrides = dict(config_overrides or {})
    from_preset("fast", **overrides)  # a bad override fails here, not in the first job
    limit = int(max_upload_mb * 2**20)
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        with tempfile.TemporaryDirectory(prefix="photostyle-web-") as tmp:
            state["runner"] = app.state.runner = JobRunner(
                Path(tmp), keep_jobs=keep_jobs, abandon_after=abandon_after, max_pixels=int(max_pixels))
            try:
                yield
            finally:
                await run_in_threadpool(state["runner"].close)

    app = FastAPI(title="photostyle", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_middleware(Guard, hosts={h.lower() for h in allowed_hosts}, token=token, max_body=2 * limit + _FORM_MARGIN)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def config_for(preset: str, **more: Any) -> TransferConfig:
        """The preset with the server's overrides; the optimisation always runs at full strength and
        colour (the page fades the finished result)."""
        try:
            return from_preset(preset, **{**overrides, **more, "strength": 1.0, "chroma": 1.0})
        except InputError as err:
            raise _Reject(400, str(err)) from err

    @app.exception_handler(_Reject)
    async def reject(request: Request, err: _Reject) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status_code=err.status)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> FileResponse:
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    @app.get("/api/config")
    async def config() -> dict[str, Any]:
        presets = {}
        for name in PRESETS:
            c = from_preset(name, **overrides)
            presets[name] = {"size": c.size, "steps": c.total_steps, "levels": c.levels}
        return {"presets": presets, "examples": list(_examples()), "max_upload_mb": max_upload_mb,
                "max_pixels": max_pixels, "live_pixels": LIVE_PIXELS, "mask_colours": list(DPST_COLOURS)}

    @app.get("/api/examples/{name}")
    async def example(name: str) -> FileResponse:
        examples = _examples()
        if name not in examples:
            raise _Reject(404, f"no example named {name!r}; choose one of: {', '.join(examples) or 'none'}")
        return FileResponse(examples[name])

    @app.post("/api/preview")
    async def preview(request: Request) -> Response:
        """A photo the browser cannot show: checked like an upload, answered with a JPEG preview."""
        runner: JobRunner = state["runner"]
        async with request.form(max_files=1, max_fields=4) as form:
            kind = "style" if form.get("kind") == "style" else "content"
            upload = form.get("photo")
            if not isinstance(upload, UploadFile):
                raise _Reject(400, f"no {kind} photo to preview")
            _, folder = runner.new_folder()
            try:
                await _store(upload, folder / kind, limit, f"{kind} photo")
                data = await run_in_threadpool(_preview_jpeg, folder, kind, int(max_pixels), config_for("fast"))
            except PhotostyleError as err:
                raise _friendly_input(err, {folder / kind: f"{kind} photo {Path(upload.filename or '').name}"}) from err
            finally:
                shutil.rmtree(folder, ignore_errors=True)
        return Response(data[0], media_type="image/jpeg",
                        headers={"Cache-Control": "no-store", "X-Photo-Size": f"{data[1][1]}x{data[1][0]}"})

    @app.post("/api/jobs", status_code=202)
    async def submit(request: Request) -> dict[str, Any]:
        runner: JobRunner = state["runner"]
        async with request.form(max_files=2, max_fields=8) as form:  # Guard cuts an oversized body short
            preset = str(form.get("preset") or "balanced")
            config = config_for(preset)
            look = {"strength": _share(form.get("strength"), "strength"), "chroma": _share(form.get("chroma"), "chroma")}
            job_id, folder = runner.new_folder()
            try:  # whatever goes wrong from here, the job's folder goes
                names = {kind: await _receive(form, kind, folder, limit) for kind in ("content", "style")}
                paths = {folder / kind: f"{kind} photo {name}" for kind, name in names.items()}
                try:
                    checked = await run_in_threadpool(_check_photos, folder, names, int(max_pixels), config)
                except PhotostyleError as err:
                    raise _friendly_input(err, paths) from err
                job = Job(job_id, folder, config, preset, names, look=look, **checked)
                job.files |= {job.display["before"], job.display["style"]}
                runner.submit(job)
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
        return runner.public(job)

    @app.get("/api/jobs/{job_id}")
    async def status(job_id: str) -> dict[str, Any]:
        return state["runner"].public(_job(job_id))

    @app.post("/api/jobs/{job_id}/cancel")
    async def cancel(job_id: str) -> dict[str, Any]:
        runner: JobRunner = state["runner"]
        job = runner.cancel(job_id)
        if job is None:
            raise _Reject(404, f"no job {job_id}; it finished long ago and was removed")
        return runner.public(job)

    @app.delete("/api/jobs/{job_id}")
    async def delete(job_id: str) -> dict[str, Any]:
        return await cancel(job_id)

    @app.post("/api/jobs/{job_id}/rerun", status_code=202)
    async def rerun(job_id: str, request: Request) -> dict[str, Any]:
        runner: JobRunner = state["runner"]
        old = _job(job_id)
        if old.state != "done":
            raise _Reject(409, "this photo is not finished yet; wait for it, or start it again")
        async with request.form(max_files=2, max_fields=8) as form:
            preset = str(form.get("preset") or old.preset)
            config = config_for(preset, segmentation="masks")
            look = {"strength": _share(form.get("strength"), "strength", old.look["strength"]),
                    "chroma": _share(form.get("chroma"), "chroma", old.look["chroma"])}
            uploads = [form.get(kind) for kind in ("content_mask", "style_mask")]
            groups = form.get("groups")
            job_id, folder = runner.new_folder()
            names = {kind: old.names[kind] for kind in ("content", "style")}
            try:
                for kind in ("content", "style", old.display["before"], old.display["style"]):
                    try:
                        os.link(old.folder / kind, folder / kind)
                    except OSError:
                        shutil.copyfile(old.folder / kind, folder / kind)
                if any(isinstance(u, UploadFile) and u.filename for u in uploads):
                    if not all(isinstance(u, UploadFile) and u.filename for u in uploads):
                        raise _Reject(400, "give both masks: one drawn on your photo and one on the style photo")
                    for kind, upload in zip(("content_mask", "style_mask"), uploads):
                        names[kind] = await _store(upload, folder / f"{kind}.png", limit, kind.replace("_", " "))
                    masks = "hand"
                    await run_in_threadpool(_check_masks, folder, names, old.sizes)
                elif groups:
                    masks = "edited"
                    await run_in_threadpool(_edit_masks, old, folder, str(groups))
                else:
                    raise _Reject(400, "nothing to change: merge or drop a pairing, or give two masks")
                job = Job(job_id, folder, config, preset, names, old.sizes, old.output, dict(old.display),
                          look=look, masks=masks, parent=old.id)
                job.files |= {job.display["before"], job.display["style"]}
                runner.submit(job)
            except PhotostyleError as err:
                shutil.rmtree(folder, ignore_errors=True)
                paths = {folder / f"{k}.png": f"{k.replace('_', ' ')} {names[k]}" for k in ("content_mask", "style_mask")
                         if k in names}
                raise _friendly_input(err, paths) from err
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
        return runner.public(job)

    @app.get("/api/jobs/{job_id}/files/{name}")
    async def file(job_id: str, name: str) -> FileResponse:
        job = _job(job_id, seen=False)
        if name not in job.files:
            raise _Reject(404, f"job {job_id} has no file {name!r} (yet)")
        return FileResponse(job.folder / name, headers={"Cache-Control": "no-store"})

    async def rendered(job_id: str, request: Request, view: bool) -> FileResponse:
        runner: JobRunner = state["runner"]
        job = _job(job_id, seen=False)
        if job.state != "done":
            raise _Reject(409, "this photo is not finished yet")
        strength = _share(request.query_params.get("strength"), "strength")
        chroma = _share(request.query_params.get("chroma"), "chroma")
        path = await run_in_threadpool(runner.render, job, strength, chroma, view=view)
        out = job.output
        quality = f" quality {out['quality']}" if out["quality"] else ""
        look = (f"strength {round(strength * 100)} %, colour {round(chroma * 100)} %; {out['format']}{quality}, "
                f"{out['bit_depth']}-bit, {out['width']}x{out['height']} px")
        headers = {"Cache-Control": "no-store", "X-Photostyle-Look": look}
        if view:
            return FileResponse(path, media_type="image/jpeg", headers=headers)
        return FileResponse(path, filename=runner.download_name(job, strength, chroma), headers=headers)

    @app.get("/api/jobs/{job_id}/download")
    async def download(job_id: str, request: Request) -> FileResponse:
        return await rendered(job_id, request, view=False)

    @app.get("/api/jobs/{job_id}/view")
    async def view(job_id: str, request: Request) -> FileResponse:
        return await rendered(job_id, request, view=True)

    def _job(job_id: str, seen: bool = True) -> Job:
        job = state["runner"].get(job_id, seen=seen)
        if job is None:
            raise _Reject(404, f"no job {job_id}; it finished long ago and was removed, run it again")
        return job

    return app


def _check_photos(folder: Path, names: dict[str, str], max_pixels: int, config: TransferConfig) -> dict[str, Any]:
    """Decode both photos and check their sizes; write the copies the page shows.

    Returns the :class:`Job` fields ``sizes``, ``output`` and ``display``.

    Raises:
        PhotostyleError: a photo cannot be used (its message names the server path, replaced by the caller).
    """
    loaded = {}
    for kind in names:
        loaded[kind] = io.load_image(folder / kind, max_pixels=max_pixels)
        check_photo_size(str(folder / kind), *loaded[kind].tensor.shape[-2:], config)
    sizes = {kind: tuple(int(n) for n in image.tensor.shape[-2:]) for kind, image in loaded.items()}
    display = {"before": _display_name("before", *sizes["content"]), "style": "style-view.jpg",
               "after": _display_name("after", *sizes["content"])}
    io.save_image(loaded["content"].tensor, folder / display["before"], overwrite=True, quality=95)
    io.save_image(shrink(loaded["style"].tensor, STYLE_SIDE), folder / display["style"], overwrite=True, quality=92)
    return {"sizes": sizes, "output": _output(folder / "content", loaded["content"]), "display": display}


def _preview_jpeg(folder: Path, kind: str, max_pixels: int,
                  config: TransferConfig) -> tuple[bytes, tuple[int, int]]:
    """A JPEG of the photo at most 1024 px long, and its ``(height, width)``; checked as an upload is."""
    loaded = io.load_image(folder / kind, max_pixels=max_pixels)
    size = tuple(int(n) for n in loaded.tensor.shape[-2:])
    check_photo_size(str(folder / kind), *size, config)
    io.save_image(shrink(loaded.tensor, 1024), folder / "preview.jpg", quality=88)
    return (folder / "preview.jpg").read_bytes(), size


def _check_masks(folder: Path, names: dict[str, str], sizes: dict[str, tuple[int, int]]) -> None:
    """Read both hand-made masks as the transfer will (any image format; kept under a .png name).

    Raises:
        PhotostyleError: a mask cannot be read or used (wrong shape, no DPST colour).
    """
    content, _, _ = load_mask_pair(folder / "content_mask.png", folder / "style_mask.png", sizes["content"],
                                   sizes["style"])
    if content is None or not content.labels:
        raise MaskError(f"{folder / 'content_mask.png'}: none of its colours is a DPST mask colour")


def _edit_masks(old: Job, folder: Path, groups_json: str) -> None:
    """DPST masks of both photos from the old job's parts, with pairings merged or dropped."""
    try:
        groups = json.loads(groups_json)
        if not isinstance(groups, list):
            raise ValueError("expected a list")
        count = len(old.segments.get("pairings", []))
        if len(groups) != count:
            raise ValueError(f"expected {count} pairings but received {len(groups)}")
        regions.edited_masks(
            regions.load_index(old.folder / "labels-content.png"), regions.load_index(old.folder / "labels-style.png"),
            groups, old.sizes["content"], old.sizes["style"], folder / "content_mask.png", folder / "style_mask.png",
        )
    except (ValueError, TypeError, OSError) as err:
        raise _Reject(400, f"these pairings cannot be used: {err}") from err
