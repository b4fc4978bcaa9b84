"""Per-segment colour-statistics transfer in CIE Lab (after Reinhard et al. 2001).

Used twice: as the start point of the optimisation (the colours are right from
step one, so the optimiser only has to fix structure) and, on its own, as the
classical baseline of the benchmark.
"""

from __future__ import annotations

import torch
from kornia.color import lab_to_rgb, rgb_to_lab
from kornia.filters import gaussian_blur2d

_EPS = 1e-4


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


def segment_colour_transfer(
    content: torch.Tensor,
    style: torch.Tensor,
    content_masks: torch.Tensor | None = None,
    style_masks: torch.Tensor | None = None,
    feather: float | None = None,
) -> torch.Tensor:
    """Match the Lab mean and standard deviation of each content segment to its style segment.

    Segments are matched by channel index, so both mask tensors must carry the
    same labels in the same order. Pixels that no segment covers take the
    global statistics. Soft (feathered) weights blend the per-segment transforms,
    which avoids hard seams where two segments meet.

    Args:
        content: ``(1, 3, H, W)`` RGB in [0, 1].
        style: ``(1, 3, H', W')`` RGB in [0, 1].
        content_masks: ``(1, K, H, W)`` in [0, 1], or ``None`` for one global segment.
        style_masks: ``(1, K, H', W')`` in [0, 1], or ``None``.
        feather: blending width in pixels (default: 1% of the content's long side).

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
    if feather is None:
        feather = 0.01 * max(content.shape[-2:])

    lab_c, lab_s = rgb_to_lab(content), rgb_to_lab(style)
    ones_c = content.new_ones(1, 1, *content.shape[-2:])
    ones_s = style.new_ones(1, 1, *style.shape[-2:])
    # Statistics from hard masks, plus the whole photo for the uncovered part.
    mean_c, std_c = _masked_stats(lab_c, torch.cat([content_masks, ones_c], 1))
    mean_s, std_s = _masked_stats(lab_s, torch.cat([style_masks, ones_s], 1))

    weights = _soft_weights(content_masks, feather)  # (1, K+1, H, W)
    scale = (std_s / std_c)[..., None, None]  # (K+1, 3, 1, 1)
    shifted = (lab_c - mean_c[..., None, None]) * scale + mean_s[..., None, None]  # (K+1, 3, H, W)
    lab_out = (weights[0, :, None] * shifted).sum(0, keepdim=True)
    lab_out = torch.cat([lab_out[:, :1].clamp(0, 100), lab_out[:, 1:].clamp(-128, 127)], 1)
    return lab_to_rgb(lab_out).clamp(0, 1)

