"""Segments as a photographer reads them: pairings in words, tinted pictures, masks for a re-run.

A transfer matches parts of the content photo to parts of the style photo (the result's
``segmentation.content`` and ``segmentation.style``: the same labels in the same order). Automatic
segments are named by where they lie and their colour (:mod:`photostyle.segmentation.names`) and
hand masks by their colour, so each part of each photo is described the same way ("top,
sky-like, blue, 38 %"); a real label (an ADE20K class such as "sky") is kept in front, and the
segmenter's confidence in a pairing is shown where it has one.

Each part is drawn in one display colour on both photos, and as a pair of small pictures with
that part lit and the rest dimmed. The parts are kept as label maps (one byte per pixel), from
which :func:`edited_masks` writes DPST colour masks for a re-run after the user merged or
dropped pairings.
"""

from __future__ import annotations

import colorsys
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..masks import DPST_COLOURS, Segmentation
from ..segmentation.names import describe_mask

__all__ = ["describe", "edited_masks", "highlight", "index_map", "load_index", "overlay", "resize_index",
           "save_index", "display_colour"]

NONE = 255  # label-map value of pixels in no segment
_UNCOVERED = (40, 40, 40)  # DPST: no segment
# Okabe-Ito, colour-blind safe, then a purple; more parts take golden-ratio hues.
_PALETTE = [(0, 114, 178), (230, 159, 0), (0, 158, 115), (204, 121, 167), (240, 228, 66),
            (86, 180, 233), (213, 94, 0), (160, 160, 160), (120, 70, 170)]
_UNNAMED = re.compile(r"(concept-\d+|region-\d+|all|" + "|".join(DPST_COLOURS) + r")")


def display_colour(k: int) -> tuple[int, int, int]:
    """The colour part ``k`` is drawn in, on both photos and in its swatch."""
    if k < len(_PALETTE):
        return _PALETTE[k]
    r, g, b = colorsys.hsv_to_rgb((k * 0.618033988749895) % 1.0, 0.65, 0.9)
    return int(r * 255), int(g * 255), int(b * 255)


def index_map(seg: Segmentation, height: int, width: int) -> torch.Tensor:
    """``(height, width)`` uint8: the index of each pixel's strongest segment, :data:`NONE` where the masks sum below 0.5."""
    masks = seg.resize(height, width).masks[0].float().cpu()  # the pictures it indexes are on the CPU
    if masks.shape[0] == 0:
        return torch.full((height, width), NONE, dtype=torch.uint8)
    index = masks.argmax(dim=0)
    index[masks.sum(dim=0) < 0.5] = NONE
    return index.to(torch.uint8)


def save_index(index: torch.Tensor, path: Path) -> None:
    Image.fromarray(index.cpu().numpy()).save(path, format="PNG")


def load_index(path: Path) -> torch.Tensor:
    with Image.open(path) as im:
        return torch.from_numpy(np.array(im, dtype=np.uint8))


