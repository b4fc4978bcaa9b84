"""Local affine colour transforms: fit at working size, apply at full resolution.

The Matting Laplacian favours outputs that are, in every small window, an affine
function of the content's colours. :func:`fit_local_affine` finds such a function
for the optimised result (the colour guided filter of He et al., with 3x3 colour
covariances) and :func:`apply_local_affine` applies it to the content photo at any
resolution (bilateral-guided / fast guided-filter upsampling). The output keeps the
full-resolution content's edges and detail and takes the result's colours.
Everything that runs at full resolution is done in row tiles of about
:data:`TILE_PIXELS` pixels, written into the one output tensor, so the memory it
needs beyond the content and the output is the same for a 12- and a 120-megapixel
photo; the tiles join without seams because each samples the same continuous
coefficient field.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia.color import rgb_to_grayscale
from kornia.filters import box_blur

TILE_PIXELS = 2**20
"""Pixels per full-resolution tile: about 60 MB of resampled coefficients, whatever the photo's size."""
FLAT_RIDGE = 10.0
"""How many times larger the ridge of the fit in flat regions is than ``eps``; there it pulls the maps towards
the identity (see :func:`local_affine_upsample`)."""


def _mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    k = 2 * radius + 1
    return box_blur(x, (k, k), border_type="reflect")


def fit_local_affine(guide: torch.Tensor, target: torch.Tensor, radius: int = 2, eps: float = 1e-4) -> torch.Tensor:
    """Per-pixel affine maps ``target ~ A @ guide + b`` fitted in ``(2r+1)^2`` windows.

    Args:
        guide: ``(1, 3, H, W)`` content photo in [0, 1].
        target: ``(1, C, H, W)`` image to reproduce (the optimised result).
        radius: window radius in pixels.
        eps: ridge regulariser; larger values give smoother, flatter maps.

    Returns:
        ``(1, C * 4, H, W)`` coefficients, already averaged over the windows that
        contain each pixel: for output channel ``c``, channels ``4c..4c+2`` are the
        row of ``A`` and ``4c+3`` is ``b``.
    """
    dtype = guide.dtype
    guide, target = guide.double(), target.double()
    mean_i = _mean(guide, radius)  # (1,3,H,W)
    mean_p = _mean(target, radius)  # (1,C,H,W)
    ii = guide[:, :, None] * guide[:, None]  # (1,3,3,H,W)
    cov_ii = _mean(ii.flatten(1, 2), radius).unflatten(1, (3, 3)) - mean_i[:, :, None] * mean_i[:, None]
    ip = guide[:, None] * target[:, :, None]  # (1,C,3,H,W)
    cov_ip = _mean(ip.flatten(1, 2), radius).unflatten(1, (target.shape[1], 3)) - mean_p[:, :, None] * mean_i[:, None]
    sigma = cov_ii.permute(0, 3, 4, 1, 2) + eps * torch.eye(3, dtype=guide.dtype, device=guide.device)
    rhs = cov_ip.permute(0, 3, 4, 2, 1)  # (1,H,W,3,C)
    a = torch.linalg.solve(sigma, rhs).permute(0, 4, 3, 1, 2)  # (1,C,3,H,W)
    b = mean_p - (a * mean_i[:, None]).sum(2)  # (1,C,H,W)
    coeffs = torch.cat([a, b[:, :, None]], dim=2).flatten(1, 2)  # (1,C*4,H,W)
    return _mean(coeffs, radius).to(dtype)


def _plus_identity(coeffs: torch.Tensor) -> torch.Tensor:
    """``(1, 12, h, w)`` maps of a change to a 3-channel image -> the maps of the image itself (``A + I``)."""
    out = coeffs.clone()
    out[:, [0, 5, 10]] += 1  # the diagonal of A: channel c's own weight sits at 4c + c
    return out


