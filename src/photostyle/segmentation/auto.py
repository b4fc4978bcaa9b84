"""The one function the pipeline calls to get matching segments for a content and a style photo.

:func:`segment_pair` is the one place that chooses between the user's hand-made masks, automatic
segmentation and none (one segment), and for automatic segmentation between a labelled scene
parser (ADE20K, whose labels are grouped by WordNet similarity as in Spenhouet et al. 2019) and,
without its weights, region matching (``regmatch``: each photo segmented alone from ImageNet VGG16 features, regions paired
by meaning; no extra weights). Unlabelled parts are named by place and colour. :func:`save_overlay` draws a
segmentation over its photo with a legend, for the command line's ``segment``.

Automatic segmentation runs at a long side of at most ``max_side`` px (:data:`SEGMENT_SIDE` by
default; the transfer passes its working size when that is larger), whatever the photos' size, so
it costs the same memory for a 1- and a 100-megapixel photo; masks are resized to the working size anyway.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from photostyle.errors import MaskError, WeightsError
from photostyle.grouping import apply_grouping, group_labels, merge_small_segments_pair
from photostyle.io import resize_long_side, save_image
from photostyle.masks import Segmentation, _legend, load_mask_pair
from photostyle.segmentation.base import Segmenter, check_image, get_segmenter
from photostyle.segmentation.names import describe_pairing, name_segments

__all__ = ["SEGMENT_SIDE", "MaskSource", "Method", "SegmentationOutcome", "choose_segmenter", "save_overlay",
           "segment_pair", "segment_shape"]

logger = logging.getLogger(__name__)

Method = Literal["auto", "masks", "none"]

MaskSource = str | os.PathLike[str] | Segmentation
"""A hand-made mask: a DPST colour mask file, or a :class:`Segmentation` already made."""

SEGMENT_SIDE = 1024
"""Default bound in px on the long side at which photos are segmented: three times the default
working size, and about 170 MB of co-segmentation; larger photos are shrunk first."""


@dataclass
class SegmentationOutcome:
    """What :func:`segment_pair` decided and found.

    Attributes:
        content: segmentation of the content photo: masks ``(1, K, h, w)`` in [0, 1] at its size
            (automatic and ``"none"``: shrunk to :func:`segment_shape` if larger).
        style: segmentation of the style photo likewise, with the same labels in the same order.
        segmenter: ``"given"`` (hand masks), ``"none"`` (one segment ``"all"``) or the registry
            name of the automatic backend used.
        grouping: :meth:`photostyle.grouping.GroupingResult.to_dict` for labelled backends, else ``None``.
        notes: one line per decision worth reporting: for automatic segments the backend chosen and
            segments matched or dropped; for hand masks what matching them changed.
        pairing: label by label, which part of the style photo gives which part of the content
            photo its look, in words, with the segmenter's confidence where it has one
            (:func:`~photostyle.segmentation.names.describe_pairing`); automatic segments only.
        named: ``True`` when the labels are names (ADE20K classes grouped by WordNet, or the
            masks' colours); ``False`` when an unlabelled segmenter's parts were named after
            where they lie and their colour (:func:`~photostyle.segmentation.names.name_segments`).
    """

    content: Segmentation
    style: Segmentation
    segmenter: str
    grouping: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    pairing: list[dict[str, Any]] = field(default_factory=list)
    named: bool = True

    @property
    def automatic(self) -> bool:
        """Whether a segmenter found these segments (not hand masks, not ``"none"``)."""
        return self.segmenter not in ("given", "none")

    @property
    def labels(self) -> list[str]:
        """The segments' labels, shared by both photos."""
        return list(self.content.labels)

    @property
    def mask_notes(self) -> list[str]:
        """The notes on hand masks (what matching them changed): the report's ``"segment_notes"``;
        empty for automatic segments, whose notes are in :meth:`to_dict`."""
        return [] if self.automatic else self.notes

    def to_dict(self) -> dict[str, Any]:
        """The report's ``"segmentation"``: the segmenter, and for automatic segments its grouping,
        notes, pairing and whether the labels are names (hand masks' notes are :attr:`mask_notes`)."""
        if not self.automatic:
            return {"segmenter": self.segmenter}
        return {"segmenter": self.segmenter, "grouping": self.grouping, "notes": self.notes,
                "pairing": self.pairing, "named": self.named}


#: The segmenters built on ImageNet VGG16 features: they take the transfer's VGG16 weights.
VGG16_SEGMENTERS = ("regmatch", "coseg")


def choose_segmenter(name: str | Segmenter = "auto", vgg16_weights: str | None = "default") -> tuple[Segmenter, list[str]]:
    """The segmenter to use, and a note on the choice.

    ``"auto"`` means ADE20K if its model is available locally (no download is tried), else
    ``"regmatch"`` (region matching; on the 45 DPST pairs its regions and pairings agree with the
    hand masks far better than co-segmentation's, ``python -m photostyle.bench.segments``); another name is built from the registry with default settings; a
    :class:`Segmenter` instance is used as is. Those of :data:`VGG16_SEGMENTERS` load ``vgg16_weights``
    (a registry name, a file, or ``None`` for random), so ``--weights PATH`` serves segmentation too.

    Raises:
        InputError: unknown name; the message lists the registered ones.
        WeightsError: the named backend cannot load its weights.
    """
    if isinstance(name, Segmenter):
        return name, []
    if name in VGG16_SEGMENTERS:
        return get_segmenter(name, weights=vgg16_weights), []
    if name != "auto":
        return get_segmenter(name), []
    try:
        return get_segmenter("ade20k", local_files_only=True), ["segmenter auto: ADE20K model found locally"]
    except WeightsError as err:
        logger.info("ADE20K unavailable, using regmatch: %s", err)
        return get_segmenter("regmatch", weights=vgg16_weights), [
            "segmenter auto: no local ADE20K model (fetch one with 'photostyle weights --fetch ade20k' "
            "to use it), so each photo was segmented and the regions paired by meaning (regmatch)"
        ]


def segment_pair(
    content: torch.Tensor,
    style: torch.Tensor,
    *,
    method: Method = "auto",
    content_mask: MaskSource | None = None,
    style_mask: MaskSource | None = None,
    segmenter: str | Segmenter = "auto",
    metric: str = "li",
    threshold: float = 0.8,
    min_fraction: float = 0.01,
    max_side: int | None = SEGMENT_SIDE,
    vgg16_weights: str | None = "default",
) -> SegmentationOutcome:
    """Segments with the same labels, in the same order, for a content and a style photo.

    The one place that decides where a transfer's segments come from:

    * hand masks, when ``content_mask`` and ``style_mask`` are given and ``method`` is ``"auto"``
      or ``"masks"``: DPST colour-coded mask files are read at each photo's size and matched by
      colour (:func:`~photostyle.masks.load_mask_pair`; its notes are the outcome's); two
      :class:`Segmentation` are used as they are. The segmenter is ``"given"``.
    * ``method="none"``: one segment ``"all"`` covering each photo, at :func:`segment_shape`
      (the transfer then uses one global style); mask files are still checked, then not used.
    * ``method="auto"`` without masks: see :func:`choose_segmenter`. A labelled backend (ADE20K)
      segments each photo, then labels are grouped by WordNet similarity
      (:func:`~photostyle.grouping.group_labels` with ``metric``, ``threshold`` and the labels'
      areas) and the masks of each group summed; an unlabelled one (regmatch, coseg) segments the
      pair and pairs the parts itself. Either way segments smaller than ``min_fraction`` of either
      photo are merged into a neighbour. Photos larger than ``max_side`` on their long side are
      segmented at :func:`segment_shape`: the segmenters never see a long side above ``max_side`` px.

    Args:
        content: ``(1, 3, H, W)`` float RGB in [0, 1].
        style: ``(1, 3, H', W')`` float RGB in [0, 1].
        method: where segments come from: ``"auto"``, ``"masks"`` (hand masks, required) or ``"none"``.
        content_mask: the content photo's DPST mask file, or its :class:`Segmentation`.
        style_mask: the style photo's likewise.
        segmenter: for automatic segmentation: ``"auto"``, a registry name, or a :class:`Segmenter`.
        metric: WordNet similarity metric for grouping (:data:`photostyle.grouping.METRICS`).
        threshold: similarity in [0, 1] at which shared labels merge.
        min_fraction: smallest segment, as a fraction of each photo's area.
        max_side: bound in px on the long side of what is segmented (``None``: none).
        vgg16_weights: VGG16 weights of the segmenters built on its features (:func:`choose_segmenter`).

    Returns:
        :class:`SegmentationOutcome` with masks ``(1, K, h, w)`` and ``(1, K, h', w')``: each
        photo's :func:`segment_shape` for automatic segments and ``"none"``, its own size for mask files.

    Raises:
        MaskError: ``"masks"`` without both masks, only one mask given, or masks that cannot be used.
        WeightsError: the chosen backend's weights are missing.
        ValueError: unknown ``method``.
    """
    check_image(content)
    check_image(style)
    if method not in ("auto", "masks", "none"):
        raise ValueError(f"unknown segmentation method {method!r}; expected 'auto', 'masks' or 'none'")
    if isinstance(content_mask, Segmentation) and isinstance(style_mask, Segmentation):
        content_seg, style_seg, notes = content_mask, style_mask, []
    else:  # mask files are read (and a lone or unusable one refused) whatever the method
        content_seg, style_seg, notes = load_mask_pair(
            content_mask, style_mask, tuple(content.shape[-2:]), tuple(style.shape[-2:])
        )
    if method == "none":
        return SegmentationOutcome(_whole(content, max_side), _whole(style, max_side), "none", notes=notes)
    if content_seg is not None and style_seg is not None:
        return SegmentationOutcome(content_seg, style_seg, "given", notes=notes)
    if method == "masks":
        raise MaskError("segmentation 'masks' needs a content mask and a style mask (--content-mask and "
                        "--style-mask); give both, or use auto or none")

    backend, notes = choose_segmenter(segmenter, vgg16_weights)
    content, style = _shrink(content, max_side), _shrink(style, max_side)
    content_seg, style_seg = backend.segment_pair(content, style)
    record = backend.last_pairing.to_dict() if backend.last_pairing else {}
    records = {r["label"]: r for r in record.get("pairs", [])}
    if record.get("note"):
        notes.append(record["note"])
    grouping = None
    if backend.labelled:
        areas: dict[str, float] = {}
        for seg in (content_seg, style_seg):
            for label, fraction in zip(seg.labels, seg.coverage().tolist()):
                areas[label] = areas.get(label, 0.0) + fraction
        result = group_labels(content_seg.labels, style_seg.labels, metric, threshold, areas=areas)
        content_seg, style_seg = apply_grouping(content_seg, style_seg, result)
        grouping = result.to_dict()
        notes += [f"{d['photo']}: '{d['label']}' -> '{d['mapped_to']}' ({d['reason']}, similarity "
                  f"{d['similarity']:.2f})" for d in result.decisions]
    before = list(content_seg.labels)
    content_seg, style_seg = merge_small_segments_pair(content_seg, style_seg, min_fraction)
    merged = [label for label in before if label not in content_seg.labels]
    if merged:
        notes.append(f"segments under {min_fraction:.1%} of a photo merged into a neighbour: {', '.join(merged)}")
    own = [records.get(label) for label in content_seg.labels]
    if not backend.labelled:
        content_seg, style_seg = name_segments(content, content_seg, style_seg)
    pairing = describe_pairing(content, style, content_seg, style_seg, own)
    return SegmentationOutcome(content_seg, style_seg, backend.name, grouping, notes, pairing, backend.labelled)


def segment_shape(height: int, width: int, max_side: int | None = SEGMENT_SIDE) -> tuple[int, int]:
    """The ``(h, w)`` at which a ``height x width`` photo is segmented: its own, or shrunk to long side ``max_side``.

    The aspect ratio is kept, with the rounding of :func:`photostyle.io.resize_long_side`.

    >>> segment_shape(6000, 4000, 1024), segment_shape(300, 200, 1024)
    ((1024, 683), (300, 200))
    """
    long = max(height, width)
    if max_side is None or long <= max_side:
        return height, width
    scale = max_side / long
    return max(1, round(height * scale)), max(1, round(width * scale))


def _whole(image: torch.Tensor, max_side: int | None) -> Segmentation:
    """One segment ``"all"`` covering ``image`` ``(1, 3, H, W)``, at :func:`segment_shape`."""
    return Segmentation(image.new_ones(1, 1, *segment_shape(*image.shape[-2:], max_side)), ["all"])


def _shrink(image: torch.Tensor, max_side: int | None) -> torch.Tensor:
    """``image`` ``(1, 3, H, W)`` resized to :func:`segment_shape`, or itself when it fits."""
    if max_side is None or max(image.shape[-2:]) <= max_side:
        return image
    return resize_long_side(image, max_side)


def save_overlay(
    image: torch.Tensor,
    seg: Segmentation,
    path: str | os.PathLike[str],
    *,
    opacity: float = 0.5,
    overwrite: bool = False,
) -> dict[str, tuple[int, int, int]]:
    """Write ``image`` with each segment tinted in its colour and a legend box of the labels.

    The colours are those of :func:`photostyle.masks.save_colour_mask` for the same labels.

    Args:
        image: ``(1, 3, H, W)`` RGB in [0, 1].
        seg: its segmentation, masks ``(1, K, H, W)`` (resized to the image if needed).
        path: destination image file.
        opacity: weight in [0, 1] of the segment colour over the photo.
        overwrite: replace an existing file.

    Returns:
        The legend: label -> RGB colour in 0..255.
    """
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    check_image(image)
    seg = seg.resize(*image.shape[-2:])
    legend = _legend(seg.labels)
    colours = torch.tensor([legend[label] for label in seg.labels], dtype=torch.float32).view(-1, 3, 1, 1) / 255
    masks = seg.masks[0].float().cpu().unsqueeze(1)  # (K, 1, H, W)
    cover = (opacity * masks.sum(0)).clamp(0, 1)  # (1, H, W)
    tint = (masks * colours).sum(0) / masks.sum(0).clamp_min(1e-6)
    blended = image[0].float().cpu() * (1 - cover) + tint * cover
    pil = Image.fromarray((blended.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()).convert("RGBA")

    font = ImageFont.load_default()
    line, pad = 14, 4
    width = max([int(ImageDraw.Draw(pil).textlength(label, font=font)) for label in seg.labels] + [0])
    box = Image.new("RGBA", pil.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(box)
    draw.rectangle((0, 0, 3 * pad + line + width, pad + len(seg.labels) * (line + pad)), fill=(0, 0, 0, 160))
    for n, label in enumerate(seg.labels):
        top = pad + n * (line + pad)
        draw.rectangle((pad, top, pad + line, top + line), fill=(*legend[label], 255), outline=(255, 255, 255, 255))
        draw.text((2 * pad + line, top + 1), label, fill=(255, 255, 255, 255), font=font)
    pil = Image.alpha_composite(pil, box).convert("RGB")
    out = torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1).float().div(255).unsqueeze(0)
    save_image(out, path, overwrite=overwrite)
    return legend
