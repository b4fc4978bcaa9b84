"""The whole method in one place, top-down.

:func:`transfer` reads like the paper: load images, get segments, group labels,
build losses, optimise, upsample, save. Each step is a module of its own; the
command line, the web page and batch processing all call :func:`transfer` (or
:func:`stylise` for tensors already in memory).
"""

from __future__ import annotations

import functools
import logging
import resource
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from . import io
from .colour import segment_colour_transfer
from .critic import DEFAULT_OFFLINE_CRITIC, Critic, get_critic
from .errors import DeviceError, WeightsError
from .features import DEFAULT_LAYERS, VGGEncoder, load_encoder
from .losses import ContentLoss, PhotorealismLoss, SegmentStyleLoss
from .masks import Segmentation, load_dpst_mask, match_segmentations
from .optimise import Callback, optimise
from .upsample import local_affine_upsample

log = logging.getLogger(__name__)

STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")


@dataclass
class TransferConfig:
    """Every setting of a transfer. The defaults are the ones the benchmark reports.

    Sizes are long sides in pixels. Weights multiply size-independent terms
    (relative feature and Gram errors, Laplacian energy per pixel).
    """

    size: int = 384
    output_size: int | None = None
    iterations: int = 150
    levels: int = 1
    optimizer: Literal["adam", "lbfgs"] = "adam"
    lr: float = 0.01
    init: Literal["distribution", "reinhard", "content", "noise", "style"] = "distribution"
    content_weight: float = 1.0
    style_weight: float = 10.0
    photo_weight: float = 100.0
    content_layer: str = "conv4_2"
    style_layers: tuple[str, ...] = STYLE_LAYERS
    arch: Literal["vgg16", "vgg19"] = "vgg16"
    weights: str | None = "default"
    pooling: Literal["max", "avg"] = "avg"
    affine_radius: int = 2
    affine_eps: float = 1e-4
    critic: str = "none"
    critic_weight: float = 0.05
    device: str = "auto"
    seed: int = 0


@dataclass
class TransferResult:
    """What :func:`stylise` returns.

    Attributes:
        image: ``(1, 3, H, W)`` in [0, 1] at the output size.
        working: ``(1, 3, h, w)`` the optimised image at working size.
        report: timings (s) per stage, loss terms, settings, weights, segments.
    """

    image: torch.Tensor
    working: torch.Tensor
    report: dict[str, Any] = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` picks CUDA when present; asking for CUDA without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise DeviceError(f"unknown device {name!r}; use auto, cpu or cuda") from err


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


def stylise(
    content: torch.Tensor,
    style: torch.Tensor,
    content_seg: Segmentation | None = None,
    style_seg: Segmentation | None = None,
    config: TransferConfig | None = None,
    callback: Callback | None = None,
    timer: _Timer | None = None,
) -> TransferResult:
    """Give ``content`` the look of ``style``, segment by segment.

    Args:
        content: ``(1, 3, H, W)`` RGB in [0, 1], full resolution.
        style: ``(1, 3, H', W')`` RGB in [0, 1].
        content_seg: segments of the content (any size; resized here), or ``None`` for one segment.
        style_seg: segments of the style photo with the same labels in the same order.
        config: settings (defaults: :class:`TransferConfig`).
        callback: called after each optimisation step (progress, intermediate saves).

    Returns:
        :class:`TransferResult`.
    """
    config = config or TransferConfig()
    timer = timer or _Timer()
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    content_full, style = content.to(device), style.to(device)
    if content_seg is None or style_seg is None:
        content_seg = Segmentation(content.new_ones(1, 1, *content.shape[-2:]), ["all"])
        style_seg = Segmentation(style.new_ones(1, 1, *style.shape[-2:]), ["all"])

    with timer("build_losses"):
        layers = tuple(sorted({config.content_layer, *config.style_layers}))
        encoder = get_encoder(config.arch, config.weights, layers, config.pooling, str(device))
        critic = get_quality_critic(config.critic, str(device))

    image = init = None
    steps, interrupted, terms = 0, False, {}
    for level, size in enumerate(level_sizes(config.size, config.levels)):
        with timer("prepare"):
            content_small = io.resize_long_side(content_full, size)
            style_small = io.resize_long_side(style, size)
            content_masks = content_seg.resize(*content_small.shape[-2:]).masks.to(device)
            style_masks = style_seg.resize(*style_small.shape[-2:]).masks.to(device)
        with timer("build_losses"):
            objective = _objective(config, encoder, critic, content_small, style_small, content_masks, style_masks)
        with timer("init"):
            if image is None:
                image = init = _start_point(config, content_small, style_small, content_masks, style_masks)
            else:  # carry the coarser result over as a local affine recolouring: sharp at once
                image = local_affine_upsample(previous, image, content_small, config.affine_radius, config.affine_eps)
        with timer("optimise"):
            offset = level * config.iterations
            step_callback = None if callback is None else (lambda i, x, t, o=offset: callback(o + i, x, t))
            result = optimise(objective, image, config.iterations, config.optimizer, config.lr, step_callback)
        image, previous = result.image, content_small
        steps, terms = steps + result.steps, result.terms
        if result.interrupted:
            interrupted = True
            break

    with timer("upsample"):
        if config.output_size is not None:
            content_full = io.resize_long_side(content_full, config.output_size)
        output = local_affine_upsample(previous, image, content_full, config.affine_radius, config.affine_eps)

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
        "working_size": list(image.shape[-2:]),
        "output_size": list(output.shape[-2:]),
        "loss": terms,
        "critic": critic_report,
        "steps": steps,
        "interrupted": interrupted,
        "seconds": timer.seconds,
    }
    return TransferResult(image=output, working=image, report=report)


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


def load_segmentations(
    content_mask: str | Path | None, style_mask: str | Path | None, content_size: tuple[int, int], style_size: tuple[int, int]
) -> tuple[Segmentation | None, Segmentation | None, list[str]]:
    """Hand-made DPST masks for both photos, matched label by label (or ``None`` when not given)."""
    if content_mask is None and style_mask is None:
        return None, None, []
    if content_mask is None or style_mask is None:
        raise ValueError("give --content-mask and --style-mask together")
    content_seg = load_dpst_mask(content_mask, size=content_size)
    style_seg = load_dpst_mask(style_mask, size=style_size)
    return match_segmentations(content_seg, style_seg)


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
) -> TransferResult:
    """Files in, file out: the command line's ``transfer``.

    Loads both photos, reads the masks, runs :func:`stylise` and writes the result
    atomically next to nothing else (the content's EXIF and alpha are kept).
    """
    timer = _Timer()
    with timer("load"):
        content = io.load_image(content_path)
        style = io.load_image(style_path)
    with timer("segment"):
        content_seg, style_seg, notes = load_segmentations(
            content_mask, style_mask, tuple(content.tensor.shape[-2:]), tuple(style.tensor.shape[-2:])
        )
    result = stylise(content.tensor, style.tensor, content_seg, style_seg, config, callback, timer)
    with timer("save"):
        io.save_image(
            result.image.cpu(), output_path, alpha=content.alpha, exif=content.exif, overwrite=overwrite
        )
    result.report["segment_notes"] = notes
    result.report["peak_rss_mb"] = peak_rss_mb()
    return result
