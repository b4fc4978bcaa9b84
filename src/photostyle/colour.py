"""Per-segment colour transfer in CIE Lab.

Two methods, both segment by segment with feathered blending between segments:

- ``"reinhard"``: match the mean and standard deviation of L, a, b
  (Reinhard et al. 2001) — the benchmark's classical baseline;
- ``"distribution"``: match the whole 3-D colour distribution (iterative sliced
  optimal transport in RGB, Pitie et al. 2007), which also carries the style's
  contrast curve, colour spread and the correlations between channels.

The optimisation starts from one of these: the colours are right from step one,
so the optimiser only has to fix what statistics cannot (structure, local tone).

The finished output's colourfulness is then held within reach of the style's
(:func:`chroma_limits`, :func:`scale_chroma`): the content term pulls the content's own
colours back during the optimisation, which is all but invisible against a colourful
style and plain to see against a black-and-white one.
"""

from __future__ import annotations

from typing import Literal

import torch
from kornia.color import lab_to_rgb, rgb_to_lab
from kornia.filters import gaussian_blur2d

from .upsample import resample_rows, tile_rows_for

_EPS = 1e-4
_QUANTILES = 65
MAX_CHROMA_RATIO = 2.0
"""A segment of the output may be at most this many times as colourful (mean CIE Lab chroma) as its style
segment: a black-and-white style gives a black-and-white segment, a muted one a muted one."""


def _soft_weights(masks: torch.Tensor, feather: float) -> torch.Tensor:
    """Feather hard masks and add a background channel for uncovered pixels.

    Args:
        masks: ``(1, K, H, W)`` in [0, 1].
        feather: Gaussian sigma in pixels; 0 keeps hard edges.

    Returns:
        ``(1, K + 1, H, W)`` weights summing to one per pixel; the last channel
        is the part of the photo no segment covers.
    """
    background = (1.0 - masks.sum(1, keepdim=True)).clamp(min=0.0)
    weights = torch.cat([masks, background], dim=1)
    if feather > 0:
        k = int(2 * round(3 * feather) + 1)
        weights = gaussian_blur2d(weights, (k, k), (feather, feather), border_type="replicate")
    return weights / weights.sum(1, keepdim=True).clamp(min=_EPS)


def _masked_stats(lab: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean and std per channel and segment: ``(K, 3)`` each."""
    w = weights[0].flatten(1)  # (K, N)
    x = lab[0].flatten(1)  # (3, N)
    total = w.sum(1, keepdim=True).clamp(min=_EPS)
    mean = (w @ x.T) / total
    var = (w @ (x.T**2)) / total - mean**2
    return mean, var.clamp(min=_EPS).sqrt()


def _quantiles(values: torch.Tensor, levels: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Quantiles of each row of ``values`` (C, N), whose points weigh ``weights`` (N,) if given: ``(C, Q)``,
    strictly increasing."""
    if weights is None:
        q = torch.quantile(values, levels, dim=1).T
    else:
        ordered, index = values.sort(dim=1)
        w = weights[index]  # (C, N)
        cdf = (w.cumsum(dim=1) - 0.5 * w) / w.sum(dim=1, keepdim=True)
        q = _interp(levels.expand(len(values), -1).contiguous(), cdf.contiguous(), ordered)
    # Strictly increasing knots keep the interpolation well defined on flat segments.
    return q + torch.arange(len(levels), device=q.device, dtype=q.dtype) * 1e-6


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear map of ``x`` (C, N) through knots ``xp -> fp`` (C, Q), held flat outside."""
    idx = torch.searchsorted(xp.contiguous(), x.contiguous()).clamp(1, xp.shape[-1] - 1)
    x0, x1 = xp.gather(1, idx - 1), xp.gather(1, idx)
    f0, f1 = fp.gather(1, idx - 1), fp.gather(1, idx)
    t = ((x - x0) / (x1 - x0)).clamp(0, 1)
    return f0 + t * (f1 - f0)


def _sliced_transport(
    pixels: torch.Tensor, source: torch.Tensor, target: torch.Tensor, iterations: int, seed: int,
    target_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Iterative distribution transfer (Pitie et al. 2007) in RGB.

    Learns, from the segment's own pixels ``source`` (3, N) and the style segment's
    ``target`` (3, M), a sequence of 1-D quantile maps along random orthonormal
    bases, and applies it to ``pixels`` (3, P). After a few rotations the whole 3-D
    colour distribution matches, correlations included, and since the target lies
    in the RGB cube the result stays (almost) in gamut.
    """
    generator = torch.Generator().manual_seed(seed)
    levels = torch.linspace(0, 1, _QUANTILES, device=pixels.device, dtype=pixels.dtype)
    for _ in range(iterations):
        basis = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))[0].to(pixels)
        q_source = _quantiles(basis.T @ source, levels)
        q_target = _quantiles(basis.T @ target, levels, target_weights)
        source = basis @ _interp(basis.T @ source, q_source, q_target)
        pixels = basis @ _interp(basis.T @ pixels, q_source, q_target)
    return pixels