def apply_local_affine(
    coeffs: torch.Tensor, image: torch.Tensor, tile_rows: int | None = None, residual: torch.Tensor | None = None
) -> torch.Tensor:
    """Apply per-pixel affine colour maps, bilinearly resampled to ``image``'s size.

    Args:
        coeffs: ``(1, C * 4, h, w)`` from :func:`fit_local_affine`.
        image: ``(1, 3, H, W)`` content photo in [0, 1] at any resolution.
        tile_rows: rows processed at once (default: :func:`tile_rows_for` ``W``); memory beyond
            ``image`` and the output is about ``tile_rows * W * (9 C + 2)`` floats.
        residual: optional ``(1, C, h, w)`` or ``(1, 1, h, w)`` (added to every channel) added
            after bilinear resampling (the part of a result that no local affine map of the
            content explains).

    Returns:
        ``(1, C, H, W)`` clamped to [0, 1], on ``image``'s device, of ``image``'s dtype.
    """
    _, _, height, width = image.shape
    channels = coeffs.shape[1] // 4
    rows = tile_rows or tile_rows_for(width)
    coeffs = coeffs.to(image.device, image.dtype)
    if residual is not None:
        coeffs = torch.cat([coeffs, residual.to(coeffs)], dim=1)
    out = torch.empty(1, channels, height, width, dtype=image.dtype, device=image.device)
    for top in range(0, height, rows):
        bottom = min(top + rows, height)
        out[:, :, top:bottom] = _apply_tile(coeffs, image[:, :, top:bottom], channels, top, height)
    return out


def add_resampled(image: torch.Tensor, change: torch.Tensor, tile_rows: int | None = None) -> torch.Tensor:
    """Add ``change`` ``(1, C, h, w)``, bilinearly resampled, to ``image`` ``(1, C, H, W)`` in place, in row tiles.

    Returns:
        ``image``, clamped to [0, 1].
    """
    _, _, height, width = image.shape
    rows = tile_rows or tile_rows_for(width)
    change = change.to(image.device, image.dtype)
    for top in range(0, height, rows):
        bottom = min(top + rows, height)
        image[:, :, top:bottom] += resample_rows(change, top, bottom - top, height, width)
    return image.clamp_(0, 1)


def resample_rows(field: torch.Tensor, top: int, rows: int, height: int, width: int) -> torch.Tensor:
    """Rows ``top .. top + rows`` of ``field`` ``(1, C, h, w)`` bilinearly resampled to ``height x width``."""
    kind = dict(device=field.device, dtype=field.dtype)
    xs = (torch.arange(width, **kind) + 0.5) / width * 2 - 1
    ys = (torch.arange(top, top + rows, **kind) + 0.5) / height * 2 - 1
    grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij")[::-1], dim=-1)[None]  # (1,rows,W,2) as (x, y)
    return F.grid_sample(field, grid, mode="bilinear", padding_mode="border", align_corners=False)