def resize_index(index: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A label map resampled to ``(height, width)`` with nearest neighbour."""
    if tuple(index.shape) == (height, width):
        return index
    return F.interpolate(index[None, None].float(), size=(height, width), mode="nearest-exact")[0, 0].to(torch.uint8)


def describe(image: torch.Tensor, index: torch.Tensor, count: int) -> list[dict[str, Any]]:
    """Where each of ``count`` parts lies in ``image`` ``(1, 3, H, W)`` and its mean colour, from ``index`` ``(H, W)``."""
    index = resize_index(index, *image.shape[-2:])
    return [describe_mask(image, index == k) for k in range(count)]


def _phrase(name: str, part: dict[str, Any]) -> str:
    """ "top (sky-like, blue)" for an unnamed part; "sky (top, blue)" for a named one."""
    if part["coverage"] == 0:
        return "nothing"
    if name:
        return f"{name} ({part['where']}, {part['colour']})"
    return f"{part['where']} ({', '.join(h for h in (part['hint'], part['colour']) if h)})"


def pairings(
    labels: Sequence[str], content: list[dict[str, Any]], style: list[dict[str, Any]],
    records: Sequence[dict[str, Any]] = (), *, named: bool = True,
) -> list[dict[str, Any]]:
    """One entry per label: its display colour, the words for its part of each photo and the segmenter's confidence.

    Args:
        labels: the shared labels.
        content: :func:`describe` of the content photo's parts, one per label.
        style: of the style photo's.
        records: the report's ``segmentation.pairing`` (:func:`photostyle.segmentation.names.describe_pairing`),
            whose ``source`` and ``confidence`` are carried over.
        named: whether labels are names worth showing ("sky"); placeholders, DPST colours and labels
            that are themselves position-and-colour words (``named=False``) are not shown.
    """
    result = []
    for k, label in enumerate(labels):
        c, s = content[k], style[k]
        whole = label == "all"
        name = "" if not named or _UNNAMED.fullmatch(label) else label.replace("_", " ")
        entry = {
            "index": k, "label": label, "colour": display_colour(k), "name": name,
            "content": {**c, "phrase": "the whole photo" if whole else _phrase(name, c)},
            "style": {**s, "phrase": "the whole photo" if whole or s["coverage"] > 0.97 else _phrase(name, s)},
        }
        record = records[k] if k < len(records) else {}
        entry.update({key: record[key] for key in ("source", "confidence") if key in record})
        result.append(entry)
    return result


def overlay(image: torch.Tensor, index: torch.Tensor, count: int) -> torch.Tensor:
    """``image`` ``(1, 3, H, W)`` tinted with each part's display colour (the photo still shows through)."""
    index = resize_index(index, *image.shape[-2:]).long()
    palette = torch.tensor([display_colour(k) for k in range(count)] + [(0, 0, 0)], dtype=torch.float32) / 255
    index = torch.where(index == NONE, torch.full_like(index, count), index.clamp(max=count))
    colours = palette[index].permute(2, 0, 1).unsqueeze(0)
    grey = image.mean(dim=1, keepdim=True)
    tinted = torch.where((index == count)[None, None], 0.3 * image, 0.45 * grey + 0.55 * colours)
    edges = _edges(index)
    return tinted * edges + (1 - edges)  # white lines between parts


def highlight(image: torch.Tensor, index: torch.Tensor, k: int) -> torch.Tensor:
    """``image`` with part ``k`` as it is, outlined in its colour, and everything else dimmed."""
    index = resize_index(index, *image.shape[-2:]).long()
    inside = (index == k)[None, None]
    dimmed = 0.22 * image + 0.08
    out = torch.where(inside, image, dimmed)
    border = inside.float() - (-F.max_pool2d(-inside.float(), 3, stride=1, padding=1))
    colour = torch.tensor(display_colour(k), dtype=torch.float32).view(1, 3, 1, 1) / 255
    border = F.max_pool2d(border, 3, stride=1, padding=1) > 0  # two pixels wide
    return torch.where(border, colour, out)


def _edges(index: torch.Tensor) -> torch.Tensor:
    """``(1, 1, H, W)``: 0 on the boundary between two parts, 1 elsewhere."""
    x = index[None, None].float()
    same = (F.max_pool2d(x, 3, stride=1, padding=1) == -F.max_pool2d(-x, 3, stride=1, padding=1))
    return same.float()


def edited_masks(
    content_index: torch.Tensor, style_index: torch.Tensor, groups: Sequence[int | None],
    content_size: tuple[int, int], style_size: tuple[int, int], content_path: Path, style_path: Path,
) -> None:
    """Write DPST colour masks of both photos (at their sizes) after pairings were merged or dropped.

    ``groups[k]`` is the part that label ``k`` now belongs to (``k`` itself when unchanged, another
    label's index when merged into it) or ``None`` when dropped: the part of the content photo then
    takes the look of the whole style photo (a colour the style mask does not hold) and the part of
    the style photo is used by no one. Each remaining group gets its own DPST colour.

    Raises:
        ValueError: ``groups`` does not fit the labels, or more than 8 groups remain.
    """
    count = len(groups)
    if any(g is not None and not (isinstance(g, int) and 0 <= g < count) for g in groups):
        raise ValueError(f"each pairing must name one of the {count} pairings, or none to drop it")
    kept = list(dict.fromkeys(g for g in groups if g is not None))
    colours = list(DPST_COLOURS.values())
    if len(kept) > len(colours) - 1:
        raise ValueError(f"at most {len(colours) - 1} pairings can stay apart; merge some of them")
    colour_of = {g: colours[i] for i, g in enumerate(kept)}
    whole_style = colours[len(kept)]  # a colour no style pixel has: "the whole style photo"
    for index, size, path, is_content in ((content_index, content_size, content_path, True),
                                          (style_index, style_size, style_path, False)):
        lut = np.tile(np.array(_UNCOVERED, dtype=np.uint8), (256, 1))
        for k, g in enumerate(groups):
            if g is not None:
                lut[k] = [round(c * 255) for c in colour_of[g]]
            elif is_content:
                lut[k] = [round(c * 255) for c in whole_style]
        full = resize_index(index, *size).cpu().numpy()
        Image.fromarray(lut[full]).save(path, format="PNG")
