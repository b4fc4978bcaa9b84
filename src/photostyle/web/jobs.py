"""The web page's jobs: a queue served by one worker thread, with honest progress, estimates and cancel.

One worker runs the transfers one at a time (the feature network is loaded once per process by
``features.get_encoder``). Each job keeps its files in a folder of its own; only the newest
``keep_jobs`` finished jobs are kept.

Cancel: a waiting job leaves the line at once; a running one stops at its next optimiser step
through the optimiser's Ctrl-C path (the step callback raises ``KeyboardInterrupt``), which is
also how stopping the server ends the running job. Either way its files are deleted. A job whose
page has not asked about it for ``abandon_after`` seconds (the tab was closed without saying so)
is cancelled the same way.

Progress is told in the page's terms: the phase (waiting, preparing, optimising, finishing),
the place in line, the time elapsed and, once there is something to measure, the time left:
from the pace of the steps so far, and for what is not measured yet from the last finished job,
scaled by working pixels and photo size.

The optimisation always runs at full strength and colour: the page fades the finished result
toward the content live (``strength``, ``chroma``, as :func:`photostyle.colour.blend_lab`), and
:meth:`JobRunner.render` writes the file with the chosen values, at full resolution, in the
uploaded format, from a 16-bit copy of the full-strength result (``master.png``).
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import shutil
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .. import io
from ..colour import blend_lab
from ..errors import PhotostyleError
from ..pipeline import TransferConfig, TransferResult, carry, transfer
from . import regions

__all__ = ["Job", "JobRunner", "Reject", "plain_words", "shrink"]

log = logging.getLogger(__name__)

PREVIEW_SIDE = 720  # long side of the previews shown while a job runs
PREVIEW_EVERY = 2.0  # seconds between previews at least
THUMB_SIDE = 360  # long side of the segment pictures
LIVE_PIXELS = 4_000_000  # display copies up to this size are PNG (the page blends them live), larger JPEG
_FINISHED = ("done", "failed", "cancelled")
_ROWS = 256  # rows per tile of the full-resolution blend


class Reject(Exception):
    """A request refused with an HTTP status and a message for the page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


_JARGON = ((re.compile(r"not an image PIL can read"), "not a photo this page can read"),
           (re.compile(r"\bPIL\b"), "the image reader"),
           (re.compile(r"--content-mask and --style-mask"), "a content mask and a style mask"))


def plain_words(message: str, paths: dict[Path, str]) -> str:
    """``message`` with the server's file paths replaced by what the user calls them, and no library jargon."""
    for path, name in sorted(paths.items(), key=lambda item: -len(str(item[0]))):
        message = message.replace(str(path), name)
    for pattern, words in _JARGON:
        message = pattern.sub(words, message)
    return message


@dataclass
class Job:
    """One transfer asked for by the page; its files live in ``folder``.

    ``sizes`` holds ``(height, width)`` of the content and style photos; ``output`` the format the
    download keeps (that of the uploaded content photo); ``display`` the file names of the copies
    the page shows (``before``, ``style``, ``after``); ``look`` the strength and colour the page
    starts from; ``masks`` how the parts were found (``auto``, ``edited`` pairings, ``hand`` masks).
    """

    id: str
    folder: Path
    config: TransferConfig
    preset: str
    names: dict[str, str]
    sizes: dict[str, tuple[int, int]]
    output: dict[str, Any]
    display: dict[str, str]
    look: dict[str, float] = field(default_factory=lambda: {"strength": 1.0, "chroma": 1.0})
    masks: str = "auto"
    parent: str | None = None
    state: str = "queued"  # queued, running, done, failed, cancelled
    phase: str = "queued"  # queued, preparing, optimising, finishing, cancelling, done, failed, cancelled
    step: int = 0
    preview_step: int = 0
    terms: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    report: dict[str, Any] | None = None
    segments: dict[str, Any] = field(default_factory=lambda: {"labels": [], "images": [], "pairings": []})
    files: set[str] = field(default_factory=set)
    created: float = field(default_factory=time.monotonic)
    seen: float = field(default_factory=time.monotonic)
    started: float | None = None
    first_step: tuple[int, float] | None = None
    last_step: float | None = None
    finishing_since: float | None = None
    finished: float | None = None
    preview_at: float = 0.0
    cancel: threading.Event = field(default_factory=threading.Event)
    render_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def total(self) -> int:
        """Optimiser steps of the whole run (every level)."""
        return self.config.total_steps

    @property
    def result_name(self) -> str:
        return "result" + self.output["ext"]

    def url(self, name: str) -> str:
        return f"/api/jobs/{self.id}/files/{name}"

    def paths(self) -> dict[Path, str]:
        """Server paths of this job's inputs -> the names the user knows them by."""
        named = {self.folder / kind: f"{kind} photo {name}" for kind, name in self.names.items()
                 if kind in ("content", "style")}
        for kind in ("content_mask", "style_mask"):
            if kind in self.names:
                named[self.folder / f"{kind}.png"] = f"{kind.replace('_', ' ')} {self.names[kind]}"
        return named


