"""Where and how a transfer runs: the device, the memory it needs and has, the networks loaded once.

* :func:`resolve_device` turns ``--device`` into a :class:`torch.device`;
* :func:`fit_sizes`, :func:`check_photo_size` and :func:`estimate_peak_bytes` keep every
  transfer within the memory at hand, by design, before any work starts;
  :func:`memory_hint` turns an out-of-memory error into advice;
* :func:`get_quality_critic` loads the aesthetic critic once per process (the feature network:
  :func:`photostyle.features.get_encoder`);
* :func:`compute_dtype` and :func:`encode`: bf16 autocast and channels-last on CUDA and on CPUs with native
  bf16, fp32 elsewhere.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import resource
import warnings
from contextlib import contextmanager
from dataclasses import replace

import torch

from .critic import DEFAULT_OFFLINE_CRITIC, Critic, get_critic
from .errors import DeviceError, InputError, WeightsError
from .features import VGGEncoder
from .segmentation.auto import SEGMENT_SIDE, segment_shape
from .settings import TransferConfig, level_sizes
from .texture import DETAIL_SIDE

log = logging.getLogger(__name__)

MIN_SIDE = 16
"""Shortest side in px a photo needs, in its file and at working size: conv5_1 sees 16 px as one."""
FRAME_ASPECT = 4 / 3
"""A photo squarer than this works at the pixel count of a frame of this aspect (:func:`fit_sizes`)."""
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
DETAIL_BYTES_PER_PIXEL = 250
"""Per pixel of the texture stage (at most :data:`~photostyle.texture.DETAIL_SIDE` on the long side,
output and style photo alike): detail bands, feathered segments (190 B measured with 6 segments)."""


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


@contextmanager
def memory_hint(device: torch.device, size: int):
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
    """``config`` with the working size fitted to the photo's shape and no size above its long side.

    The working size is a long side, and a photo squarer than 4:3 would have more pixels at it than a
    4:3 one, and cost more: the optimisation's time grows with the working pixels (a square 700 px
    photo took 67 s at 320 px against 45 s for 3:2 ones on a 2-core CPU). Such a photo works at the
    pixel count of a 4:3 frame of that long side instead (:data:`FRAME_ASPECT`; a square one at 0.87x,
    277 px for 320): at 320 px every 700 px photo of the benchmark then took at most 59 s with hand
    masks on that CPU, the square ones 53 s.

    photostyle never enlarges the content photo. A working size above it would only upsample it
    (slower, no detail gained; the floor is the network's 32 px), so it is lowered to the photo's long
    side without a word: the default, 700 px, is a size to paint at, and smaller photos are painted at
    their own. An output size above the photo would be an interpolated enlargement, which any editor
    makes better on request: it is lowered with a warning, so a batch with one ``--output-size`` over
    mixed photos still runs.

    Args:
        config: the settings asked for.
        height, width: the content photo's size in px.

    Returns:
        ``config`` itself, or a copy with the lowered sizes.

    >>> fit_sizes(TransferConfig(size=320), 700, 700).size, fit_sizes(TransferConfig(size=320), 467, 700).size
    (277, 320)
    """
    long, short = max(height, width), max(min(height, width), 1)
    changes: dict[str, int] = {}
    size = min(config.size, max(32, round(config.size * math.sqrt(long / short / FRAME_ASPECT))), max(long, 32))
    if size != config.size:
        changes["size"] = size
    if config.output_size is not None and config.output_size > long:
        changes["output_size"] = long
        warnings.warn(f"--output-size {config.output_size} is larger than the content photo ({width}x{height}); "
                      f"writing it at its own size, {long} px: photostyle does not enlarge photos", stacklevel=2)
    return replace(config, **changes) if changes else config


def estimate_peak_bytes(height: int, width: int, size: int) -> int:
    """Peak memory in bytes of a transfer of a ``height x width`` content photo at working long side ``size``.

    A bound by design, from the constants above (measured on CPU; on a GPU the same tensors live
    there): a fixed base, :data:`FULL_BYTES_PER_PIXEL` per photo pixel, and the largest of the
    optimisation at working size, the segmentation and the texture stage at their bounded sizes,
    which never overlap.

    >>> round(estimate_peak_bytes(5773, 8660, 700) / 2**30, 1)  # 50 megapixels, default settings
    3.5
    """
    work = math.prod(segment_shape(height, width, size))
    segmented = math.prod(segment_shape(height, width, segment_side(size)))
    detail = math.prod(segment_shape(height, width, DETAIL_SIDE))
    return (MEMORY_BASE_BYTES + FULL_BYTES_PER_PIXEL * height * width
            + max(WORKING_BYTES_PER_PIXEL * work, SEGMENT_BYTES_PER_PIXEL * segmented, DETAIL_BYTES_PER_PIXEL * detail))


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
    advice = "free some memory first"
    for s in smaller:  # the largest working size at which a downscaled photo of this shape fits
        fixed = estimate_peak_bytes(height, width, s) - FULL_BYTES_PER_PIXEL * height * width  # no more if smaller
        megapixels = math.floor(max(0, budget - fixed) / FULL_BYTES_PER_PIXEL / 1e5) / 10
        if megapixels >= 0.1:
            advice = ("" if s == size else f"use --size {s} and ") + f"downscale it to {megapixels:g} megapixels or less"
            break
    raise InputError(f"{name}: the photo is {width}x{height} ({height * width / 1e6:.0f} megapixels) and needs {have}; "
                     f"{advice}")


def segment_side(size: int) -> int:
    """Long side in px at which photos are segmented for working size ``size``: never below it."""
    return max(SEGMENT_SIDE, size)


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (x86 AVX512-BF16 or AMX-BF16, as Linux reports them).

    Only then does oneDNN run the feature network faster in bf16 than in fp32 (1.8x for a VGG16 step
    at 320 px on a 2-core AMD EPYC); elsewhere bf16 is emulated and slower.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return bool({"avx512_bf16", "amx_bf16"} & set(flags)) and torch.backends.mkldnn.is_available()


def compute_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of the feature network for a ``precision`` setting, or ``None`` for plain fp32.

    ``"auto"`` is bf16 on CUDA (tensor cores, half the activation memory) and on CPUs with native bf16
    (:func:`cpu_has_native_bf16`), fp32 elsewhere: on other CPUs bf16 is slower than fp32.

    >>> compute_dtype("fp32", torch.device("cuda")), compute_dtype("bf16", torch.device("cpu"))
    (None, torch.bfloat16)
    """
    native = device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())
    if precision == "bf16" or (precision == "auto" and native):
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


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
