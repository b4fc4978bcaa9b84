"""The benchmark's metrics, computed alike for every method at one evaluation size.

Every image is resized to the content photo's own size (long side capped at :data:`MAX_EVAL_SIZE`
px; or a fixed ``eval_size``) before scoring, so photostyle, the reference results, the baseline and
any other method are measured on the same grid, at the resolution a user sees. The style photo is
taken at its own size under the same cap. Segment-wise metrics use the pair's hand-made masks (matched with
:func:`photostyle.masks.match_segmentations`) for every method; a pair without masks is one segment.

| metric | key | better | meaning |
|---|---|---|---|
| LPIPS (VGG) | ``lpips`` | lower | content fidelity: perceptual distance to the content photo |
| SSIM of luminance | ``ssim`` | higher | content fidelity: structure of Y kept from the content (1 = same) |
| Gram distance | ``gram`` | lower | style fidelity: relative VGG16 Gram error to the style photo per segment |
| Lab colour distance | ``colour`` | lower | style fidelity: sliced Wasserstein-2 of Lab colours to the style per segment |
| Matting energy x1e3 | ``matting`` | lower | photorealism: Matting-Laplacian energy per pixel (0 = affine recolouring) |

Gram: ``||G_o - G_s||_F / ||G_s||_F`` on conv1_1..conv5_1, mean over layers (each layer's value
is kept too, as ``gram:conv1_1`` ...: which scale of the style is missing). Lab colour
distance: in Lab units (L 0..100), a colour shift of ``t`` gives exactly ``|t|``. Matting energy:
``sum_c o_c^T L o_c / N`` with ``L`` the content's Matting Laplacian (3x3 windows, eps 1e-7), x1e3.

Segment-wise metrics are averaged over segments weighted by the segment's area in the content.
Cost is reported next to them for photostyle: wall seconds per pipeline stage, peak resident
memory (MiB), peak CUDA memory allocated (MiB, on GPU) and the device.
The evaluation network is torchvision's ImageNet VGG16 with max pooling (the network LPIPS was
calibrated on), whatever network the transfer itself used.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from kornia.color import rgb_to_lab, rgb_to_y
from kornia.metrics import ssim

from .. import io
from ..errors import InputError
from ..features import VGGEncoder, load_encoder
from ..losses import layer_masks, segment_grams
from ..matting import affine_energy_per_pixel
from ..weights import LPIPS_CHANNELS, load_lpips_heads

#: Longest side, in pixels, at which photos are scored by default (each at its own size up to this).
MAX_EVAL_SIZE = 1024

#: LPIPS v0.1 layers (VGG16 relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in photostyle's names).
LPIPS_LAYERS = ("conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3")
#: LPIPS' ScalingLayer: its input is in [-1, 1] and becomes ``(x - shift) / scale``.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
#: Style layers of the Gram distance.
GRAM_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")


def gram_key(layer: str) -> str:
    """Key of one layer's Gram distance among :meth:`Evaluator.score`'s scores: ``"gram:conv1_1"``."""
    return f"gram:{layer}"


class Metric(NamedTuple):
    """How to read one metric: table title, direction, one-line meaning."""

    title: str
    better: Literal["lower", "higher"]
    meaning: str


METRICS: dict[str, Metric] = {
    "lpips": Metric("LPIPS", "lower", "perceptual distance to the content photo (VGG LPIPS v0.1)"),
    "ssim": Metric("SSIM", "higher", "structural similarity of luminance to the content photo"),
    "gram": Metric("Gram", "lower", "per-segment relative Gram error to the style photo, VGG16 conv1_1..conv5_1"),
    "colour": Metric("Lab SW", "lower", "per-segment sliced Wasserstein-2 distance of Lab colours to the style photo"),
    "matting": Metric("Matting x1e3", "lower", "Matting-Laplacian energy per pixel under the content's Laplacian x1e3"),
}


def lpips_distance(
    features_x: Mapping[str, torch.Tensor], features_y: Mapping[str, torch.Tensor], heads: Sequence[torch.Tensor]
) -> torch.Tensor:
    """LPIPS from VGG16 features of two images of the same size.

    Each layer's features are unit-normalised over channels, their squared difference is weighted
    by the layer's linear head, averaged over space and summed over layers.

    Args:
        features_x: :data:`LPIPS_LAYERS` -> ``(B, C, h, w)``, from an input scaled as LPIPS does
            (see :class:`Evaluator`).
        features_y: the same layers for the other image.
        heads: five non-negative ``(1, C, 1, 1)`` weights.

    Returns:
        ``(B,)`` distances >= 0; 0 for identical inputs.
    """
    total = 0.0
    for name, head in zip(LPIPS_LAYERS, heads, strict=True):
        fx, fy = _unit(features_x[name]), _unit(features_y[name])
        total = total + ((fx - fy) ** 2 * head.to(fx)).sum(1).mean((1, 2))
    return total


def _unit(features: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return features / (features.square().sum(1, keepdim=True).sqrt() + eps)


def ssim_luminance(x: torch.Tensor, y: torch.Tensor, window_size: int = 11) -> torch.Tensor:
    """Mean SSIM of the luminance (Rec. 601 Y) of two images, without padding.

    Args:
        x: ``(B, 3, H, W)`` RGB in [0, 1], H and W at least ``window_size``.
        y: the same shape.

    Returns:
        ``(B,)`` in [-1, 1]; 1 for identical images.
    """
    if min(x.shape[-2:]) < window_size:
        raise InputError(
            f"SSIM needs images of at least {window_size}x{window_size} but received {tuple(x.shape[-2:])}"
        )
    return ssim(rgb_to_y(x), rgb_to_y(y), window_size, padding="valid").mean((1, 2, 3))


def segment_gram_distances(
    features: Mapping[str, torch.Tensor],
    style_features: Mapping[str, torch.Tensor],
    masks: torch.Tensor,
    style_masks: torch.Tensor,
    layers: Sequence[str] = GRAM_LAYERS,
) -> torch.Tensor:
    """Area-weighted relative Gram error ``||G_o - G_s||_F / ||G_s||_F`` per segment, for each layer.

    Args:
        features: layer -> ``(1, C, h, w)`` features of the output.
        style_features: layer -> ``(1, C, h', w')`` features of the style photo.
        masks: ``(1, K, H, W)`` segments of the output (the content's), in [0, 1].
        style_masks: ``(1, K, H', W')`` the matching segments of the style photo.
        layers: layers to compare.

    Returns:
        ``(len(layers),)``, each >= 0; 0 where the output's segment Grams equal the style's.
    """
    errors = []
    for name in layers:
        f, s = features[name], style_features[name]
        grams, _ = segment_grams(f, layer_masks(masks, tuple(f.shape[-2:])))
        style_grams, _ = segment_grams(s, layer_masks(style_masks, tuple(s.shape[-2:])))
        norm = style_grams.flatten(1).norm(dim=1).clamp(min=1e-12)
        errors.append(_area_weighted((grams - style_grams).flatten(1).norm(dim=1) / norm, masks, style_masks))
    return torch.stack(errors)


def segment_gram_distance(
    features: Mapping[str, torch.Tensor],
    style_features: Mapping[str, torch.Tensor],
    masks: torch.Tensor,
    style_masks: torch.Tensor,
    layers: Sequence[str] = GRAM_LAYERS,
) -> torch.Tensor:
    """The benchmark's Gram distance: :func:`segment_gram_distances` averaged over ``layers``; a scalar >= 0."""
    return segment_gram_distances(features, style_features, masks, style_masks, layers).mean()


def _area_weighted(values: torch.Tensor, masks: torch.Tensor, style_masks: torch.Tensor) -> torch.Tensor:
    """Mean of ``(K,)`` values weighted by content area, over segments present in both photos."""
    area = masks[0].flatten(1).sum(1) * (style_masks[0].flatten(1).sum(1) > 0)
    if float(area.sum()) == 0:
        raise InputError("no segment is present in both the content and the style masks; check the masks")
    return (values.nan_to_num(0.0) * area).sum() / area.sum()


def sliced_wasserstein(
    x: torch.Tensor,
    y: torch.Tensor,
    directions: int = 66,
    quantiles: int = 256,
    seed: int = 0,
    max_points: int = 16384,
) -> torch.Tensor:
    """Sliced Wasserstein-2 distance between two point clouds, in the points' units.

    The directions are ``directions // D`` random orthonormal bases (fixed by ``seed``), so their
    squared projections sum to the same multiple of ``|v|^2`` for every vector ``v``; the result
    is ``sqrt(D * mean over directions of W2^2)``. Hence a cloud shifted by ``t`` is at distance
    exactly ``|t|``. Each 1-D W2 compares ``quantiles`` quantiles (levels ``(i + 0.5) / Q``) of at
    most ``max_points`` points per cloud (a subset drawn with ``seed``: sorting is the cost).

    Args:
        x: ``(N, D)`` points.
        y: ``(M, D)`` points, M may differ from N.
        directions: number of projection directions, a multiple of D.
        quantiles: number of quantiles per direction.
        seed: seed of the directions and of the subsets.
        max_points: larger clouds are subsampled to this many points.

    Returns:
        scalar >= 0.
    """
    dims = x.shape[1]
    if directions % dims or y.shape[1] != dims or not len(x) or not len(y):
        raise InputError(
            f"expected non-empty (N, {dims}) and (M, {dims}) points and directions a multiple of {dims}, "
            f"but received {tuple(x.shape)}, {tuple(y.shape)} and {directions}"
        )
    generator = torch.Generator().manual_seed(seed)
    bases = torch.linalg.qr(torch.randn(directions // dims, dims, dims, generator=generator, dtype=torch.float64))[0]
    theta = bases.transpose(1, 2).reshape(-1, dims).T  # (D, directions), unit columns
    levels = (torch.arange(quantiles, dtype=torch.float64) + 0.5) / quantiles
    qx, qy = (_quantiles(_subset(p, max_points, seed) @ theta.to(p), levels.to(p)) for p in (x, y))
    return (dims * (qx - qy).square().mean()).sqrt()


def _subset(points: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    if len(points) <= size:
        return points
    index = torch.randperm(len(points), generator=torch.Generator().manual_seed(seed))[:size]
    return points[index.to(points.device)]


def _quantiles(values: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Quantiles along dim 0 with linear interpolation (as :func:`torch.quantile`), from one sort."""
    ordered = values.sort(dim=0).values
    position = levels * (len(values) - 1)
    low = position.floor().long()
    high = (low + 1).clamp(max=len(values) - 1)
    frac = (position - low)[:, None]
    return ordered[low] * (1 - frac) + ordered[high] * frac


def segment_colour_distance(
    image: torch.Tensor, style: torch.Tensor, masks: torch.Tensor, style_masks: torch.Tensor, seed: int = 0
) -> torch.Tensor:
    """Area-weighted sliced Wasserstein distance between the Lab colours of each segment.

    Args:
        image: ``(1, 3, H, W)`` RGB in [0, 1].
        style: ``(1, 3, H', W')`` RGB in [0, 1].
        masks: ``(1, K, H, W)`` segments of ``image``; pixels with mask >= 0.5 belong to a segment.
        style_masks: ``(1, K, H', W')`` the matching segments of ``style``.
        seed: seed of the projection directions.

    Returns:
        scalar >= 0 in Lab units (L 0..100).
    """
    lab, style_lab = rgb_to_lab(image)[0].flatten(1).T, rgb_to_lab(style)[0].flatten(1).T  # (N, 3)
    values = []
    for m, s in zip(masks[0].flatten(1) >= 0.5, style_masks[0].flatten(1) >= 0.5):
        both = bool(m.any()) and bool(s.any())
        values.append(sliced_wasserstein(lab[m], style_lab[s], seed=seed) if both else lab.new_tensor(0.0))
    return _area_weighted(torch.stack(values), masks, style_masks)


def fit_to(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize ``(B, 3, H, W)`` in [0, 1] to exactly ``size`` (bicubic, antialiased, clipped)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0.0, 1.0)


@dataclass
class PairTargets:
    """What every method of one pair is compared with, at evaluation size (see :meth:`Evaluator.targets`)."""

    content: torch.Tensor
    style: torch.Tensor
    masks: torch.Tensor
    style_masks: torch.Tensor
    content_features: dict[str, torch.Tensor]
    style_features: dict[str, torch.Tensor]


class Evaluator:
    """Scores images of one pair against its content and style photos.

    Args:
        weights: weights of the VGG16 evaluation network (see :func:`photostyle.features.load_encoder`);
            ``None`` gives a random network (always the same one, seed 0), for smoke tests only.
        heads: the five LPIPS heads; default :func:`photostyle.weights.load_lpips_heads`, or random
            non-negative heads when ``weights`` is ``None``.
        eval_size: long side in px at which everything is scored; ``None`` (the default): each photo
            at its own size, long side capped at :data:`MAX_EVAL_SIZE`.
        device: where the network runs.

    Attributes:
        description: network, heads and size, stored with every cached score.
    """

    def __init__(
        self,
        weights: str | None = "default",
        heads: Sequence[torch.Tensor] | None = None,
        eval_size: int | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        if eval_size is not None and eval_size < 32:
            raise InputError(f"--eval-size must be at least 32 px but received {eval_size}")
        self.device = torch.device(device)
        self.eval_size = eval_size
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # a random network is the same in every run, so cached scores stay valid
            self.encoder: VGGEncoder = load_encoder(
                "vgg16", weights, layers=(*GRAM_LAYERS, *LPIPS_LAYERS), pooling="max", device=self.device
            )
        heads_name = "given"
        if heads is None and weights is None:
            generator = torch.Generator().manual_seed(0)
            heads = [torch.rand(1, c, 1, 1, generator=generator) for c in LPIPS_CHANNELS]
            heads_name = "random"
        elif heads is None:
            heads, heads_name = load_lpips_heads(), "lpips-vgg-heads"
        self.heads = [h.to(self.device, torch.float32) for h in heads]
        # LPIPS scales [-1, 1] input by (x - shift) / scale; the encoder normalises [0, 1] input by
        # (x - mean) / std. Feeding it x * gain + bias gives exactly LPIPS' network input.
        mean, std = self.encoder.mean, self.encoder.std
        lp_mean = (torch.tensor(LPIPS_SHIFT) + 1).view(1, 3, 1, 1).to(mean) / 2
        lp_std = torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1).to(std) / 2
        gain, bias = std / lp_std, mean - lp_mean * std / lp_std
        same = torch.allclose(gain, torch.ones_like(gain), atol=1e-6) and bool(bias.abs().max() < 1e-6)
        self._lpips_input = None if same else (gain, bias)  # ImageNet weights: LPIPS' scaling is theirs
        size = f"{eval_size} px" if eval_size is not None else f"own size up to {MAX_EVAL_SIZE} px"
        self.description = f"{self.encoder.description}; LPIPS heads: {heads_name}; eval size {size}"

    def _side(self, image: torch.Tensor) -> int:
        """The long side at which ``image`` ``(1, 3, H, W)`` is scored."""
        return self.eval_size if self.eval_size is not None else min(max(image.shape[-2:]), MAX_EVAL_SIZE)

    def _features(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            gram = self.encoder(image)
            lpips = gram
            if self._lpips_input is not None:
                lpips = self.encoder(image * self._lpips_input[0] + self._lpips_input[1])
        return {**{n: gram[n] for n in GRAM_LAYERS}, **{f"lpips:{n}": lpips[n] for n in LPIPS_LAYERS}}

    def targets(
        self, content: torch.Tensor, style: torch.Tensor, masks: torch.Tensor | None, style_masks: torch.Tensor | None
    ) -> PairTargets:
        """Content and style at evaluation size, their features, and the masks resized to match.

        Args:
            content: ``(1, 3, H, W)`` RGB in [0, 1].
            style: ``(1, 3, H', W')`` RGB in [0, 1].
            masks: ``(1, K, H, W)`` hand masks of the content, or ``None`` for one segment.
            style_masks: ``(1, K, H', W')`` matching masks of the style, or ``None``.
        """
        content = io.resize_long_side(content.to(self.device), self._side(content))
        style = io.resize_long_side(style.to(self.device), self._side(style))
        if masks is None or style_masks is None:
            masks, style_masks = content.new_ones(1, 1, *content.shape[-2:]), style.new_ones(1, 1, *style.shape[-2:])
        masks = F.interpolate(masks.float().to(self.device), size=content.shape[-2:], mode="nearest-exact")
        style_masks = F.interpolate(style_masks.float().to(self.device), size=style.shape[-2:], mode="nearest-exact")
        return PairTargets(content, style, masks, style_masks, self._features(content), self._features(style))

    def score(self, image: torch.Tensor, targets: PairTargets) -> dict[str, float]:
        """All :data:`METRICS` of ``image`` ``(1, 3, h, w)`` in [0, 1] (resized to the content's evaluation size).

        The Gram distance of each layer comes too, under :func:`gram_key` (``"gram:conv3_1"``): ``"gram"`` is
        their mean.
        """
        image = fit_to(image.to(self.device), tuple(targets.content.shape[-2:]))
        feats = self._features(image)
        lpips = {n: feats[f"lpips:{n}"] for n in LPIPS_LAYERS}
        content_lpips = {n: targets.content_features[f"lpips:{n}"] for n in LPIPS_LAYERS}
        grams = segment_gram_distances(feats, targets.style_features, targets.masks, targets.style_masks)
        scores = {
            "lpips": lpips_distance(lpips, content_lpips, self.heads),
            "ssim": ssim_luminance(image, targets.content),
            "gram": grams.mean(),
            "colour": segment_colour_distance(image, targets.style, targets.masks, targets.style_masks),
            "matting": 1e3 * affine_energy_per_pixel(image, targets.content),
            **{gram_key(layer): value for layer, value in zip(GRAM_LAYERS, grams)},
        }
        values = {k: float(v) for k, v in scores.items()}
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        if bad:
            raise InputError(f"metrics {bad} are not finite for this image; check it is a valid photo")
        return values
