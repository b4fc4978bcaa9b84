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
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from . import io
from .colour import blend_lab, chroma_limits, scale_chroma, segment_colour_transfer
from .critic import Critic
from .errors import OutputError
from .features import VGGEncoder, get_encoder
from .losses import ContentLoss, PhotorealismLoss, SegmentStyleLoss
from .masks import Segmentation
from .optimise import Callback, optimise
from .runtime import (check_photo_size, compute_dtype, encode, fit_sizes, get_quality_critic,
                      memory_hint, peak_rss_mb, resolve_device, segment_side)
from .segmentation.auto import MaskSource, SegmentationOutcome, segment_pair
from .settings import TransferConfig, level_sizes
from .state import StateFile, fingerprint
from .texture import DETAIL_SIDE, match_texture
from .upsample import add_resampled, local_affine_upsample

log = logging.getLogger(__name__)


@dataclass
class CriticScore:
    """The aesthetic critic's score of the start point and of the result (working size).

    Attributes:
        name: the critic (``"nima"``, ``"brisque"``, ``"niqe"``).
        higher_is_better: whether a larger score means a better photo.
        before: score of the image the optimisation started from.
        after: score of the optimised image.
    """

    name: str
    higher_is_better: bool
    before: float
    after: float


@dataclass
class LookExport:
    """The global colour map written by :func:`transfer` (``lut_path``/``hald_path``) and how well it fits.

    Attributes:
        cube: the ``.cube`` file written, or ``None``.
        size: nodes per axis of the LUT.
        hald: the Hald CLUT written, or ``None``.
        ciede2000_mean: mean CIEDE2000 between the result and the LUT applied to the content.
        ciede2000_p95: its 95th percentile.
        note: what a global map cannot hold.
    """

    cube: str | None
    size: int
    hald: str | None
    ciede2000_mean: float
    ciede2000_p95: float
    note: str = "a global map: the local, per-region parts of the look are not in it"