def segment_colour_transfer(
    content: torch.Tensor,
    style: torch.Tensor,
    content_masks: torch.Tensor | None = None,
    style_masks: torch.Tensor | None = None,
    feather: float | None = None,
    method: Literal["reinhard", "distribution"] = "reinhard",
    iterations: int = 8,
) -> torch.Tensor:
    """Give each content segment the Lab colour statistics of its style segment.

    Segments are matched by channel index, so both mask tensors must carry the
    same labels in the same order. Pixels that no segment covers take the
    whole-photo statistics. Soft (feathered) weights blend the per-segment maps,
    which avoids hard seams where two segments meet.

    Args:
        content: ``(1, 3, H, W)`` RGB in [0, 1].
        style: ``(1, 3, H', W')`` RGB in [0, 1].
        content_masks: ``(1, K, H, W)`` in [0, 1], or ``None`` for one global segment.
        style_masks: ``(1, K, H', W')`` in [0, 1], or ``None``.
        feather: blending width in pixels (default: 1% of the content's long side).
        method: ``"reinhard"`` (Lab mean and std) or ``"distribution"`` (sliced transport).
        iterations: rotations of the ``"distribution"`` method.

    Returns:
        ``(1, 3, H, W)`` RGB in [0, 1].
    """
    if (content_masks is None) != (style_masks is None):
        raise ValueError("give masks for both photos or for neither")
    if content_masks is None or style_masks is None:
        content_masks = content.new_ones(1, 1, *content.shape[-2:])
        style_masks = style.new_ones(1, 1, *style.shape[-2:])
    if content_masks.shape[1] != style_masks.shape[1]:
        raise ValueError(
            f"expected the same number of segments in both photos but received "
            f"{content_masks.shape[1]} and {style_masks.shape[1]}"
        )
    if method not in ("reinhard", "distribution"):
        raise ValueError(f"expected method 'reinhard' or 'distribution' but received {method!r}")
    if feather is None:
        feather = 0.01 * max(content.shape[-2:])

    # Segments plus the whole photo, whose statistics serve the uncovered part.
    masks_c = torch.cat([content_masks, content.new_ones(1, 1, *content.shape[-2:])], 1)
    masks_s = torch.cat([style_masks, style.new_ones(1, 1, *style.shape[-2:])], 1)
    weights = _soft_weights(content_masks, feather)  # (1, K+1, H, W)
    if method == "distribution":
        flat_c, flat_s = content[0].flatten(1), style[0].flatten(1)
        mapped = []
        for k, (mc, ws) in enumerate(zip(masks_c[0].flatten(1) > 0.5, masks_s[0].flatten(1))):
            mc, ms = mc if mc.any() else ~mc, ws > 0
            ms = ms if ms.any() else ~ms
            soft = not bool(((ws == 0) | (ws == 1)).all())  # a soft style mask weighs its pixels
            mapped.append(_sliced_transport(flat_c, flat_c[:, mc], flat_s[:, ms], iterations, seed=k,
                                            target_weights=ws[ms] if soft else None))
        rgb = torch.stack(mapped).view(-1, *content.shape[1:])  # (K+1, 3, H, W)
        return (weights[0, :, None] * rgb).sum(0, keepdim=True).clamp(0, 1)

    lab_c, lab_s = rgb_to_lab(content), rgb_to_lab(style)
    mean_c, std_c = _masked_stats(lab_c, masks_c)
    mean_s, std_s = _masked_stats(lab_s, masks_s)
    scale = (std_s / std_c)[..., None, None]  # (K+1, 3, 1, 1)
    mapped = (lab_c - mean_c[..., None, None]) * scale + mean_s[..., None, None]  # (K+1, 3, H, W)
    lab_out = (weights[0, :, None] * mapped).sum(0, keepdim=True)
    lab_out = torch.cat([lab_out[:, :1].clamp(0, 100), lab_out[:, 1:].clamp(-128, 127)], 1)
    return lab_to_rgb(lab_out).clamp(0, 1)