class JobRunner:
    """A line of :class:`Job` served by one worker thread.

    Args:
        root: folder for the jobs' files.
        keep_jobs: finished jobs kept (files and state); older ones are deleted.
        max_queued: jobs waiting at most; :meth:`submit` refuses more.
        abandon_after: seconds without a status request after which a waiting or running job is
            cancelled (its page is gone); None never.
        max_pixels: largest photo read back when rendering a download.
    """

    def __init__(self, root: Path, keep_jobs: int = 16, max_queued: int = 8,
                 abandon_after: float | None = 180.0, max_pixels: int = 120_000_000) -> None:
        self.root = root
        self.keep_jobs = keep_jobs
        self.max_queued = max_queued
        self.abandon_after = abandon_after
        self.max_pixels = max_pixels
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)
        self.waiting: deque[Job] = deque()
        self.running: Job | None = None
        self.history: deque[dict[str, float]] = deque(maxlen=4)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._work, name="photostyle-web-worker", daemon=True)
        self.thread.start()

    # --- the line -------------------------------------------------------------------------------

    def new_folder(self) -> tuple[str, Path]:
        """A fresh job id and its empty folder."""
        job_id = secrets.token_hex(8)
        folder = self.root / job_id
        folder.mkdir()
        return job_id, folder

    def submit(self, job: Job) -> None:
        """Put ``job`` in line; 503 when ``max_queued`` jobs are waiting already."""
        with self.wake:
            if len(self.waiting) >= self.max_queued:
                raise Reject(503, f"{len(self.waiting)} photos are waiting already; try again in a few minutes")
            self.jobs[job.id] = job
            self.waiting.append(job)
            self._forget_old()
            self.wake.notify()

    def get(self, job_id: str, *, seen: bool = True) -> Job | None:
        """The job with this id, if it is still kept; ``seen`` records that its page is still there."""
        with self.lock:
            job = self.jobs.get(job_id)
        if job is not None and seen:
            job.seen = time.monotonic()
        return job

    def cancel(self, job_id: str) -> Job | None:
        """Cancel a job: a waiting one leaves the line now, a running one stops at its next step."""
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None or job.state in _FINISHED:
                return job
            job.cancel.set()
            if job in self.waiting:
                self.waiting.remove(job)
                self._cancelled(job, "cancelled before it started")
            else:
                job.phase = "cancelling"
        return job

    def close(self) -> None:
        """Stop: cancel the running job at its next optimiser step, drop the waiting ones, wait for the worker.

        The worker must be gone before the interpreter exits: a thread still inside PyTorch then
        aborts the process ("terminate called without an active exception").
        """
        self.stopping.set()
        with self.wake:
            self.wake.notify_all()
        self.thread.join()

    def _cancelled(self, job: Job, why: str) -> None:
        job.state = job.phase = "cancelled"
        job.error = why
        job.finished = time.monotonic()
        job.files.clear()
        shutil.rmtree(job.folder, ignore_errors=True)

    def _forget_old(self) -> None:
        finished = [j for j in self.jobs.values() if j.state in _FINISHED]
        for job in finished[: max(0, len(finished) - self.keep_jobs)]:
            del self.jobs[job.id]
            shutil.rmtree(job.folder, ignore_errors=True)

    # --- what the page is told ------------------------------------------------------------------

    def public(self, job: Job) -> dict[str, Any]:
        """The JSON the page polls."""
        now = time.monotonic()
        with self.lock:
            ahead = list(self.waiting)[: self.waiting.index(job)] if job in self.waiting else None
            running = self.running
        position = None if ahead is None else len(ahead) + 1
        wait = None
        if ahead is not None:
            parts = [self.remaining(running, now)] if running is not None else []
            parts += [self._estimate(j) for j in ahead]
            wait = None if any(p is None for p in parts) else sum(parts)
        end = job.finished or now
        display = {kind: job.url(name) if name in job.files else None for kind, name in job.display.items()}
        done = job.state == "done"
        return {
            "id": job.id, "state": job.state, "phase": job.phase, "preset": job.preset, "names": job.names,
            "step": job.step, "total": job.total, "terms": job.terms, "error": job.error,
            "position": position, "ahead": None if ahead is None else len(ahead) + (running is not None),
            "wait": _round(wait),
            "elapsed": round(end - (job.started or job.created), 1),
            "remaining": _round(self.remaining(job, now)) if job.state == "running" else None,
            "segments": job.segments, "report": job.report, "look": job.look, "masks": job.masks,
            "parent": job.parent, "output": job.output, "sizes": job.sizes,
            "before": display["before"], "style": display["style"], "after": display["after"] if done else None,
            "preview": f"{job.url('preview.jpg')}?step={job.preview_step}" if "preview.jpg" in job.files else None,
            "result": job.url(job.result_name) if done else None,
            "download": f"/api/jobs/{job.id}/download" if done else None,
            "view": f"/api/jobs/{job.id}/view" if done else None,
            "download_name": self.download_name(job, 1.0, 1.0),
        }

    @staticmethod
    def download_name(job: Job, strength: float, chroma: float) -> str:
        stem = f"{Path(job.names['content']).stem}-{job.preset}"
        if (strength, chroma) != (1.0, 1.0):
            stem += f"-strength{round(strength * 100)}-colour{round(chroma * 100)}"
        return stem + job.output["ext"]

    def _estimate(self, job: Job) -> float | None:
        """Seconds a job not started yet will take, from the last finished one; None before any finished."""
        if not self.history:
            return None
        last = self.history[-1]
        work = job.total * job.config.size ** 2
        pixels = job.sizes["content"][0] * job.sizes["content"][1]
        return last["optimise"] * work / last["work"] + last["rest"] * min(4.0, max(0.5, pixels / last["pixels"]))

    def remaining(self, job: Job, now: float) -> float | None:
        """Seconds left for a running job; None while there is nothing to go by."""
        started = job.started or now
        estimate = self._estimate(job)
        if job.phase == "preparing" or job.first_step is None:
            return None if estimate is None else max(estimate - (now - started), 1.0)
        first, first_at = job.first_step
        last_at = job.last_step or first_at
        if job.step > first:
            per_step = (last_at - first_at) / (job.step - first)
        else:  # one step done: its time includes no preparation, as it is measured from the start of optimising
            per_step = first_at - started if estimate is None else estimate / max(job.total, 1) / 2
        if self.history:
            last = self.history[-1]
            pixels = job.sizes["content"][0] * job.sizes["content"][1]
            finishing = last["finishing"] * min(4.0, max(0.5, pixels / last["pixels"]))
        else:  # nothing measured yet: a guess from the photo's size (the full-resolution steps and saving)
            finishing = 1.0 + 1.5e-6 * job.sizes["content"][0] * job.sizes["content"][1]
        if job.phase == "finishing":
            return max(finishing - (now - (job.finishing_since or now)), 1.0)
        optimising = max(per_step * (job.total - job.step) - (now - last_at), 0.0)
        return optimising + finishing

    # --- the worker -----------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self.wake:
                while not self.waiting and not self.stopping.is_set():
                    self.wake.wait()
                if self.stopping.is_set():
                    return
                job = self.running = self.waiting.popleft()
            try:
                if self._abandoned(job):
                    self._cancelled(job, "cancelled: its page was closed")
                else:
                    self._run(job)
            finally:
                with self.lock:
                    self.running = None
                    self._forget_old()

    def _abandoned(self, job: Job) -> bool:
        return self.abandon_after is not None and time.monotonic() - job.seen > self.abandon_after

    def _run(self, job: Job) -> None:
        job.state, job.phase, job.started = "running", "preparing", time.monotonic()
        masks = {}
        if job.masks != "auto":
            masks = {"content_mask": job.folder / "content_mask.png", "style_mask": job.folder / "style_mask.png"}
        try:
            guide = shrink(io.load_image(job.folder / job.display["before"]).tensor, PREVIEW_SIDE)
            result = transfer(
                job.folder / "content", job.folder / "style", job.folder / job.result_name, job.config,
                overwrite=True, keep_partial=False, callback=lambda s, image, t: self._progress(job, s, image, t, guide),
                **masks,
            )
            if job.cancel.is_set():
                self._cancelled(job, job.error or "cancelled")
                return
            if result.interrupted:
                job.error, job.state = "the server was stopped before this photo was finished", "failed"
                return
            job.phase, job.finishing_since = "finishing", job.finishing_since or time.monotonic()
            self._finish(job, result, guide)
            if job.cancel.is_set():
                self._cancelled(job, "cancelled")
                return
            job.state = job.phase = "done"
        except PhotostyleError as err:
            job.error, job.state = plain_words(str(err), job.paths()), "failed"
        except Exception as err:  # the worker must outlive any bug; the page shows the message
            log.exception("job %s failed", job.id)
            job.error, job.state = f"internal error ({type(err).__name__}: {err}); see the server log", "failed"
        finally:
            job.finished = time.monotonic()
            if job.state == "failed":
                job.phase = "failed"

    def _progress(self, job: Job, step: int, image: torch.Tensor, terms: dict[str, float], guide: torch.Tensor) -> None:
        """Record a step; a KeyboardInterrupt raised here is the optimiser's Ctrl-C: it stops with the best so far."""
        if self._abandoned(job):
            job.error = "cancelled: its page was closed"
            job.cancel.set()
        if self.stopping.is_set() or job.cancel.is_set():
            raise KeyboardInterrupt
        now = time.monotonic()
        if job.first_step is None:
            job.first_step = (step, now)
        job.step, job.terms, job.last_step = step, dict(terms), now
        job.phase = "optimising" if step < job.total else "finishing"
        if job.phase == "finishing":
            job.finishing_since = now
        if step < job.total and (job.preview_step == 0 or now - job.preview_at >= PREVIEW_EVERY):
            self._preview(job, step, image, guide)

    def _preview(self, job: Job, step: int, image: torch.Tensor, guide: torch.Tensor) -> None:
        """What the photo would look like if the run stopped now: the working image carried to the preview size."""
        image = image.detach().float().cpu()
        small = F.interpolate(guide, size=tuple(image.shape[-2:]), mode="bilinear", align_corners=False, antialias=True)
        with torch.no_grad():
            look = carry(job.config, small, image, guide)
        io.save_image(look, job.folder / "preview.jpg", overwrite=True, quality=90)
        job.files.add("preview.jpg")
        job.preview_step, job.preview_at = step, time.monotonic()

    def _finish(self, job: Job, result: TransferResult, guide: torch.Tensor) -> None:
        """Keep what the page needs: the full-strength result (16-bit and a display copy), segments, report."""
        image = result.image.cpu()
        io.save_image(image, job.folder / "master.png", bit_depth=16, overwrite=True)
        io.save_image(image, job.folder / job.display["after"], overwrite=True, quality=95)
        job.files |= {job.result_name, job.display["after"]}
        job.segments = self._save_segments(job, result, guide)
        job.report = json.loads(result.to_json())
        optimise = result.seconds.get("optimise", 0.0)
        now = time.monotonic()
        self.history.append({
            "optimise": optimise, "work": max(job.total * job.config.size ** 2, 1),
            "rest": max(now - (job.started or now) - optimise, 0.0),
            "finishing": max(now - (job.finishing_since or now), 0.0),
            "pixels": max(job.sizes["content"][0] * job.sizes["content"][1], 1),
        })

    def _save_segments(self, job: Job, result: TransferResult, guide: torch.Tensor) -> dict[str, Any]:
        """The parts of both photos: DPST colour masks, label maps, tinted pictures and the pairings in words."""
        from ..masks import save_colour_mask

        legend: dict[str, tuple[int, int, int]] = {}
        images = []
        segs = {"content": result.segmentation.content, "style": result.segmentation.style}
        for kind, seg in segs.items():
            name = f"segments-{kind}_segments.png"
            legend.update(save_colour_mask(seg, job.folder / name, overwrite=True))
            job.files.add(name)
            images.append({"name": f"{kind}_segments", "url": job.url(name)})
        labels = result.segmentation.labels
        out: dict[str, Any] = {
            "labels": [{"label": label, "colour": legend.get(label)} for label in labels],
            "images": images, "pairings": [], "overlays": {}, "editable": False,
            "source": {"auto": result.segmentation.segmenter,
                       "edited": "your edited pairings", "hand": "your masks"}.get(job.masks, job.masks),
        }
        style_img = io.load_image(job.folder / job.display["style"]).tensor
        pictures = {"content": guide, "style": shrink(style_img, PREVIEW_SIDE)}
        parts = {}
        for kind, seg in segs.items():
            picture = pictures[kind]
            index = regions.index_map(seg, *seg.size)
            regions.save_index(index, job.folder / f"labels-{kind}.png")
            small = regions.resize_index(index, *picture.shape[-2:])
            parts[kind] = regions.describe(picture, small, len(labels))
            name = f"overlay-{kind}.jpg"
            io.save_image(regions.overlay(picture, small, len(labels)), job.folder / name, overwrite=True, quality=90)
            job.files.add(name)
            out["overlays"][kind] = job.url(name)
            thumb = shrink(picture, THUMB_SIDE)
            thumb_index = regions.resize_index(index, *thumb.shape[-2:])
            for k in range(len(labels)):
                name = f"pair-{k}-{kind}.jpg"
                io.save_image(regions.highlight(thumb, thumb_index, k), job.folder / name, overwrite=True, quality=88)
                job.files.add(name)
        out["pairings"] = regions.pairings(labels, parts["content"], parts["style"], result.segmentation.pairing,
                                           named=result.segmentation.named)
        for entry in out["pairings"]:
            k = entry["index"]
            entry["thumbs"] = {kind: job.url(f"pair-{k}-{kind}.jpg") for kind in ("content", "style")}
        out["editable"] = len(labels) > 1
        return out

    # --- the file the user takes away -----------------------------------------------------------

    def render(self, job: Job, strength: float, chroma: float, *, view: bool = False) -> Path:
        """The result faded toward the content (``blend_lab``: lightness by ``strength``, colour by
        ``strength * chroma``) at full resolution: in the uploaded format with the content's profile,
        EXIF and alpha, or with ``view`` as an sRGB JPEG for the page's 100% view."""
        if (strength, chroma) == (1.0, 1.0):
            return job.folder / (job.display["after"] if view else job.result_name)
        suffix = ".jpg" if view else job.output["ext"]
        name = f"{'view' if view else 'result'}-s{strength:.2f}-c{chroma:.2f}{suffix}"
        path = job.folder / name
        with job.render_lock:
            if path.is_file():
                return path
            content = io.load_image(job.folder / "content", max_pixels=self.max_pixels)
            master = io.load_image(job.folder / "master.png", max_pixels=self.max_pixels).tensor
            faded = torch.empty_like(master)
            for top in range(0, master.shape[-2], _ROWS):
                rows = slice(top, top + _ROWS)
                faded[..., rows, :] = blend_lab(content.tensor[..., rows, :], master[..., rows, :],
                                                lightness=strength, chroma=strength * chroma)
            if view:
                io.save_image(faded, path, quality=92)
            else:
                io.save_image(faded, path, alpha=content.alpha, icc_profile=content.icc_profile, exif=content.exif,
                              bit_depth=job.output["bit_depth"], quality=95)
            renders = sorted(job.folder.glob(f"{path.name.split('-s')[0]}-s*"), key=lambda p: p.stat().st_mtime)
            for old in renders[:-2]:  # keep the newest two of each kind
                old.unlink(missing_ok=True)
            return path


def shrink(image: torch.Tensor, side: int) -> torch.Tensor:
    """``image`` with its long side brought down to ``side`` px; a smaller one as it is (never enlarged)."""
    return image if max(image.shape[-2:]) <= side else io.resize_long_side(image, side)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