@dataclass
class TransferResult:
    """What :func:`stylise` (and :func:`transfer`) return: the picture and everything about the run.

    Attributes:
        image: ``(1, 3, H, W)`` in [0, 1] at the output size.
        working: ``(1, 3, h, w)`` in [0, 1], the optimised image at working size.
        segmentation: where the segments came from and the segments themselves
            (``.content``, ``.style``, ``.labels``, ``.notes``, ``.pairing``).
        config: the settings used, after :func:`fit_sizes`.
        device: the device the work ran on (``"cpu"``, ``"cuda:0"``).
        precision: the feature network's compute precision (``"float32"``, ``"bfloat16"``).
        network: the feature network and its weights, in words.
        loss: the loss terms of the best iterate of the last level run (``content``, ``style``, ``photo``,
            [``critic``], ``total``).
        critic: the critic's scores, or ``None`` without a critic.
        steps: optimisation steps done, over all levels.
        interrupted: the optimisation was stopped (Ctrl-C, SIGTERM) before its last step.
        seconds: wall time per stage (``load``, ``segment``, ``optimise``, ...), in s.
        peak_rss_mb: the process's peak resident memory so far, in MiB.
        output_written: :func:`transfer` wrote the output file (``False`` from :func:`stylise`).
        resume_state: the resume state file left for ``--resume``, or ``None``.
        look: the exported LUT and its fit (:func:`transfer` with ``lut_path``/``hald_path``), else ``None``.
    """

    image: torch.Tensor
    working: torch.Tensor
    segmentation: SegmentationOutcome
    config: TransferConfig
    device: str
    precision: str
    network: str
    loss: dict[str, float]
    critic: CriticScore | None
    steps: int
    interrupted: bool
    seconds: dict[str, float]
    peak_rss_mb: float
    output_written: bool = False
    resume_state: str | None = None
    look: LookExport | None = None

    @property
    def total_seconds(self) -> float:
        """Wall time of all stages, in s."""
        return sum(self.seconds.values())

    def to_pil(self) -> Any:
        """The result as an 8-bit RGB ``PIL.Image.Image``."""
        from PIL import Image

        pixels = (self.image[0].detach().cpu().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        return Image.fromarray(pixels)

    def save(self, path: str | Path, *, overwrite: bool = False, quality: int = 95) -> Path:
        """Write the result (format from the suffix) atomically; see :func:`photostyle.io.save_image`."""
        return io.save_image(self.image.cpu(), path, overwrite=overwrite, quality=quality)

    def to_json(self) -> str:
        """The report (settings, timings, losses, segments) as indented JSON: the ``--report`` file,
        and the web page's record of a job."""
        report = {
            "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.config).items()},
            "device": self.device,
            "precision": self.precision,
            "network": self.network,
            "segments": self.segmentation.labels,
            "segmentation": self.segmentation.to_dict(),
            "working_size": list(self.working.shape[-2:]),
            "output_size": list(self.image.shape[-2:]),
            "loss": self.loss,
            "critic": None if self.critic is None else asdict(self.critic),
            "steps": self.steps,
            "interrupted": self.interrupted,
            "seconds": self.seconds,
            "output_written": self.output_written,
            "resume_state": self.resume_state,
            "segment_notes": self.segmentation.mask_notes,
        }
        if self.look is not None:
            report["lut"] = asdict(self.look)
        report["peak_rss_mb"] = self.peak_rss_mb
        return json.dumps(report, indent=2, default=str) + "\n"


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
    content_mask: MaskSource | None = None,
    style_mask: MaskSource | None = None,
    config: TransferConfig | None = None,
    callback: Callback | None = None,
    timer: _Timer | None = None,
    state: StateFile | None = None,
) -> TransferResult:
    """Give ``content`` the look of ``style``, segment by segment.

    Args:
        content: ``(1, 3, H, W)`` RGB in [0, 1], full resolution.
        style: ``(1, 3, H', W')`` RGB in [0, 1].
        content_mask: the content's hand-made segments: a DPST colour mask file, or a
            :class:`~photostyle.masks.Segmentation` (any size; resized here), or ``None``.
        style_mask: the style photo's likewise (a ``Segmentation`` with the same labels in the same order).
        config: settings (defaults: :class:`TransferConfig`); ``config.segmentation`` says whether
            the masks, automatic segments or none are used (:func:`~photostyle.segmentation.auto.segment_pair`).
        callback: called after each optimisation step (progress, intermediate saves).
        state: resume state: continued from when loaded, saved every ``state.every`` steps and on Ctrl-C.

    Returns:
        :class:`TransferResult`.

    Sizes are fitted first (:func:`fit_sizes`: never above the content photo) and
    both photos checked (:func:`check_photo_size`), before any work. Segmentation runs at a long
    side of at most ``max(SEGMENT_SIDE, size)`` and everything at full resolution in row tiles,
    so the peak memory stays within :func:`estimate_peak_bytes`.

    Raises:
        InputError: a photo is too small, or the sizes need more memory than there is (the message
            names a ``--size`` or photo size that fits).
        MaskError: masks that cannot be used, only one mask, or ``"masks"`` without them.
        DeviceError: the device is missing or ran out of memory (the message names a size that may fit).
    """
    config = fit_sizes(config or TransferConfig(), *content.shape[-2:])
    for name, photo in (("content photo", content), ("style photo", style)):
        check_photo_size(name, *photo.shape[-2:], config)
    timer = timer or _Timer()
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    content_full, style = content.to(device), style.to(device)
    with timer("segment"):
        segmentation = segment_pair(
            content_full, style, method=config.segmentation, content_mask=content_mask, style_mask=style_mask,
            segmenter=config.segmenter, metric=config.similarity_metric, threshold=config.semantic_threshold,
            min_fraction=config.min_segment, max_side=segment_side(config.size),
            vgg16_weights=config.vgg16_weights,
        )
    content_seg, style_seg = segmentation.content, segmentation.style

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
        with timer("build_losses"), memory_hint(device, config.size):
            objective = _objective(config, encoder, critic, content_small, style_small, content_masks, style_masks)
        with timer("init"):
            if image is None:
                image = init = _start_point(config, content_small, style_small, content_masks, style_masks)
            else:  # carry the coarser result over as the output stage would: sharp at once, its texture kept
                image = carry(config, previous, image, content_small)
        with timer("optimise"), memory_hint(device, config.size):
            offset = sum(config.level_steps[:level])
            step_callback = None if callback is None else (lambda i, x, t, o=offset: callback(o + i, x, t))
            result = optimise(
                objective, image, config.level_steps[level], config.optimizer, config.lr, step_callback,
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
        output = carry(config, previous, look, content_full)
    with timer("texture"):
        output = _texture(config, output, content_full, style, content_seg, style_seg)
    with timer("chroma"):
        output = _limit_chroma(config, output, style, content_seg, style_seg)

    score = None
    if critic is not None:
        with torch.no_grad():
            score = CriticScore(critic.name, critic.higher_is_better, float(critic(init)), float(critic(image)))
    return TransferResult(
        output, image, segmentation, config, device=str(device),
        precision=str(compute_dtype(config.precision, device) or torch.float32).removeprefix("torch."),
        network=encoder.description, loss=terms, critic=score, steps=steps, interrupted=interrupted,
        seconds=timer.seconds, peak_rss_mb=peak_rss_mb(),
    )


def carry(config: TransferConfig, guide: torch.Tensor, result: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``result`` (optimised on ``guide``, the content at its size) carried over to ``target``, the content at a
    larger size: a local affine recolouring plus ``config.detail`` of the texture painted outside flat regions.

    Used between levels, for the output, and for the web page's previews, so all three look alike.

    Args:
        config: supplies ``affine_radius``, ``affine_eps``, ``detail`` and ``flat_threshold``.
        guide: ``(1, 3, h, w)`` the content at ``result``'s size, in [0, 1].
        result: ``(1, 3, h, w)`` the optimised image, in [0, 1].
        target: ``(1, 3, H, W)`` the content at the size wanted, in [0, 1].

    Returns:
        ``(1, 3, H, W)`` in [0, 1].
    """
    flat_radius = max(config.affine_radius, round(max(result.shape[-2:]) / 40))  # 8 px at 320 px
    return local_affine_upsample(
        guide, result, target, config.affine_radius, config.affine_eps,
        detail=config.detail, flat=config.flat_threshold, flat_radius=flat_radius,
    )


def _texture(
    config: TransferConfig, output: torch.Tensor, content: torch.Tensor, style: torch.Tensor,
    content_seg: Segmentation, style_seg: Segmentation,
) -> torch.Tensor:
    """``output`` with each segment's detail contrast moved towards the style's (:mod:`photostyle.texture`).

    Measured and changed at the photos' own size up to ``DETAIL_SIDE`` px; a larger output gets the
    change resampled, in row tiles.
    """
    strength = config.texture * config.strength
    if strength == 0:
        return output
    small = io.resize_long_side(output, min(max(output.shape[-2:]), DETAIL_SIDE))
    content_small = io.resize_long_side(content, max(small.shape[-2:]))
    style_small = io.resize_long_side(style, min(max(style.shape[-2:]), DETAIL_SIDE))
    masks = content_seg.resize(*small.shape[-2:]).masks.to(small)
    style_masks = style_seg.resize(*style_small.shape[-2:]).masks.to(small)
    matched = match_texture(small, content_small, style_small, masks, style_masks, strength, config.flat_threshold)
    if small.shape == output.shape:
        return matched
    return add_resampled(output, matched - small)


def _limit_chroma(
    config: TransferConfig, output: torch.Tensor, style: torch.Tensor, content_seg: Segmentation,
    style_seg: Segmentation,
) -> torch.Tensor:
    """``output`` with no segment more than :data:`~photostyle.colour.MAX_CHROMA_RATIO` times as colourful as its
    style segment (:func:`~photostyle.colour.chroma_limits`), measured up to ``DETAIL_SIDE`` px."""
    strength = config.strength * config.chroma
    if strength == 0:
        return output
    small = io.resize_long_side(output, min(max(output.shape[-2:]), DETAIL_SIDE))
    style_small = io.resize_long_side(style, min(max(style.shape[-2:]), DETAIL_SIDE))
    factor = chroma_limits(small, style_small, content_seg.resize(*small.shape[-2:]).masks.to(small),
                           style_seg.resize(*style_small.shape[-2:]).masks.to(small), strength=strength)
    if float(factor.min()) > 0.999:
        return output
    return scale_chroma(output, factor)


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
    intermediate_paths: Sequence[str | Path] = (),
) -> TransferResult:
    """Files in, file out: the command line's ``transfer``.

    Every file it will write is checked before any work: the output (and ``report_path``, a JSON
    report of the run, and ``intermediate_paths``, files already there that the ``callback`` would
    save images to) must not be one of the inputs, whatever ``overwrite`` says, and an existing
    output, report, intermediate image or resume state is replaced only with ``overwrite``, or by
    ``resume`` when it continues a saved state of the same files and settings (they are then that
    run's own). Then it
    loads both photos, runs :func:`stylise` (which reads the masks) and writes the result atomically
    (the content's EXIF and alpha are kept) and the report (:meth:`TransferResult.to_json`).

    With ``keep_state=N`` a resume state (:mod:`photostyle.state`) is saved next to the output
    every N steps (0: only on Ctrl-C) and deleted once the run finishes. An interrupted run writes
    its best result so far unless ``keep_partial`` is false (batch: the file is left as it was).

    ``lut_path`` (``.cube``, ``lut_size`` nodes per axis) and ``hald_path`` (Hald CLUT, 16-bit PNG)
    receive the global colour map that best reproduces the result from the content photo
    (:mod:`photostyle.lut`); how well it does is the result's ``look`` (the report's ``"lut"``).

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
    for path in intermediate_paths:
        io.check_distinct({"the intermediate image": path}, inputs)
    if resume and state.fingerprint:
        state.load()
    own_files = overwrite or (state is not None and state.start is not None)
    io.check_output_path(output_path, overwrite=own_files)
    for path in (report_path, lut_path):
        if path is not None:
            io.check_writable(path, overwrite=own_files)
    for path in (hald_path, *intermediate_paths):
        if path is not None:
            io.check_output_path(path, overwrite=own_files)
    if state is not None:
        if state.path.is_file() and not own_files:
            hint = "it does not continue with these files and settings" if resume else "add --resume to continue it"
            raise OutputError(f"{state.path} holds the saved state of an earlier, interrupted run; {hint}, "
                              "or use --overwrite to start afresh and replace it")
        io.check_writable(state.path, overwrite=True)

    timer = _Timer()
    with timer("load"):
        content = io.load_image(content_path)
        style = io.load_image(style_path)
        for path, loaded in ((content_path, content), (style_path, style)):
            check_photo_size(str(path), *loaded.tensor.shape[-2:], config)
    result = stylise(content.tensor, style.tensor, content_mask, style_mask, config, callback, timer, state)
    interrupted = result.interrupted
    if keep_partial or not interrupted:
        with timer("save"):
            alpha = content.alpha
            if alpha is not None and alpha.shape[-2:] != result.image.shape[-2:]:  # --output-size
                alpha = io.resize_long_side(alpha, max(result.image.shape[-2:]))  # as the content was
            io.save_image(
                result.image.cpu(), output_path, alpha=alpha, icc_profile=content.icc_profile,
                exif=content.exif, bit_depth=io.output_bit_depth(output_path, content.bit_depth), overwrite=own_files,
            )
    if state is not None and not interrupted:
        state.remove()
    result.output_written = keep_partial or not interrupted
    result.resume_state = str(state.path) if state is not None and state.path.is_file() else None
    if (lut_path is not None or hald_path is not None) and not interrupted:
        with timer("lut"):
            result.look = _export_look(content.tensor, result.image, lut_path, lut_size, hald_path, own_files)
    result.peak_rss_mb = peak_rss_mb()
    if report_path is not None:
        io.write_atomically(report_path, result.to_json())
    return result


def _export_look(
    content: torch.Tensor, result: torch.Tensor, lut_path: str | Path | None, size: int,
    hald_path: str | Path | None, overwrite: bool,
) -> LookExport:
    """Fit the global LUT of ``content`` -> ``result`` ``(1, 3, H, W)``, write it, and say how well it fits."""
    from .lut import fit_error, fit_lut

    content = io.resize_long_side(content, max(result.shape[-2:])) if content.shape != result.shape else content
    look = fit_lut(content, result.cpu(), size)
    if lut_path is not None:
        look.write_cube(lut_path)
    if hald_path is not None:
        look.write_hald(hald_path, overwrite=overwrite)
    error = fit_error(look, content, result.cpu())
    return LookExport(None if lut_path is None else str(lut_path), size, None if hald_path is None else str(hald_path),
                      error["mean"], error["p95"])


def _fingerprint(inputs: tuple[str | Path | None, ...], config: TransferConfig) -> str:
    """The resume fingerprint of ``inputs`` and ``config``; ``""`` when an input cannot be read
    (loading it reports why)."""
    try:
        return fingerprint(inputs, asdict(config))
    except OSError:
        return ""