def blend_lab(content: torch.Tensor, result: torch.Tensor, lightness: float = 1.0, chroma: float = 1.0) -> torch.Tensor:
    """Keep a share of the change from ``content`` to ``result``, separately for lightness and colour.

    ``L* = L*_c + lightness (L*_r - L*_c)`` and likewise for a*, b* with ``chroma``, in CIE Lab:
    a photo editor's "fade" of an adjustment, with the tone and the colour faded apart.

    Args:
        content: ``(1, 3, H, W)`` RGB in [0, 1].
        result: ``(1, 3, H, W)`` RGB in [0, 1], the stylised image at the same size.
        lightness: share of the change in L* kept; 0 keeps the content's tone, 1 the result's.
        chroma: share of the change in a*, b* kept; 0 keeps the content's colours, 1 the result's.

    Returns:
        ``(1, 3, H, W)`` RGB in [0, 1]; ``result`` itself when both shares are 1.
    """
    if lightness == 1.0 and chroma == 1.0:
        return result
    lab_content, lab_result = rgb_to_lab(content), rgb_to_lab(result)
    share = lab_result.new_tensor([lightness, chroma, chroma]).view(1, 3, 1, 1)
    return lab_to_rgb(lab_content + share * (lab_result - lab_content)).clamp(0, 1)


def _mean_chroma(image: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``(K,)`` mean CIE Lab chroma ``sqrt(a*^2 + b*^2)`` of ``image`` ``(1, 3, H, W)`` under ``weights`` ``(1, K, H, W)``."""
    chroma = rgb_to_lab(image.clamp(0, 1))[:, 1:].norm(dim=1, keepdim=True)  # (1, 1, H, W)
    return (weights * chroma).sum(dim=(0, 2, 3)) / weights.sum(dim=(0, 2, 3)).clamp(min=_EPS)


def chroma_limits(
    image: torch.Tensor,
    style: torch.Tensor,
    masks: torch.Tensor | None = None,
    style_masks: torch.Tensor | None = None,
    max_ratio: float = MAX_CHROMA_RATIO,
    strength: float = 1.0,
    feather: float | None = None,
) -> torch.Tensor:
    """Per-pixel factors that bring each segment's colourfulness within ``max_ratio`` of its style segment's.

    A segment whose mean chroma ``C`` is above ``max_ratio`` times the style segment's ``C_s`` gets
    the factor ``max_ratio * C_s / C`` on a* and b*; every other segment 1 (colour is never added).
    Pixels no segment covers are judged against the whole photos. Factors blend between segments
    like :func:`segment_colour_transfer`'s maps, so no seam shows.

    Args:
        image: ``(1, 3, H, W)`` the output (any size up to the output's), RGB in [0, 1].
        style: ``(1, 3, H', W')`` RGB in [0, 1].
        masks: ``(1, K, H, W)`` in [0, 1], or ``None`` for one segment.
        style_masks: ``(1, K, H', W')`` in [0, 1] (soft weights allowed), or ``None``.
        max_ratio: the largest ratio of mean chromas left alone (> 0).
        strength: share of the reduction applied, in [0, 1] (0 returns all ones).
        feather: blending width in px (default: 1% of the long side).

    Returns:
        ``(1, 1, H, W)`` factors in (0, 1].

    Example:
        >>> grey = torch.full((1, 3, 8, 8), 0.5)
        >>> red = torch.zeros(1, 3, 8, 8); red[:, 0] = 0.8
        >>> float(chroma_limits(red, grey).max()) < 0.01
        True
    """
    if masks is None or style_masks is None:
        masks, style_masks = image.new_ones(1, 1, *image.shape[-2:]), style.new_ones(1, 1, *style.shape[-2:])
    masks_c = torch.cat([masks, image.new_ones(1, 1, *image.shape[-2:])], 1)
    masks_s = torch.cat([style_masks, style.new_ones(1, 1, *style.shape[-2:])], 1)
    ratio = max_ratio * _mean_chroma(style, masks_s) / _mean_chroma(image, masks_c).clamp(min=_EPS)
    factor = 1 - strength * (1 - ratio.clamp(max=1))  # (K+1,)
    weights = _soft_weights(masks, 0.01 * max(image.shape[-2:]) if feather is None else feather)
    return (weights * factor.view(1, -1, 1, 1)).sum(1, keepdim=True)


def scale_chroma(image: torch.Tensor, factor: torch.Tensor, tile_rows: int | None = None) -> torch.Tensor:
    """Multiply a* and b* of ``image`` ``(1, 3, H, W)`` by ``factor`` ``(1, 1, h, w)``, bilinearly resampled, in row tiles.

    Lightness and hue are kept. ``image`` is changed in place and returned, in [0, 1].
    """
    _, _, height, width = image.shape
    rows = tile_rows or tile_rows_for(width)
    factor = factor.to(image.device, image.dtype)
    for top in range(0, height, rows):
        bottom = min(top + rows, height)
        lab = rgb_to_lab(image[:, :, top:bottom].clamp(0, 1))
        lab[:, 1:] *= resample_rows(factor, top, bottom - top, height, width)
        image[:, :, top:bottom] = lab_to_rgb(lab).clamp(0, 1)
    return image