def tile_rows_for(width: int) -> int:
    """Rows of a full-resolution tile ``width`` px wide: about :data:`TILE_PIXELS` pixels, at least one row."""
    return max(1, TILE_PIXELS // width)


def _apply_tile(coeffs: torch.Tensor, guide: torch.Tensor, channels: int, top: int, height: int) -> torch.Tensor:
    """The output rows ``top .. top + rows`` of :func:`apply_local_affine`.

    Args:
        coeffs: ``(1, C * 4 [+ C or 1], h, w)`` maps, with the residual's channels last if any.
        guide: ``(1, 3, rows, W)`` the content's rows ``top .. top + rows``, in [0, 1].
        channels: ``C``.
        top: the tile's first row in the full image; height: the full image's ``H``.

    Returns:
        ``(1, C, rows, W)`` in [0, 1].
    """
    sampled = resample_rows(coeffs, top, guide.shape[-2], height, guide.shape[-1])
    tile = sampled[:, : channels * 4].unflatten(1, (channels, 4))  # (1,C,4,rows,W)
    out = (tile[:, :, :3] * guide[:, None]).sum(2) + tile[:, :, 3]
    if sampled.shape[1] > channels * 4:
        out += sampled[:, channels * 4 :]
    return out.clamp_(0, 1)


def texture_weight(image: torch.Tensor, threshold: float, radius: int = 2) -> torch.Tensor:
    """How textured each pixel's neighbourhood is: near 0 in flat regions, near 1 in detailed ones.

    ``s^2 / (s^2 + threshold^2)`` with ``s`` the standard deviation of the grey level in a
    ``(2 radius + 1)^2`` window.

    Args:
        image: ``(1, 3, H, W)`` RGB in [0, 1].
        threshold: grey-level standard deviation (0..1) at which the weight is one half.

    Returns:
        ``(1, 1, H, W)`` in [0, 1).
    """
    grey = rgb_to_grayscale(image)
    var = (_mean(grey * grey, radius) - _mean(grey, radius) ** 2).clamp(min=0)
    return var / (var + threshold**2)


def local_affine_upsample(
    guide_small: torch.Tensor,
    result_small: torch.Tensor,
    guide_full: torch.Tensor,
    radius: int = 2,
    eps: float = 1e-4,
    tile_rows: int | None = None,
    detail: float = 0.0,
    flat: float = 0.0,
    flat_radius: int = 8,
) -> torch.Tensor:
    """Carry a result computed at working size over to the full-resolution content.

    Args:
        guide_small: ``(1, 3, h, w)`` content at working size, in [0, 1].
        result_small: ``(1, 3, h, w)`` optimised result at working size, in [0, 1].
        guide_full: ``(1, 3, H, W)`` content at full size, in [0, 1]; only read, in row tiles.
        tile_rows: rows per full-resolution tile (default: :func:`tile_rows_for` ``W``).
        detail: share in [0, 1] of the lightness of the result's non-affine part (texture the
            optimisation added) that is kept, bilinearly upsampled; 0 gives a pure local affine
            recolouring of the content, 1 reproduces the result's lightness at working size. Its
            colour is never kept: at object edges it is the purple and green speckle of pixel
            optimisation, not texture.
        flat: grey-level standard deviation (0..1) of the content that separates flat regions
            from textured ones (:func:`texture_weight`); 0 treats every region as textured.
            Where the content is flat, no texture is added back and the affine maps are
            fitted over ``flat_radius`` windows instead of ``radius`` ones, so the blotches and
            swirls an optimiser leaves in a clear sky or a studio backdrop are smoothed away
            while edges stay sharp (the fit is still affine in the content's colours). There the
            maps fit the *change* with a ridge :data:`FLAT_RIDGE` times ``eps``, so they lean to
            the identity: a flat region keeps what little variation it has as it is, where a dark
            night sky turned into a bright dusk would otherwise show its sensor noise and JPEG
            blocks several times over.
        flat_radius: window radius in working-size pixels of the fit in flat regions.

    Returns:
        ``(1, 3, H, W)`` in [0, 1]; besides it, full resolution costs one tile's memory.
    """
    coeffs = fit_local_affine(guide_small, result_small, radius=radius, eps=eps)
    weight = None
    if flat > 0:
        weight = texture_weight(guide_small, flat, radius)
        smooth = _plus_identity(fit_local_affine(guide_small, result_small - guide_small, radius=flat_radius,
                                                 eps=FLAT_RIDGE * eps))
        coeffs = weight * coeffs + (1 - weight) * smooth
    residual = None
    if detail > 0:
        residual = detail * (result_small - apply_local_affine(coeffs, guide_small, tile_rows=tile_rows))
        residual = rgb_to_grayscale(residual)  # lightness only, one channel: painted colour is speckle
        if weight is not None:
            residual = residual * weight
    return apply_local_affine(coeffs, guide_full, tile_rows=tile_rows, residual=residual)
