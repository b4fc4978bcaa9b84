"""Texture contrast per segment: the style photo's fine-scale contrast on the content's own detail.

The optimisation runs at a working size of a few hundred pixels, so what it paints is coarse: at
the photo's own size the result has the style's colours and tone but the content's texture
contrast (a crisp, hard-lit style keeps the content's softness, a hazy one its crispness). This
stage measures, segment by segment, the energy of a few detail bands (differences of Gaussians
1, 2, 4 and 8 px wide) in the result and in the style photo, each at its own size up to
:data:`DETAIL_SIDE` px, and scales each band of the result by the ratio, softened by
``strength`` (a gain ``r ** strength``, ``r`` clamped to ``[1 / MAX_GAIN, MAX_GAIN]``).

It never adds texture of its own or copies the style's: it only strengthens or softens the
detail the photo already has, the way a clarity or texture slider does, and not at all where
the content is flat (:func:`~photostyle.upsample.texture_weight`), so clear skies and studio
backdrops keep their smoothness and their noise is not amplified.
"""

from __future__ import annotations

import torch
from kornia.filters import gaussian_blur2d

from .upsample import texture_weight

__all__ = ["BAND_SIGMAS", "DETAIL_SIDE", "MAX_GAIN", "band_gains", "match_texture"]

#: Standard deviations in px of the Gaussians whose differences are the detail bands, finest first.
BAND_SIGMAS: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
#: Long side in px up to which both photos are compared at their own size (and the bands measured).
DETAIL_SIDE = 1024
#: Largest factor by which one band of one segment is strengthened (or softened, 1 / MAX_GAIN).
MAX_GAIN = 2.0
_FEATHER = 4.0  # px: segments blend over about this width, so no seam shows where the gain changes


def _blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    k = min(int(2 * round(3 * sigma) + 1), 2 * min(image.shape[-2:]) - 1)  # reflection needs a kernel within the image
    return gaussian_blur2d(image, (k, k), (sigma, sigma), border_type="reflect")


def _bands(image: torch.Tensor) -> list[torch.Tensor]:
    """Differences of Gaussians of ``image`` ``(1, C, H, W)``, one ``(1, C, H, W)`` per :data:`BAND_SIGMAS`."""
    levels = [image] + [_blur(image, s) for s in BAND_SIGMAS]
    return [fine - coarse for fine, coarse in zip(levels, levels[1:])]


def _energy(band: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Root-mean-square of ``band`` ``(1, C, H, W)`` inside each of ``masks`` ``(1, K, H, W)``: ``(K,)``."""
    power = band.square().mean(1, keepdim=True)
    return ((power * masks).sum((2, 3)) / masks.sum((2, 3)).clamp(min=1.0))[0].sqrt()


def band_gains(
    result: torch.Tensor, style: torch.Tensor, masks: torch.Tensor, style_masks: torch.Tensor, strength: float = 1.0
) -> torch.Tensor:
    """How much each detail band of each segment of ``result`` is scaled to match ``style``.

    Args:
        result: ``(1, 3, H, W)`` the transfer's output at its own size, RGB in [0, 1].
        style: ``(1, 3, H', W')`` the style photo at its own size.
        masks: ``(1, K, H, W)`` the content's segments in [0, 1].
        style_masks: ``(1, K, H', W')`` the style's matching segments.
        strength: exponent in [0, 1] applied to the energy ratios; 0 gives gains of one.

    Returns:
        ``(len(BAND_SIGMAS), K)`` gains in ``[1 / MAX_GAIN, MAX_GAIN] ** strength``; one where a
        segment is empty in either photo.
    """
    return _gains(_bands(result), style, masks, style_masks, strength)


def _gains(
    bands: list[torch.Tensor], style: torch.Tensor, masks: torch.Tensor, style_masks: torch.Tensor, strength: float
) -> torch.Tensor:
    """:func:`band_gains` from the result's :func:`_bands`, which :func:`match_texture` also scales."""
    present = (masks.sum((0, 2, 3)) > 0) & (style_masks.sum((0, 2, 3)) > 0)
    gains = []
    for ours, theirs in zip(bands, _bands(style)):
        ratio = (_energy(theirs, style_masks) / _energy(ours, masks).clamp(min=1e-4)).clamp(1 / MAX_GAIN, MAX_GAIN)
        gains.append(torch.where(present, ratio**strength, torch.ones_like(ratio)))
    return torch.stack(gains)


def match_texture(
    result: torch.Tensor,
    content: torch.Tensor,
    style: torch.Tensor,
    masks: torch.Tensor,
    style_masks: torch.Tensor,
    strength: float = 1.0,
    flat: float = 0.0,
) -> torch.Tensor:
    """``result`` with each segment's detail bands scaled to the style's energy (see the module's notes).

    Args:
        result: ``(1, 3, H, W)`` RGB in [0, 1], at most :data:`DETAIL_SIDE` px on its long side
            (callers resize; :func:`photostyle.pipeline.stylise` carries the change to larger photos).
        content: ``(1, 3, H, W)`` the content photo at the same size: where it is flat, nothing changes.
        style: ``(1, 3, H', W')`` the style photo, long side at most :data:`DETAIL_SIDE` px.
        masks: ``(1, K, H, W)`` content segments; style_masks: ``(1, K, H', W')`` the style's.
        strength: 0 (no change) to 1 (the style's band energies, within :data:`MAX_GAIN`).
        flat: grey-level standard deviation below which the content counts as flat
            (:func:`~photostyle.upsample.texture_weight`); 0 changes flat regions too.

    Returns:
        ``(1, 3, H, W)`` in [0, 1].
    """
    if strength == 0:
        return result
    bands = _bands(result)
    gains = _gains(bands, style, masks, style_masks, strength)  # (B, K)
    soft = _blur(masks.to(result.dtype), _FEATHER)
    soft = soft / soft.sum(1, keepdim=True).clamp(min=1e-6)  # (1, K, H, W): partition of unity (uncovered: none)
    covered = soft.sum(1, keepdim=True)
    where = covered if flat <= 0 else covered * texture_weight(content, flat)
    out = result.clone()
    for band, gain in zip(bands, gains):
        gain_map = (soft * gain.view(1, -1, 1, 1)).sum(1, keepdim=True) + (1 - covered)
        out += (gain_map - 1) * where * band
    return out.clamp_(0, 1)
