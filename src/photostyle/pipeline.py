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
import os
import resource
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from . import io
from .colour import blend_lab, segment_colour_transfer
from .critic import DEFAULT_OFFLINE_CRITIC, Critic, get_critic
from .errors import DeviceError, InputError, MaskError, WeightsError
from .features import DEFAULT_LAYERS, VGGEncoder, load_encoder
from .losses import ContentLoss, PhotorealismLoss, SegmentStyleLoss
from .masks import Segmentation, load_mask_pair
from .settings import TransferConfig
from .segmentation.auto import SEGMENT_SIDE, segment_pair, segment_shape
from .optimise import Callback, optimise
from .state import StateFile, fingerprint
from .upsample import local_affine_upsample

log = logging.getLogger(__name__)

MIN_SIDE = 16
"""Shortest side in px a photo needs, in its file and at working size: conv5_1 sees 16 px as one."""
_OOM_PHRASES = ("out of memory", "not enough memory", "can't allocate memory")

# The memory a transfer needs, by design (see estimate_peak_bytes); measured on CPU with VGG16.
MEMORY_BASE_BYTES = 700 * 2**20
"""Whatever the sizes: Python, torch, VGG16's weights and buffers (about 550 MB measured)."""
FULL_BYTES_PER_PIXEL = 40
"""Per pixel of the content photo: decoding it (27 B, briefly), then its float copy and the float
output (12 B each) and the 8-bit copy being written (7 B); every other full-resolution step runs in tiles."""
WORKING_BYTES_PER_PIXEL = 3200
"""Per pixel at working size: VGG activations and their gradients for the content and the style,
the Matting Laplacian, Adam's state (2.6 to 2.9 KB measured at 320 to 960 px)."""
SEGMENT_BYTES_PER_PIXEL = 200
"""Per pixel segmented (at most :data:`~photostyle.segmentation.auto.SEGMENT_SIDE` on the long side):
co-segmentation's upsampled activations, guided filter and colour model (165 B measured)."""


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

    def to_pil(self) -> Any:
        """The result as an 8-bit RGB ``PIL.Image.Image``."""
        from PIL import Image

        pixels = (self.image[0].detach().cpu().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        return Image.fromarray(pixels)

    def save(self, path: str | Path, *, overwrite: bool = False, quality: int = 95) -> Path:
        """Write the result (format from the suffix) atomically; see :func:`photostyle.io.save_image`."""
        return io.save_image(self.image.cpu(), path, overwrite=overwrite, quality=quality)

    def to_json(self) -> str:
        """The report (settings, timings, losses, segments) as JSON, as ``--report`` writes it."""
        return json.dumps(self.report, indent=2, default=str) + "\n"


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
    """Refuse, before any work, a photo the transfer cannot take at ``config``'s sizes.

    The working size is ``config.size``, lowered to the photo's long side (:func:`fit_sizes`). A photo
    is refused when it is too small for the feature network, as stored or at the coarsest working
    size, or when :func:`estimate_peak_bytes` exceeds :func:`memory_budget`.

    Raises:
        InputError: naming ``name``, the size, and the ``--size`` or photo size that would work.
    """
    short, long = min(height, width), max(height, width)
    if short < MIN_SIDE:
        raise InputError(
            f"{name}: the photo is {width}x{height}; photostyle needs at least {MIN_SIDE} px on the short side, "
            "give a larger photo"
        )
    size = min(config.size, max(long, 32))
    coarsest = min(level_sizes(size, config.levels))
    working = round(short * coarsest / long)
    if working < MIN_SIDE:
        need = math.ceil(MIN_SIDE * long / short) * size // coarsest
        raise InputError(
            f"{name}: the photo is {width}x{height}, only {working} px on the short side at working size {coarsest}; "
            f"photostyle needs at least {MIN_SIDE}: use --size {need} or crop the photo"
        )
    _check_memory(name, height, width, size, resolve_device(config.device))


def fit_sizes(config: TransferConfig, height: int, width: int) -> TransferConfig:
    """``config`` with ``size`` and ``output_size`` no larger than the content photo's long side.

    photostyle never enlarges the content photo: a working size above it would only upsample it
    (slower, no detail gained; the floor is the network's 32 px) and an output above it would be
    an interpolated enlargement, which any editor makes better on request. Each lowering is
    reported with a warning, so a batch with one ``--output-size`` over mixed photos still runs.

    Args:
        config: the settings asked for.
        height, width: the content photo's size in px.

    Returns:
        ``config`` itself, or a copy with the lowered sizes.
    """
    long = max(height, width)
    changes: dict[str, int] = {}
    if config.size > max(long, 32):
        changes["size"] = max(long, 32)
        warnings.warn(f"--size {config.size} is larger than the content photo ({width}x{height}); working at its "
                      f"own size, {changes['size']} px, since a larger one would only enlarge it", stacklevel=2)
    if config.output_size is not None and config.output_size > long:
        changes["output_size"] = long
        warnings.warn(f"--output-size {config.output_size} is larger than the content photo ({width}x{height}); "
                      f"writing it at its own size, {long} px: photostyle does not enlarge photos", stacklevel=2)
    return replace(config, **changes) if changes else config


def estimate_peak_bytes(height: int, width: int, size: int) -> int:
    """Peak memory in bytes of a transfer of a ``height x width`` content photo at working long side ``size``.

    A bound by design, from the constants above (measured on CPU; on a GPU the same tensors live
    there): a fixed base, :data:`FULL_BYTES_PER_PIXEL` per photo pixel, and the larger of the
    optimisation at working size and the segmentation at its bounded size, which never overlap.

    >>> round(estimate_peak_bytes(5773, 8660, 320) / 2**30, 1)  # 50 megapixels, default settings
    2.7
    """
    work = math.prod(segment_shape(height, width, size))
    segmented = math.prod(segment_shape(height, width, _segment_side(size)))
    return (MEMORY_BASE_BYTES + FULL_BYTES_PER_PIXEL * height * width
            + max(WORKING_BYTES_PER_PIXEL * work, SEGMENT_BYTES_PER_PIXEL * segmented))


def memory_budget(device: torch.device) -> int | None:
    """Bytes this process may reach on ``device``, or ``None`` where that cannot be known.

    CPU (Linux): its resident memory plus the kernel's ``MemAvailable``, within the headroom of a
    container's ``memory.max`` (cgroup v2). CUDA: the device's free memory plus what torch's
    allocator already holds.
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device)
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
        with open("/proc/self/statm") as f:
            resident = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    try:
        with open("/sys/fs/cgroup/memory.max") as f, open("/sys/fs/cgroup/memory.current") as g:
            available = min(available, int(f.read()) - int(g.read()))
    except (OSError, ValueError):  # no cgroup v2, or "max": no container limit
        pass
    return resident + max(0, available)


def _check_memory(name: str, height: int, width: int, size: int, device: torch.device) -> None:
    """Raise :class:`InputError` naming the ``--size`` or photo size that fits, if working size ``size`` does not."""
    budget = memory_budget(device)
    need = estimate_peak_bytes(height, width, size)
    if budget is None or need <= budget:
        return
    where = "GPU memory" if device.type == "cuda" else "memory"
    have = f"about {need / 2**30:.1f} GB of {where} but {budget / 2**30:.1f} GB is free"
    smaller = (size, *range(size // 32 * 32, 31, -32))
    fits = next((s for s in smaller if estimate_peak_bytes(height, width, s) <= budget), None)
    if fits is not None:
        raise InputError(f"{name}: at working size {size} px the transfer needs {have}; use --size {fits} or less")
    fixed = need - FULL_BYTES_PER_PIXEL * height * width  # a smaller photo of this shape needs no more
    megapixels = math.floor(max(0, budget - fixed) / FULL_BYTES_PER_PIXEL / 1e5) / 10
    advice = f"downscale it to {megapixels:g} megapixels or less" if megapixels >= 0.1 else "free some memory first"
    raise InputError(f"{name}: the photo is {width}x{height} ({height * width / 1e6:.0f} megapixels) and needs {have}; "
                     f"{advice}")


def _segment_side(size: int) -> int:
    """Long side in px at which photos are segmented for working size ``size``: never below it."""
    return max(SEGMENT_SIDE, size)


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

    Sizes are fitted first (:func:`fit_sizes`: never above the content photo, with a warning) and
    both photos checked (:func:`check_photo_size`), before any work. Segmentation runs at a long
    side of at most ``max(SEGMENT_SIDE, size)`` and everything at full resolution in row tiles,
    so the peak memory stays within :func:`estimate_peak_bytes`.

    Raises:
        InputError: a photo is too small, or the sizes need more memory than there is (the message
            names a ``--size`` or photo size that fits).
        DeviceError: the device is missing or ran out of memory (the message names a size that may fit).
    """
    config = fit_sizes(config or TransferConfig(), *content.shape[-2:])
    for name, photo in (("content photo", content), ("style photo", style)):
        check_photo_size(name, *photo.shape[-2:], config)
    timer = timer or _Timer()
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    content_full, style = content.to(device), style.to(device)
    segment_side = _segment_side(config.size)
    segmentation: dict[str, Any] = {"segmenter": "given"}
    if (content_seg is None or style_seg is None) and config.segmentation == "auto":
        with timer("segment"):
            outcome = segment_pair(
                content_full, style, method="auto", segmenter=config.segmenter, metric=config.similarity_metric,
                threshold=config.semantic_threshold, min_fraction=config.min_segment, max_side=segment_side,
            )
        content_seg, style_seg = outcome.content, outcome.style
        segmentation = {"segmenter": outcome.segmenter, "grouping": outcome.grouping, "notes": outcome.notes,
                        "pairing": outcome.pairing, "named": outcome.named}
    if content_seg is None or style_seg is None:
        content_seg = Segmentation(content.new_ones(1, 1, *segment_shape(*content.shape[-2:], segment_side)), ["all"])
        style_seg = Segmentation(style.new_ones(1, 1, *segment_shape(*style.shape[-2:], segment_side)), ["all"])
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

    objective = None  # free the working-size losses before the full-resolution steps
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
        "precision": str(compute_dtype(config.precision, device) or torch.float32).removeprefix("torch."),
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
    features = functools.partial(encode, encoder, dtype=compute_dtype(config.precision, content.device))
    with torch.no_grad():
        content_feats = features(content)
        style_feats = features(style)
    content_loss = ContentLoss(content_feats[config.content_layer])
    style_loss = SegmentStyleLoss({n: style_feats[n] for n in config.style_layers}, style_masks, content_masks)
    photo_loss = PhotorealismLoss(content)

    def objective(image: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = features(image)
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


def compute_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of the feature network for a ``precision`` setting, or ``None`` for plain fp32.

    ``"auto"`` is bf16 on CUDA (tensor cores, half the activation memory) and fp32 elsewhere:
    on CPU bf16 is slower than fp32 on most processors.

    >>> compute_dtype("auto", torch.device("cpu")), compute_dtype("bf16", torch.device("cpu"))
    (None, torch.bfloat16)
    """
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    if precision in ("auto", "fp32"):
        return None
    raise ValueError(f"expected precision 'auto', 'fp32' or 'bf16' but received {precision!r}")


def encode(encoder: VGGEncoder, image: torch.Tensor, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """``encoder(image)``, under autocast to ``dtype`` with channels-last memory when one is given.

    The features come back in fp32 whatever ``dtype``, so Gram matrices and losses are summed in fp32.
    """
    if dtype is None:
        return encoder(image)
    with torch.autocast(image.device.type, dtype=dtype):
        feats = encoder(image.contiguous(memory_format=torch.channels_last))
    return {name: f.float() for name, f in feats.items()}


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
    lut_path: str | Path | None = None,
    lut_size: int = 33,
    hald_path: str | Path | None = None,
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

    ``lut_path`` (``.cube``, ``lut_size`` nodes per axis) and ``hald_path`` (Hald CLUT, 16-bit PNG)
    receive the global colour map that best reproduces the result from the content photo
    (:mod:`photostyle.lut`); how well it does is in the report's ``"lut"``.

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
    io.check_distinct({"the output": output_path, "the report": report_path, "the resume state": state and state.path,
                       "the LUT": lut_path, "the Hald CLUT": hald_path}, inputs)
    if resume and state.fingerprint:
        state.load()
    own_files = overwrite or (state is not None and state.start is not None)
    io.check_output_path(output_path, overwrite=own_files)
    for path in (report_path, lut_path):
        if path is not None:
            io.check_writable(path, overwrite=own_files)
    if hald_path is not None:
        io.check_output_path(hald_path, overwrite=own_files)
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
            io.save_image(
                result.image.cpu(), output_path, alpha=content.alpha, icc_profile=content.icc_profile,
                exif=content.exif, bit_depth=io.output_bit_depth(output_path, content.bit_depth), overwrite=own_files,
            )
    if state is not None and not interrupted:
        state.remove()
    result.report["output_written"] = keep_partial or not interrupted
    result.report["resume_state"] = str(state.path) if state is not None and state.path.is_file() else None
    result.report["segment_notes"] = notes
    if (lut_path is not None or hald_path is not None) and not interrupted:
        with timer("lut"):
            result.report["lut"] = _export_look(content.tensor, result.image, lut_path, lut_size, hald_path, own_files)
    result.report["peak_rss_mb"] = peak_rss_mb()
    if report_path is not None:
        io.write_atomically(report_path, result.to_json())
    return result


def _export_look(
    content: torch.Tensor, result: torch.Tensor, lut_path: str | Path | None, size: int,
    hald_path: str | Path | None, overwrite: bool,
) -> dict[str, Any]:
    """Fit the global LUT of ``content`` -> ``result`` ``(1, 3, H, W)``, write it, and say how well it fits."""
    from .lut import fit_error, fit_lut

    content = io.resize_long_side(content, max(result.shape[-2:])) if content.shape != result.shape else content
    look = fit_lut(content, result.cpu(), size)
    if lut_path is not None:
        look.write_cube(lut_path)
    if hald_path is not None:
        look.write_hald(hald_path, overwrite=overwrite)
    error = fit_error(look, content, result.cpu())
    return {"cube": None if lut_path is None else str(lut_path), "size": size,
            "hald": None if hald_path is None else str(hald_path), "ciede2000_mean": error["mean"],
            "ciede2000_p95": error["p95"], "note": "a global map: the local, per-region parts of the look are not in it"}


def _fingerprint(inputs: tuple[str | Path | None, ...], config: TransferConfig) -> str:
    """The resume fingerprint of ``inputs`` and ``config``; ``""`` when an input cannot be read
    (loading it reports why)."""
    try:
        return fingerprint(inputs, asdict(config))
    except OSError:
        return ""
