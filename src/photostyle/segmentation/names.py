"""Segments in words: where a part of a photo lies and what colour it is.

Unlabelled segmenters (``coseg``, ``regmatch``) return placeholders (``concept-3``,
``region-0``) that say nothing to a photographer. :func:`name_segments` renames them after their
part of the content photo (``"top light blue"``, ``"bottom left brown"``), and
:func:`describe_pairing` says, label by label, which part of the style photo gives which part of
the content photo its look, with the segmenter's confidence where it has one. The command line's
``segment``, ``transfer --report`` and the web page all use these words.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from typing import Any

import torch

from photostyle.masks import Segmentation

__all__ = ["colour_words", "describe_mask", "describe_pairing", "held_pixels", "name_segments", "position_words"]


def colour_words(rgb: Sequence[float]) -> str:
    """A plain colour name for an sRGB colour in [0, 1]: "dark blue", "light grey", "orange" ..."""
    r, g, b = (float(min(max(c, 0.0), 1.0)) for c in rgb)
    hue, light, _ = colorsys.rgb_to_hls(r, g, b)
    spread = max(r, g, b) - min(r, g, b)
    if spread < 0.07 or (spread < 0.12 and (light < 0.15 or light > 0.85)):
        if light < 0.13:
            return "black"
        if light > 0.9:
            return "white"
        return "dark grey" if light < 0.35 else "light grey" if light > 0.7 else "grey"
    degrees = hue * 360
    names = ((15, "red"), (40, "orange"), (68, "yellow"), (160, "green"), (195, "teal"),
             (255, "blue"), (290, "purple"), (340, "pink"), (361, "red"))
    name = next(n for limit, n in names if degrees < limit)
    if name == "orange" and light < 0.4:
        return "brown"
    if name == "yellow" and light < 0.35:
        return "olive"
    if light < 0.25:
        return f"dark {name}"
    if light > 0.75:
        return f"light {name}"
    if spread < 0.2:
        return f"greyish {name}"
    return name


def position_words(cy: float, cx: float, coverage: float, spread_x: float = 0.0, spread_y: float = 0.0) -> str:
    """Where a part lies, from its centre (``cy``, ``cx`` in [0, 1]), the share of the photo it covers and
    how far it spreads (standard deviations of its pixels' positions; 0.29 for a part spread evenly)."""
    if coverage > 0.7:
        return "most of the photo"
    if spread_x > 0.22 and spread_y > 0.22:  # spread over the whole frame: its centre says little
        return "much of the photo" if coverage > 0.45 else "all over"
    vertical = "top" if cy < 0.38 else "bottom" if cy > 0.62 else "middle"
    horizontal = "left" if cx < 0.38 else "right" if cx > 0.62 else ""
    if spread_x > 0.25:  # spread across the width: its side says little
        horizontal = ""
    if vertical == "middle":
        return f"{horizontal} side" if horizontal else "centre"
    return f"{vertical} {horizontal}".strip()


def describe_mask(image: torch.Tensor, mask: torch.Tensor) -> dict[str, Any]:
    """Where a part of ``image`` lies and its mean colour.

    Args:
        image: ``(1, 3, H, W)`` RGB in [0, 1].
        mask: ``(H, W)`` bool, the part.

    Returns:
        ``{"coverage", "where", "colour", "hint", "rgb"}``: the share of the photo, position and
        colour words, ``"sky-like"`` for a blue, teal, white or light grey part at the top (else
        ``""``), and the mean colour in 0..255 (``None`` for an empty part).
    """
    height, width = mask.shape
    area = int(mask.sum())
    if area == 0:
        return {"coverage": 0.0, "where": "nowhere", "colour": "", "hint": "", "rgb": None}
    rows, cols = mask.nonzero(as_tuple=True)
    ys, xs = (rows.float() + 0.5) / height, (cols.float() + 0.5) / width
    spread_x, spread_y = (float(xs.std()), float(ys.std())) if area > 1 else (0.0, 0.0)
    rgb = image[0].float()[:, mask].mean(dim=1).tolist()
    coverage = area / (height * width)
    where, colour = position_words(float(ys.mean()), float(xs.mean()), coverage, spread_x, spread_y), colour_words(rgb)
    sky = where.startswith("top") and any(w in colour for w in ("blue", "teal", "white", "light grey"))
    return {"coverage": round(coverage, 4), "where": where, "colour": colour, "hint": "sky-like" if sky else "",
            "rgb": [round(c * 255) for c in rgb]}


def held_pixels(seg: Segmentation, height: int, width: int) -> torch.Tensor:
    """``(K, height, width)`` bool: the pixels each label holds at that size.

    A label holds the pixels where its mask is above 0.5, and those where it is the strongest
    and the masks sum to at least 0.5; labels may overlap (a style region shared by two labels).
    """
    masks = seg.resize(height, width).masks[0].float().cpu()
    if masks.shape[0] == 0:
        return masks.bool()
    strongest = masks.argmax(dim=0)
    held = masks > 0.5
    own = (torch.arange(masks.shape[0]).view(-1, 1, 1) == strongest) & (masks.sum(dim=0) >= 0.5)
    return held | own


def _small(image: torch.Tensor, side: int = 256) -> torch.Tensor:
    scale = side / max(image.shape[-2:])
    if scale >= 1:
        return image.float().cpu()
    size = (max(1, round(image.shape[-2] * scale)), max(1, round(image.shape[-1] * scale)))
    return torch.nn.functional.interpolate(image.float().cpu(), size=size, mode="area")


def name_segments(image: torch.Tensor, *segs: Segmentation) -> list[Segmentation]:
    """Rename the labels of ``segs`` after their part of ``image`` (e.g. ``"top light blue"``).

    All ``segs`` share their labels (a content and a style segmentation); the words describe
    the first one's parts of ``image``. Two parts with the same words are told apart by a number
    (``"bottom green"``, ``"bottom green 2"``, largest first).

    Args:
        image: ``(1, 3, H, W)`` RGB in [0, 1], the photo of ``segs[0]``.
        segs: segmentations with the same labels in the same order.

    Returns:
        The segmentations with the new labels, masks unchanged.
    """
    small = _small(image)
    held = held_pixels(segs[0], *small.shape[-2:])
    parts = [describe_mask(small, held[k]) for k in range(held.shape[0])]
    words = [f"{p['where']} {p['colour']}".strip() if p["coverage"] else "unseen" for p in parts]
    names = [""] * len(words)
    for k in sorted(range(len(words)), key=lambda k: -parts[k]["coverage"]):
        taken = sum(1 for n in names if n == words[k] or n.startswith(words[k] + " "))
        names[k] = words[k] if taken == 0 else f"{words[k]} {taken + 1}"
    return [Segmentation(seg.masks, list(names)) for seg in segs]


def describe_pairing(
    content: torch.Tensor,
    style: torch.Tensor,
    content_seg: Segmentation,
    style_seg: Segmentation,
    records: Sequence[dict[str, Any] | None] = (),
) -> list[dict[str, Any]]:
    """Label by label: the part of the content photo and the part of the style photo that gives it its look.

    Args:
        content: ``(1, 3, H, W)`` RGB in [0, 1].
        style: ``(1, 3, H', W')`` RGB in [0, 1].
        content_seg: its segments (any size).
        style_seg: the style photo's, same labels in the same order.
        records: the segmenter's own record of each label, in the labels' order (``regmatch``:
            :meth:`RegionPair.to_dict`; ``None`` or missing where it has none): adds ``source``,
            ``similarity`` and ``confidence``.

    Returns:
        One dict per label: ``label``, ``content`` and ``style`` (:func:`describe_mask` of each part,
        ``style`` with ``"whole": True`` when the style part is the whole photo), and ``text``, e.g.
        ``"top light blue (38% of content) <- top blue of the style (41%), confidence 0.93"``.
    """
    small_c, small_s = _small(content), _small(style)
    held_c = held_pixels(content_seg, *small_c.shape[-2:])
    held_s = held_pixels(style_seg, *small_s.shape[-2:])
    out = []
    for k, label in enumerate(content_seg.labels):
        c, s = describe_mask(small_c, held_c[k]), describe_mask(small_s, held_s[k])
        s["whole"] = s["coverage"] > 0.97
        record = (records[k] if k < len(records) else None) or {}
        entry: dict[str, Any] = {"label": label, "content": c, "style": s}
        for key in ("source", "similarity", "confidence"):
            if key in record:
                entry[key] = record[key]
        style_words = "the whole style photo" if s["whole"] else (
            f"{s['where']} {s['colour']} of the style ({s['coverage']:.0%})" if s["coverage"] else "nothing of the style")
        text = f"{label} ({c['coverage']:.0%} of content) <- {style_words}"
        if entry.get("source") == "global":
            text += ", no confident partner"
        elif "confidence" in entry:
            text += f", confidence {entry['confidence']:.2f}"
        entry["text"] = text
        out.append(entry)
    return out
