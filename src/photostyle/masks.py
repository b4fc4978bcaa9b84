"""Segmentations, and the colour-coded masks of Deep Photo Style Transfer (DPST).

A :class:`Segmentation` holds ``K`` masks and their labels. DPST masks are images in which each
segment is painted in one of nine colours; :func:`load_dpst_mask` reads them,
:func:`match_segmentations` pairs the segments of a content and a style photo, and
:func:`save_colour_mask` writes any segmentation as such an image.
"""

from __future__ import annotations

import colorsys
import logging
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from photostyle.errors import MaskError
from photostyle.io import load_image, save_image

__all__ = ["DPST_COLOURS", "Segmentation", "load_dpst_mask", "match_segmentations", "save_colour_mask"]

logger = logging.getLogger(__name__)

#: DPST's mask colours in its README order, RGB in [0, 1]; a pixel matches when every channel
#: is within :data:`TOLERANCE` of the value.
DPST_COLOURS: dict[str, tuple[float, float, float]] = {
    "blue": (0.0, 0.0, 1.0),
    "green": (0.0, 1.0, 0.0),
    "black": (0.0, 0.0, 0.0),
    "white": (1.0, 1.0, 1.0),
    "red": (1.0, 0.0, 0.0),
    "yellow": (1.0, 1.0, 0.0),
    "grey": (0.5, 0.5, 0.5),
    "lightblue": (0.0, 1.0, 1.0),
    "purple": (1.0, 0.0, 1.0),
}
TOLERANCE = 0.1
#: A mask whose width/height ratio differs from its photo's by more than this fraction is refused
#: as probably drawn on another photo (the 90 DPST benchmark masks differ by at most 0.3%).
ASPECT_TOLERANCE = 0.1
_UNCOVERED_RGB = (40, 40, 40)  # matches no DPST colour nor any colour of _extra_colour


