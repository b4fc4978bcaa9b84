"""The whole method in one place, top-down.

:func:`transfer` reads like the paper: load images, get segments, group labels,
build losses, optimise, upsample, save. Each step is a module of its own; the
command line, the web page and batch processing all call :func:`transfer` (or
:func:`stylise` for tensors already in memory).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import resource
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from . import io
from .colour import blend_lab, segment_colour_transfer
from .critic import DEFAULT_OFFLINE_CRITIC, Critic, get_critic
from .errors import DeviceError, InputError, MaskError, WeightsError
from .features import DEFAULT_LAYERS, VGGEncoder, load_encoder
from .losses import ContentLoss, PhotorealismLoss, SegmentStyleLoss
from .masks import Segmentation, load_mask_pair
from .segmentation.auto import segment_pair
from .optimise import Callback, optimise
from .state import StateFile, fingerprint
from .upsample import local_affine_upsample

log = logging.getLogger(__name__)

STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
MIN_SIDE = 16
"""Shortest side in px a photo needs, in its file and at working size: conv5_1 sees 16 px as one."""
_OOM_PHRASES = ("out of memory", "not enough memory", "can't allocate memory")


@dataclass
class TransferConfig:
    """Every setting of a transfer. The defaults are the ones the benchmark reports.

    Sizes are long sides in pixels. Weights multiply size-independent terms
    (relative feature and Gram errors, Laplacian energy per pixel).
    """

    size: int = 320
    output_size: int | None = None
    iterations: int = 50
    levels: int = 1
    optimizer: Literal["adam", "lbfgs"] = "adam"
    lr: float = 0.02
    init: Literal["distribution", "reinhard", "content", "noise", "style"] = "distribution"
    content_weight: float = 1.0
    style_weight: float = 5.0
    photo_weight: float = 100.0
    content_layer: str = "conv4_2"
    style_layers: tuple[str, ...] = STYLE_LAYERS
    arch: Literal["vgg16", "vgg19"] = "vgg16"
    weights: str | None = "default"
    pooling: Literal["max", "avg"] = "max"
    affine_radius: int = 2
    affine_eps: float = 1e-4
    detail: float = 0.75
    flat_threshold: float = 0.03
    strength: float = 1.0
    chroma: float = 1.0
    critic: str = "none"
    critic_weight: float = 0.05
    segmentation: Literal["auto", "masks", "none"] = "auto"
    segmenter: str = "auto"
    similarity_metric: str = "li"
    semantic_threshold: float = 0.8
    min_segment: float = 0.01
    device: str = "auto"
    seed: int = 0


@dataclass
class TransferResult:
    """What :func:`stylise` returns.

    Attributes:
        image: ``(1, 3, H, W)`` in [0, 1] at the output size.
        working: ``(1, 3, h, w)`` the optimised image at working size.
        report: timings (s) per stage, loss terms, settings, weights, segments.
        content_segments: the segments used for the content photo (labels shared with the style's).
        style_segments: the segments used for the style photo.
    """

    image: torch.Tensor
    working: torch.Tensor
    report: dict[str, Any] = field(default_factory=dict)
    content_segments: Segmentation | None = None
    style_segments: Segmentation | None = None


def resolve_device(name: str) -> torch.device:
    """``"auto"`` picks CUDA when present; ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` as asked.

    Raises:
        DeviceError: another device type, or CUDA asked for without a visible GPU.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise DeviceError(f"unknown device {name!r}; use auto, cpu or cuda") from err
    if device.type not in ("cpu", "cuda"):
        raise DeviceError(f"device {name!r} is not supported; use auto, cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"--device {name} was asked for but no CUDA GPU is visible; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(f"--device {name}: only {torch.cuda.device_count()} CUDA GPU(s) are visible; use cuda:0")
    return device


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


@contextmanager
def _memory_hint(device: torch.device, size: int):
    """Turn running out of memory into a :class:`DeviceError` naming a ``--size`` that may fit."""
    try:
        yield
    except (MemoryError, RuntimeError) as err:
        oom = isinstance(err, (MemoryError, torch.OutOfMemoryError))
        if not oom and not any(phrase in str(err).lower() for phrase in _OOM_PHRASES):
            raise
        if device.type == "cuda":
            torch.cuda.empty_cache()
        smaller = max(32, size * 3 // 4 // 32 * 32)
        where, other = ("GPU ", " or --device cpu") if device.type == "cuda" else ("", "")
        raise DeviceError(f"ran out of {where}memory at working size {size} px; try --size {smaller}{other}") from err


def check_photo_size(name: str, height: int, width: int, config: TransferConfig) -> None:
    """Refuse a photo too small for the feature network, as stored or at the coarsest working size.

    Raises:
        InputError: naming ``name``, the size, and the ``--size`` or photo that would work.
    """
    short, long = min(height, width), max(height, width)
    if short < MIN_SIDE:
        raise InputError(
            f"{name}: the photo is {width}x{height}; photostyle needs at least {MIN_SIDE} px on the short side, "
            "give a larger photo"
        )
    coarsest = min(level_sizes(config.size, config.levels))
    working = round(short * coarsest / long)
    if working < MIN_SIDE:
        need = math.ceil(MIN_SIDE * long / short) * config.size // coarsest
        raise InputError(
            f"{name}: the photo is {width}x{height}, only {working} px on the short side at working size {coarsest}; "
            f"photostyle needs at least {MIN_SIDE}: use --size {need} or crop the photo"
        )


def stylise(
    content: torch.Tensor,
    style: torch.Tensor,
    content_seg: Segmentation | None = None,
    style_seg: Segmentation | None = None,
    config: TransferConfig | None = None,
    callback: Callback | None = None,
    timer: _Timer | None = None,
    state: StateFile | None = None,
) -> TransferResult:
    """Give ``content`` the look of ``style``, segment by segment.

    Args:
        content: ``(1, 3, H, W)`` RGB in [0, 1], full resolution.
        style: ``(1, 3, H', W')`` RGB in [0, 1].
        content_seg: segments of the content (any size; resized here), or ``None`` for one segment.
        style_seg: segments of the style photo with the same labels in the same order.
        config: settings (defaults: :class:`TransferConfig`).
        callback: called after each optimisation step (progress, intermediate saves).
        state: resume state: continued from when loaded, saved every ``state.every`` steps and on Ctrl-C.

    Returns:
        :class:`TransferResult`.

    Raises:
        DeviceError: the device is missing or ran out of memory (the message names a size that may fit).
    """
    config = config or TransferConfig()
    timer = timer or _Timer()
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    content_full, style = content.to(device), style.to(device)
    segmentation: dict[str, Any] = {"segmenter": "given"}
    if (content_seg is None or style_seg is None) and config.segmentation == "auto":
        with timer("segment"):
            outcome = segment_pair(
                content_full, style, method="auto", segmenter=config.segmenter, metric=config.similarity_metric,
                threshold=config.semantic_threshold, min_fraction=config.min_segment,
            )
        content_seg, style_seg = outcome.content, outcome.style
        segmentation = {"segmenter": outcome.segmenter, "grouping": outcome.grouping, "notes": outcome.notes}
    if content_seg is None or style_seg is None:
        content_seg = Segmentation(content.new_ones(1, 1, *content.shape[-2:]), ["all"])
        style_seg = Segmentation(style.new_ones(1, 1, *style.shape[-2:]), ["all"])
        segmentation = {"segmenter": "none"}

    with timer("build_losses"):
        layers = tuple(sorted({config.content_layer, *config.style_layers}))
        encoder = get_encoder(config.arch, config.weights, layers, config.pooling, str(device))
        critic = get_quality_critic(config.critic, str(device))

    image = init = None
    steps, interrupted, terms = 0, False, {}
    for level, size in enumerate(level_sizes(config.size, config.levels)):
        if state is not None and state.start is not None and level < state.start.level:
            continue  # finished before the interruption
        with timer("prepare"):
            content_small = io.resize_long_side(content_full, size)
            style_small = io.resize_long_side(style, size)
            content_masks = content_seg.resize(*content_small.shape[-2:]).masks.to(device)
            style_masks = style_seg.resize(*style_small.shape[-2:]).masks.to(device)
        with timer("build_losses"), _memory_hint(device, config.size):
            objective = _objective(config, encoder, critic, content_small, style_small, content_masks, style_masks)
        with timer("init"):
            if image is None:
                image = init = _start_point(config, content_small, style_small, content_masks, style_masks)
            else:  # carry the coarser result over as a local affine recolouring: sharp at once
                image = local_affine_upsample(previous, image, content_small, config.affine_radius, config.affine_eps)
        with timer("optimise"), _memory_hint(device, config.size):
            offset = level * config.iterations
            step_callback = None if callback is None else (lambda i, x, t, o=offset: callback(o + i, x, t))
            result = optimise(
                objective, image, config.iterations, config.optimizer, config.lr, step_callback,
                resume=None if state is None else state.resume_at(level),
                checkpoint=None if state is None else functools.partial(state.save, level=level),
                checkpoint_every=0 if state is None else state.every,
            )
        image, previous = result.image, content_small
        steps, terms = offset + result.steps, result.terms
        if result.interrupted:
            interrupted = True
            break

    with timer("upsample"):
        if config.output_size is not None:
            content_full = io.resize_long_side(content_full, config.output_size)
        look = blend_lab(previous, image, lightness=config.strength, chroma=config.strength * config.chroma)
        output = local_affine_upsample(
            previous, look, content_full, config.affine_radius, config.affine_eps,
            detail=config.detail, flat=config.flat_threshold, flat_radius=_flat_radius(config, image),
        )

    critic_report = None
    if critic is not None:
        with torch.no_grad():
            critic_report = {
                "name": critic.name,
                "higher_is_better": critic.higher_is_better,
                "before": float(critic(init)),
                "after": float(critic(image)),
            }
    report = {
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
        "device": str(device),
        "network": encoder.description,
        "segments": list(content_seg.labels),
        "segmentation": segmentation,
        "working_size": list(image.shape[-2:]),
        "output_size": list(output.shape[-2:]),
        "loss": terms,
        "critic": critic_report,
        "steps": steps,
        "interrupted": interrupted,
        "seconds": timer.seconds,
    }
    return TransferResult(output, image, report, content_seg, style_seg)


def _flat_radius(config: TransferConfig, image: torch.Tensor) -> int:
    """Window radius of the affine fit in flat regions: 1/40 of the working long side (8 px at 320 px)."""
    return max(config.affine_radius, round(max(image.shape[-2:]) / 40))


def level_sizes(size: int, levels: int) -> list[int]:
    """Working long sides of the coarse-to-fine pyramid, coarsest first, each half the next."""
    if levels < 1:
        raise ValueError(f"expected levels >= 1 but received {levels}")
    return [max(32, round(size / 2 ** (levels - 1 - i))) for i in range(levels)]


def _objective(
    config: TransferConfig,
    encoder: VGGEncoder,
    critic: Critic | None,
    content: torch.Tensor,
    style: torch.Tensor,
    content_masks: torch.Tensor,
    style_masks: torch.Tensor,
) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """The weighted sum of the paper's loss terms for one working size."""
    with torch.no_grad():
        content_feats = encoder(content)
        style_feats = encoder(style)
    content_loss = ContentLoss(content_feats[config.content_layer])
    style_loss = SegmentStyleLoss({n: style_feats[n] for n in config.style_layers}, style_masks, content_masks)
    photo_loss = PhotorealismLoss(content)

    def objective(image: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = encoder(image)
        terms = {
            "content": content_loss(feats[config.content_layer]),
            "style": style_loss(feats),
            "photo": photo_loss(image),
        }
        total = (
            config.content_weight * terms["content"]
            + config.style_weight * terms["style"]
            + config.photo_weight * terms["photo"]
        )
        if critic is not None:
            terms["critic"] = critic.loss(image)
            total = total + config.critic_weight * terms["critic"]
        terms["total"] = total
        return terms

    return objective


@functools.lru_cache(maxsize=4)
def get_encoder(
    arch: str, weights: str | None, layers: tuple[str, ...] = DEFAULT_LAYERS, pooling: str = "avg", device: str = "cpu"
) -> VGGEncoder:
    """The feature network, loaded once per process and settings (batch and web reuse it)."""
    return load_encoder(arch, weights=weights, layers=layers, pooling=pooling, device=device)


@functools.lru_cache(maxsize=4)
def get_quality_critic(name: str, device: str = "cpu") -> Critic | None:
    """The aesthetic critic of the loss, loaded once per process.

    ``"auto"`` is NIMA when its weights are present, else the offline NIQE, so the
    term is never silently absent; the report names the critic that ran.
    """
    if name == "auto":
        try:
            return get_critic("nima").to(device)
        except WeightsError as err:
            log.warning("NIMA weights not available (%s); using the offline %s critic", err, DEFAULT_OFFLINE_CRITIC)
            name = DEFAULT_OFFLINE_CRITIC
    critic = get_critic(name)
    return None if critic is None else critic.to(device)


def _start_point(
    config: TransferConfig,
    content: torch.Tensor,
    style: torch.Tensor,
    content_masks: torch.Tensor,
    style_masks: torch.Tensor,
) -> torch.Tensor:
    """The image the optimisation starts from, ``(1, 3, h, w)`` in [0, 1]."""
    if config.init in ("distribution", "reinhard"):
        return segment_colour_transfer(content, style, content_masks, style_masks, method=config.init)
    if config.init == "content":
        return content.clone()
    if config.init == "noise":
        generator = torch.Generator(device="cpu").manual_seed(config.seed)
        noise = torch.rand(content.shape, generator=generator).to(content.device)
        return 0.5 * content + 0.5 * noise
    if config.init == "style":
        return torch.nn.functional.interpolate(style, size=content.shape[-2:], mode="bilinear", antialias=True)
    raise ValueError(f"unknown init {config.init!r}; expected distribution, reinhard, content, noise or style")


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def transfer(
    content_path: str | Path,
    style_path: str | Path,
    output_path: str | Path,
    config: TransferConfig | None = None,
    content_mask: str | Path | None = None,
    style_mask: str | Path | None = None,
    overwrite: bool = False,
    callback: Callback | None = None,
    keep_state: int | None = None,
    resume: bool = False,
    report_path: str | Path | None = None,
    keep_partial: bool = True,
) -> TransferResult:
    """Files in, file out: the command line's ``transfer``.

    Every file it will write is checked before any work: the output (and ``report_path``, a JSON
    report of the run) must not be one of the inputs, whatever ``overwrite`` says, and an existing
    output or report is replaced only with ``overwrite``, or by ``resume`` when it continues a saved
    state of the same files and settings (the output and report are then that run's own). Then it
    loads both photos, reads the masks, runs :func:`stylise` and writes the result atomically (the
    content's EXIF and alpha are kept) and the report.

    With ``keep_state=N`` a resume state (:mod:`photostyle.state`) is saved next to the output
    every N steps (0: only on Ctrl-C) and deleted once the run finishes. An interrupted run writes
    its best result so far unless ``keep_partial`` is false (batch: the file is left as it was).

    Raises:
        InputError: an output is an input, or a photo or mask cannot be used.
        OutputError: an output exists (without ``overwrite``) or cannot be written.
    """
    config = config or TransferConfig()
    resolve_device(config.device)
    inputs = (content_path, style_path, content_mask, style_mask)
    state = None
    if keep_state is not None or resume:
        state = StateFile(output_path, _fingerprint(inputs, config), every=keep_state or 0)
    io.check_distinct(
        {"the output": output_path, "the report": report_path, "the resume state": state and state.path}, inputs
    )
    if resume and state.fingerprint:
        state.load()
    own_files = overwrite or (state is not None and state.start is not None)
    io.check_output_path(output_path, overwrite=own_files)
    if report_path is not None:
        io.check_writable(report_path, overwrite=own_files)
    if state is not None:
        io.check_writable(state.path, overwrite=True)

    timer = _Timer()
    with timer("load"):
        content = io.load_image(content_path)
        style = io.load_image(style_path)
        for path, loaded in ((content_path, content), (style_path, style)):
            check_photo_size(str(path), *loaded.tensor.shape[-2:], config)
    with timer("segment"):
        content_seg, style_seg, notes = load_mask_pair(
            content_mask, style_mask, tuple(content.tensor.shape[-2:]), tuple(style.tensor.shape[-2:])
        )
        if config.segmentation == "masks" and content_seg is None:
            raise MaskError("--segmentation masks needs --content-mask and --style-mask; or use auto or none")
        if config.segmentation == "none":
            content_seg = style_seg = None
    result = stylise(content.tensor, style.tensor, content_seg, style_seg, config, callback, timer, state)
    interrupted = result.report["interrupted"]
    if keep_partial or not interrupted:
        with timer("save"):
            io.save_image(result.image.cpu(), output_path, alpha=content.alpha, exif=content.exif, overwrite=own_files)
    if state is not None and not interrupted:
        state.remove()
    result.report["output_written"] = keep_partial or not interrupted
    result.report["resume_state"] = str(state.path) if state is not None and state.path.is_file() else None
    result.report["segment_notes"] = notes
    result.report["peak_rss_mb"] = peak_rss_mb()
    if report_path is not None:
        io.write_atomically(report_path, json.dumps(result.report, indent=2, default=str) + "\n")
    return result


def _fingerprint(inputs: tuple[str | Path | None, ...], config: TransferConfig) -> str:
    """The resume fingerprint of ``inputs`` and ``config``; ``""`` when an input cannot be read
    (loading it reports why)."""
    try:
        return fingerprint(inputs, asdict(config))
    except OSError:
        return ""