@dataclass
class Segmentation:
    """``K`` segment masks of one image with their labels.

    Attributes:
        masks: ``(1, K, H, W)`` float in [0, 1]; hard masks hold only 0 and 1.
        labels: ``K`` distinct names, ``labels[k]`` naming ``masks[:, k]``.
    """

    masks: torch.Tensor
    labels: list[str]

    def __post_init__(self) -> None:
        if self.masks.ndim != 4 or self.masks.shape[0] != 1:
            raise ValueError(f"expected masks of shape (1, K, H, W) but received {tuple(self.masks.shape)}")
        if self.masks.shape[1] != len(self.labels):
            raise ValueError(f"expected {self.masks.shape[1]} labels but received {len(self.labels)}")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"expected distinct labels but received {self.labels}")

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)``."""
        return int(self.masks.shape[-2]), int(self.masks.shape[-1])

    def is_hard(self) -> bool:
        """Whether every value is 0 or 1."""
        return bool(((self.masks == 0) | (self.masks == 1)).all())

    def resize(self, height: int, width: int) -> Segmentation:
        """Resample to ``(height, width)``.

        Hard masks use nearest neighbour (``nearest-exact``) so they stay hard; soft masks use
        antialiased bilinear interpolation, which averages like area sampling when shrinking.
        """
        if (height, width) == self.size:
            return self
        masks = self.masks.float()
        if self.is_hard():
            resized = F.interpolate(masks, size=(height, width), mode="nearest-exact")
        else:
            resized = F.interpolate(masks, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
        return Segmentation(resized.clamp(0.0, 1.0).to(self.masks.dtype), list(self.labels))

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Segmentation:
        """The same segmentation with masks on ``device`` and/or of ``dtype``."""
        return Segmentation(self.masks.to(device=device, dtype=dtype), list(self.labels))

    def coverage(self) -> torch.Tensor:
        """``(K,)`` fraction of the image each mask covers (mean of its values)."""
        return self.masks.float().mean(dim=(0, 2, 3))

    def select(self, labels: Sequence[str]) -> Segmentation:
        """The masks of ``labels``, in that order.

        Raises:
            KeyError: a label is not in this segmentation; the message lists the valid ones.
        """
        missing = [label for label in labels if label not in self.labels]
        if missing:
            raise KeyError(f"unknown labels {missing}; this segmentation has {self.labels}")
        index = torch.tensor([self.labels.index(label) for label in labels], dtype=torch.long)
        return Segmentation(self.masks.index_select(1, index.to(self.masks.device)), list(labels))


def load_dpst_mask(
    path: str | os.PathLike[str], size: tuple[int, int] | None = None, *, min_pixels: int = 64
) -> Segmentation:
    """Read a DPST colour-coded mask as hard masks labelled by colour name.

    Pixels are matched to :data:`DPST_COLOURS` (every channel within 0.1); pixels matching none,
    and transparent pixels, belong to no segment, and their count is logged. Only colours present
    are returned, in :data:`DPST_COLOURS` order. A colour with fewer than ``min_pixels`` *interior*
    pixels (pixels whose 3x3 neighbourhood has the same colour) is dropped as antialiasing residue:
    hand-drawn masks have thin grey seams between black and white regions that would otherwise
    become a spurious "grey" segment (62 of the 90 DPST benchmark masks, in 33 of 45 pairs).

    Args:
        path: the mask image (any format :func:`photostyle.io.load_image` reads; no colour
            management is applied).
        size: ``(H, W)`` of the photo the mask belongs to. A mask of another size but the same
            aspect ratio (within :data:`ASPECT_TOLERANCE`) is resized with nearest neighbour, with
            a warning.
        min_pixels: see above; 0 keeps every colour present.

    Returns:
        :class:`Segmentation` with masks ``(1, K, H, W)`` in {0, 1}.

    Raises:
        InputError: the file cannot be read.
        MaskError: no pixel has a DPST colour, or the aspect ratio is not the photo's.
    """
    loaded = load_image(path, colour_manage=False)
    if size is not None:
        (h, w), (th, tw) = loaded.tensor.shape[-2:], size
        if abs(math.log((w / h) / (tw / th))) > math.log1p(ASPECT_TOLERANCE):
            raise MaskError(
                f"{path}: this mask is {w}x{h} but the photo is {tw}x{th} (width x height); "
                "is it the mask of another photo? Give the mask drawn on this photo"
            )
    index = _colour_index(loaded.tensor[0])
    if loaded.alpha is not None:
        index[loaded.alpha[0, 0] < 0.5] = -1
    labels = list(DPST_COLOURS)
    counts = torch.bincount(index[index >= 0], minlength=len(labels))
    if not bool(counts.any()):
        raise MaskError(
            f"{path}: no pixel has a DPST mask colour; expected {', '.join(labels)} "
            f"(RGB within {TOLERANCE} of the values listed in photostyle.masks.DPST_COLOURS)"
        )
    padded = F.pad(index[None, None].float(), (1, 1, 1, 1), mode="replicate")[0, 0]
    height, width = index.shape
    interior = index >= 0
    for dy in range(3):
        for dx in range(3):
            interior &= padded[dy : dy + height, dx : dx + width] == index
    interior_counts = torch.bincount(index[interior], minlength=len(labels))
    keep = [k for k in range(len(labels)) if counts[k] > 0 and interior_counts[k] >= min_pixels]
    dropped = [labels[k] for k in range(len(labels)) if counts[k] > 0 and k not in keep]
    if dropped:
        logger.info("%s: dropped %s (fewer than %d interior pixels: antialiasing residue)", path, dropped, min_pixels)
    if not keep:
        raise MaskError(
            f"{path}: every DPST colour region has fewer than {min_pixels} interior pixels; "
            "paint solid regions or lower min_pixels"
        )
    masks = (index == torch.tensor(keep).view(-1, 1, 1)).float().unsqueeze(0)
    uncovered = int((masks.sum(dim=1) == 0).sum())
    if uncovered:
        total = height * width
        logger.info("%s: %d pixels (%.1f%%) are not covered by any segment", path, uncovered, 100 * uncovered / total)
    seg = Segmentation(masks, [labels[k] for k in keep])
    if size is not None and tuple(size) != seg.size:
        (h, w), (th, tw) = seg.size, size
        warnings.warn(
            f"{path}: mask is {w}x{h} (width x height) but the photo is {tw}x{th}; "
            "the mask was resized with nearest neighbour",
            stacklevel=2,
        )
        seg = seg.resize(th, tw)
    return seg


def _colour_index(rgb: torch.Tensor) -> torch.Tensor:
    """``(H, W)`` index into :data:`DPST_COLOURS` of each pixel of ``rgb`` ``(3, H, W)``, -1 for none."""
    # Each channel, quantised to 8 bits, is level 0, 1 or 2 (near 0, 0.5 or 1) or 3 (none of them).
    values = torch.arange(256) / 255
    level_of = torch.full((256,), 3, dtype=torch.long)
    for level in (0, 1, 2):
        level_of[(values - level / 2).abs() < TOLERANCE] = level
    colour_of = torch.full((64,), -1, dtype=torch.long)
    for k, (r, g, b) in enumerate(DPST_COLOURS.values()):
        colour_of[int(r * 32 + g * 8 + b * 2)] = k
    level = level_of[(rgb * 255).round().long()]
    return colour_of[level[0] * 16 + level[1] * 4 + level[2]]


def match_segmentations(
    content: Segmentation, style: Segmentation
) -> tuple[Segmentation, Segmentation, list[str]]:
    """Give content and style segmentations the same labels in the same order.

    A label counts as present when its mask is non-zero somewhere. Labels present in both keep the
    content's order. A content-only segment is matched to the whole style photo (its pixels get
    the global style as target): the style gets an all-ones mask under that label. Style-only
    segments are dropped, as nothing in the content would use them. Each such decision is
    explained in the returned notes.

    Args:
        content: segmentation of the content photo.
        style: segmentation of the style photo (any size).

    Returns:
        ``(content, style, notes)``: both with the same labels, then one line per decision.
    """
    content_present = [label for label, m in zip(content.labels, content.masks[0]) if bool(m.any())]
    style_present = {label for label, m in zip(style.labels, style.masks[0]) if bool(m.any())}
    notes = []
    masks = []
    for label in content_present:
        if label in style_present:
            masks.append(style.masks[:, style.labels.index(label)])
        else:
            notes.append(f"content segment '{label}' has no counterpart in the style photo: "
                         "it is matched to the whole style photo")
            masks.append(style.masks.new_ones((1, *style.size)))
    for label in style.labels:
        if label in style_present and label not in content_present:
            notes.append(f"style segment '{label}' has no counterpart in the content photo: it is not used")
    if not content_present:
        notes.append("the content segmentation is empty: no segment is matched")
    style_masks = torch.stack(masks, dim=1) if masks else style.masks[:, :0]
    return content.select(content_present), Segmentation(style_masks, list(content_present)), notes


def save_colour_mask(
    seg: Segmentation, path: str | os.PathLike[str], *, overwrite: bool = False
) -> dict[str, tuple[int, int, int]]:
    """Write ``seg`` as a colour-coded PNG that :func:`load_dpst_mask` reads back (up to 9 labels).

    Each pixel takes the colour of its strongest mask; pixels whose masks sum below 0.5 are dark
    grey (40, 40, 40), which is no segment. Labels named after a DPST colour keep it; other labels
    take the unused DPST colours in order, then further distinct colours (saturation 0.6, value
    0.8, golden-ratio hues), which are never mistaken for DPST colours.

    Args:
        seg: the segmentation, ``(1, K, H, W)``.
        path: destination; the format follows the suffix (use .png: lossy formats shift colours).
        overwrite: replace an existing file.

    Returns:
        The legend: label -> RGB colour in 0..255.
    """
    legend = _legend(seg.labels)
    palette = torch.tensor([legend[label] for label in seg.labels] + [_UNCOVERED_RGB], dtype=torch.float32) / 255
    masks = seg.masks[0].float().cpu()
    index = masks.argmax(dim=0) if len(seg.labels) else torch.zeros(seg.size, dtype=torch.long)
    index[masks.sum(dim=0) < 0.5] = len(seg.labels)
    image = palette[index].permute(2, 0, 1).unsqueeze(0)
    save_image(image, path, overwrite=overwrite)
    return legend


def _legend(labels: Sequence[str]) -> dict[str, tuple[int, int, int]]:
    def to255(rgb: tuple[float, float, float]) -> tuple[int, int, int]:
        return tuple(int(round(c * 255)) for c in rgb)  # type: ignore[return-value]

    free = [name for name in DPST_COLOURS if name not in labels]
    legend = {}
    extra = 0
    for label in labels:
        if label in DPST_COLOURS:
            legend[label] = to255(DPST_COLOURS[label])
        elif free:
            legend[label] = to255(DPST_COLOURS[free.pop(0)])
        else:
            legend[label] = _extra_colour(extra)
            extra += 1
    return legend


def _extra_colour(i: int) -> tuple[int, int, int]:
    """The i-th of endless distinct hues at saturation 0.6, value 0.8 (channels in 0.32..0.8)."""
    rgb = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.6, 0.8)
    return tuple(int(round(c * 255)) for c in rgb)  # type: ignore[return-value]


def load_mask_pair(
    content_mask: str | Path | None,
    style_mask: str | Path | None,
    content_size: tuple[int, int],
    style_size: tuple[int, int],
) -> tuple[Segmentation | None, Segmentation | None, list[str]]:
    """Hand-made DPST masks of both photos at the photos' sizes, matched label by label.

    Returns ``(None, None, [])`` when neither mask is given.

    Raises:
        MaskError: only one of the two masks is given, or a mask cannot be used.
    """
    if content_mask is None and style_mask is None:
        return None, None, []
    if content_mask is None or style_mask is None:
        raise MaskError(
            f"expected a content mask and a style mask but received content_mask={content_mask}, "
            f"style_mask={style_mask}; give both (--content-mask and --style-mask), or neither"
        )
    return match_segmentations(load_dpst_mask(content_mask, size=content_size), load_dpst_mask(style_mask, size=style_size))
