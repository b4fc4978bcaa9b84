"""Co-segmentation of a content and a style photo by Deep Feature Factorization.

Deep Feature Factorization (Collins, Achanta and Süsstrunk, ECCV 2018) factorises the VGG
features of several photos *together* with non-negative matrix factorisation (NMF): the pixels
of both photos, as rows of one non-negative matrix ``V ≈ W H``, share the ``k`` factors (rows
of ``H``), so each factor is a "concept" (sky, foliage, a wall's texture) that the two photos
have in common, and ``W`` says how strongly each pixel shows it. Here:

1. both photos are resized to a long side of ``size`` px and encoded by VGG16; ``conv4_1``,
   ``conv5_1`` (upsampled) and ``conv3_1`` (downsampled) are stacked on the ``conv4_1`` grid.
   Each channel is divided by its mean over the photo plus ``photo_norm`` times the layer's
   mean, which removes much of the photos' global look (a red dusk sky and a blue noon sky
   become alike), then each layer is scaled to unit mean pixel norm over both photos;
2. NMF with multiplicative updates (Lee and Seung 2001) from a seeded start gives ``k`` factors;
   factors whose pixels have similar mean features are grouped (Ward's criterion, while a merge
   costs less than ``merge`` of the total variance), which picks the number of concepts;
3. the activations are upsampled to each photo's size, refined to the photo's edges with a
   guided filter (He et al. 2010) that has the photo as guide, and multiplied by a colour
   model (``P(concept | Lab colour)`` from per-concept colour histograms of the same photo, to
   the power ``colour``; colour is compared only within a photo, never across, since the
   photos' colours are what differ); each pixel takes the concept of largest activation;
4. a concept no pixel of one photo takes gives its pixels to their best concept present in
   both photos; then segments smaller than ``min_fraction`` of either photo join their
   longest-bordering neighbour (:func:`~photostyle.grouping.merge_small_segments_pair`).

Labels are ``"concept-0"``, ``"concept-1"``, ... by decreasing area over both photos; the
same label is the same factor in both photos.

The features come from :func:`photostyle.features.get_encoder`: the transfer's VGG16 weights, loaded
once per process (with average pooling, so a network of its own). There is no colour-only fallback: without those
weights the transfer cannot run either, so :class:`~photostyle.errors.WeightsError` says how
to fetch them (``photostyle weights --fetch vgg16-imagenet``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from kornia.color import rgb_to_lab
from kornia.filters import guided_blur

from photostyle.grouping import merge_small_segments_pair
from photostyle.masks import Segmentation
from photostyle.segmentation.base import Segmenter, check_image, register_segmenter

__all__ = ["CoSegmenter", "cosegment", "nmf"]

_EPS = 1e-9


def nmf(
    v: torch.Tensor, k: int, *, iterations: int = 150, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-negative matrix factorisation ``v ≈ w @ h`` by multiplicative updates (Frobenius loss).

    Args:
        v: ``(N, C)`` non-negative.
        k: number of factors, at least 1.
        iterations: update rounds (each updates ``h`` then ``w``).
        seed: seed of the uniform random start, so the result is deterministic.

    Returns:
        ``w`` ``(N, k)`` and ``h`` ``(k, C)``, both non-negative.

    Example:
        >>> w, h = nmf(torch.rand(20, 6), 2, iterations=10)
        >>> tuple(w.shape), tuple(h.shape)
        ((20, 2), (2, 6))
    """
    if k < 1:
        raise ValueError(f"expected at least 1 factor but received k={k}")
    if bool((v < 0).any()):
        raise ValueError("nmf needs a non-negative matrix; received negative values")
    generator = torch.Generator().manual_seed(seed)
    scale = (v.mean() / k).sqrt().clamp_min(_EPS)
    w = (torch.rand(v.shape[0], k, generator=generator, dtype=v.dtype) * scale).to(v.device)
    h = (torch.rand(k, v.shape[1], generator=generator, dtype=v.dtype) * scale).to(v.device)
    for _ in range(iterations):
        h = h * (w.T @ v) / ((w.T @ w) @ h + _EPS)
        w = w * (v @ h.T) / (w @ (h @ h.T) + _EPS)
    return w, h


def _features(encoder: torch.nn.Module, image: torch.Tensor, size: int, layers: Sequence[str]) -> list[torch.Tensor]:
    """``layers`` of ``image`` resized to long side ``size``, each ``(1, C_l, h, w)`` on the first layer's grid."""
    height, width = image.shape[-2:]
    scale = size / max(height, width)
    small = F.interpolate(image, size=(max(16, round(height * scale)), max(16, round(width * scale))),
                          mode="bilinear", align_corners=False, antialias=True)
    out = encoder(small)
    grid = out[layers[0]].shape[-2:]
    return [F.interpolate(out[name], size=grid, mode="bilinear", align_corners=False) if out[name].shape[-2:] != grid
            else out[name] for name in layers]


def cosegment(
    images: Sequence[torch.Tensor],
    encoder: torch.nn.Module,
    *,
    factors: int = 6,
    size: int = 352,
    layers: Sequence[str] = ("conv4_1", "conv5_1", "conv3_1"),
    iterations: int = 150,
    radius: float = 0.02,
    eps: float = 1e-3,
    seed: int = 0,
    photo_norm: float = 1.0,
    merge: float = 0.015,
    colour: float = 1.0,
) -> list[torch.Tensor]:
    """Soft concept activations of photos factorised together (Deep Feature Factorization).

    Args:
        images: photos, each ``(1, 3, H_i, W_i)`` RGB in [0, 1].
        encoder: returns a dict with ``layers`` (ReLU features) for a ``(1, 3, h, w)`` [0, 1] image,
            e.g. :class:`photostyle.features.VGGEncoder`.
        factors: number of NMF factors ``k``.
        size: long side in px at which the features are computed.
        layers: encoder layers, resampled to the grid of the first and concatenated.
        iterations: NMF update rounds.
        radius: guided-filter radius as a fraction of each photo's long side (0 = no refinement).
        eps: guided-filter regularisation in squared [0, 1] intensity units.
        seed: NMF start.
        photo_norm: per-photo channel normalisation strength (0 = none; larger = weaker).
        merge: Ward merge threshold, a fraction of the total feature variance (0 = keep all factors).
        colour: exponent of the within-photo colour model (0 = features only).

    Returns:
        Per photo ``(1, g, H_i, W_i)`` non-negative activations of the ``g <= k`` concepts.
    """
    feats = [_features(encoder, image.float(), size, layers) for image in images]
    columns = []
    for index in range(len(layers)):
        layer = [f[index] for f in feats]
        if photo_norm > 0:
            layer = [x / (x.mean(dim=(2, 3), keepdim=True) + photo_norm * x.mean()) for x in layer]
        norm = torch.cat([x.norm(dim=1).flatten() for x in layer]).mean().clamp_min(_EPS)
        columns.append([x / norm for x in layer])
    per_image = [torch.cat([c[i] for c in columns], dim=1) for i in range(len(images))]
    grids = [x.shape[-2:] for x in per_image]
    v = torch.cat([x[0].flatten(1).T for x in per_image])
    w, h = nmf(v, factors, iterations=iterations, seed=seed)
    w = w * h.norm(dim=1).clamp_min(_EPS)  # the pixel's share of each factor in its reconstruction
    groups = _ward_groups(v, w.argmax(dim=1), factors, merge)
    w = torch.stack([w[:, g].sum(dim=1) for g in groups], dim=1)
    activations = []
    start = 0
    for image, grid in zip(images, grids):
        n = grid[0] * grid[1]
        act = w[start : start + n].T.reshape(1, len(groups), *grid)
        start += n
        act = F.interpolate(act, size=image.shape[-2:], mode="bilinear", align_corners=False)
        r = round(radius * max(image.shape[-2:]))
        if r > 0:
            act = guided_blur(image.float(), act, 2 * r + 1, eps, subsample=max(1, r // 4)).clamp_min(0)
        if colour > 0:
            act = act * _colour_posterior(image.float(), act) ** colour
        activations.append(act)
    return activations


def _colour_posterior(image: torch.Tensor, act: torch.Tensor, bins: int = 8) -> torch.Tensor:
    """``(1, k, H, W)`` probability of each segment given the pixel's Lab colour, from ``act``'s colour histograms.

    Each segment's histogram over ``bins**3`` Lab cells counts every pixel by its share of ``act``
    (GrabCut-style colour models, smoothed by one cell), so colour pulls pixels that the coarse
    features put on the wrong side of an edge back to the segment of their colour.
    """
    lab = rgb_to_lab(image.clamp(0, 1))[0]
    cell = torch.stack([lab[0] / 100 * bins, (lab[1] + 64) / 128 * bins, (lab[2] + 64) / 128 * bins])
    cell = cell.long().clamp(0, bins - 1)
    index = (cell[0] * bins + cell[1]) * bins + cell[2]  # (H, W)
    share = act[0] / act[0].sum(dim=0, keepdim=True).clamp_min(_EPS)  # (k, H, W)
    k = share.shape[0]
    hist = torch.zeros(k, bins**3, dtype=share.dtype, device=share.device)
    hist.index_add_(1, index.flatten(), share.flatten(1))
    hist = F.avg_pool3d(hist.view(1, k, bins, bins, bins), 3, stride=1, padding=1, count_include_pad=False).view(k, -1)
    posterior = (hist + _EPS) / (hist + _EPS).sum(dim=0, keepdim=True)
    return posterior[:, index].unsqueeze(0)


def _ward_groups(v: torch.Tensor, assign: torch.Tensor, k: int, merge: float) -> list[list[int]]:
    """Factors grouped by Ward's criterion until a merge would cost more than ``merge`` of the variance.

    Args:
        v: ``(N, C)`` features; assign: ``(N,)`` factor of each row in ``0..k-1``; merge: in [0, 1].

    Returns:
        Groups of factor indices (factors no row takes are dropped), in order of their first member.
    """
    groups = [[j] for j in range(k) if bool((assign == j).any())]
    count = [float((assign == g[0]).sum()) for g in groups]
    mean = [v[assign == g[0]].mean(dim=0) for g in groups]
    total = max(float(((v - v.mean(dim=0)) ** 2).sum()), _EPS)
    while len(groups) > 1:
        costs = {(a, b): count[a] * count[b] / (count[a] + count[b]) * float(((mean[a] - mean[b]) ** 2).sum())
                 for a in range(len(groups)) for b in range(a + 1, len(groups))}
        (a, b), cost = min(costs.items(), key=lambda item: item[1])
        if cost > merge * total:
            break
        mean[a] = (count[a] * mean[a] + count[b] * mean[b]) / (count[a] + count[b])
        count[a] += count[b]
        groups[a] += groups[b]
        del groups[b], count[b], mean[b]
    return groups


@register_segmenter("coseg")
class CoSegmenter(Segmenter):
    """Unlabelled co-segmentation of two photos into shared concepts (Deep Feature Factorization).

    See the module docstring for the method.

    Args:
        factors: number of NMF factors before similar, one-sided and small ones are merged.
        size: long side in px of the feature computation.
        layers: VGG16 layers factorised together.
        iterations: NMF update rounds.
        radius: guided-filter radius, fraction of the photo's long side (0 = none).
        eps: guided-filter regularisation.
        min_fraction: segments smaller than this fraction of either photo are merged.
        weights: VGG16 weights for :func:`photostyle.features.get_encoder` (``None`` = random,
            for tests only).
        device: where the features and the factorisation are computed (``None``: the photos' device).
        seed: NMF start.
        photo_norm, merge, colour: see :func:`cosegment`.

    Raises:
        WeightsError: the VGG16 weights are missing (on the first :meth:`segment_pair`).

    Example:
        >>> content_seg, style_seg = CoSegmenter().segment_pair(content, style)  # doctest: +SKIP
        >>> content_seg.labels == style_seg.labels  # doctest: +SKIP
        True
    """

    labelled = False

    def __init__(
        self,
        *,
        factors: int = 6,
        size: int = 352,
        layers: Sequence[str] = ("conv4_1", "conv5_1", "conv3_1"),
        iterations: int = 150,
        radius: float = 0.02,
        eps: float = 1e-3,
        min_fraction: float = 0.01,
        weights: str | None = "default",
        device: str | torch.device | None = None,
        seed: int = 0,
        photo_norm: float = 1.0,
        merge: float = 0.015,
        colour: float = 1.0,
    ) -> None:
        self.photo_norm, self.merge, self.colour = photo_norm, merge, colour
        self.factors, self.size, self.layers = factors, size, tuple(layers)
        self.iterations, self.radius, self.eps = iterations, radius, eps
        self.min_fraction, self.weights, self.device, self.seed = min_fraction, weights, device, seed

    def _encoder(self, device: torch.device) -> torch.nn.Module:
        from photostyle.features import get_encoder

        return get_encoder("vgg16", self.weights, self.layers, "avg", str(device))

    @torch.no_grad()
    def _run(self, images: Sequence[torch.Tensor]) -> list[Segmentation]:
        for image in images:
            check_image(image)
        device = torch.device(self.device) if self.device is not None else images[0].device
        acts = cosegment(
            [image.to(device) for image in images], self._encoder(device), factors=self.factors, size=self.size,
            layers=self.layers, iterations=self.iterations, radius=self.radius, eps=self.eps, seed=self.seed,
            photo_norm=self.photo_norm, merge=self.merge, colour=self.colour,
        )
        k = acts[0].shape[1]
        # Pixels of a factor missing from some photo take their best factor present in every photo.
        shared = torch.ones(k, dtype=torch.bool, device=acts[0].device)
        while True:
            index = [a.masked_fill(~shared.view(1, -1, 1, 1), -1.0).argmax(dim=1)[0] for a in acts]
            counts = torch.stack([torch.bincount(i.flatten(), minlength=k) for i in index])  # (P, k)
            present = (counts > 0).all(dim=0)
            if not bool(present.any()):  # nothing in common: one segment, the factor strongest in both
                strength = torch.stack([a.sum(dim=(0, 2, 3)) for a in acts]).min(dim=0).values
                present = torch.arange(k, device=shared.device) == strength.argmax()
            if bool((present == shared).all()):
                break
            shared = present
        order = [j for j in counts.sum(0).argsort(descending=True).tolist() if counts[:, j].sum() > 0]
        lookup = torch.tensor(order, device=index[0].device)
        segs = [Segmentation((i[None, None] == lookup.view(1, -1, 1, 1)).float(), [str(j) for j in order]) for i in index]
        segs = list(merge_small_segments_pair(segs[0], segs[-1], self.min_fraction))[: len(images)]
        labels = [f"concept-{n}" for n in range(len(segs[0].labels))]
        return [Segmentation(seg.masks, labels) for seg in segs]

    def segment(self, image: torch.Tensor) -> Segmentation:
        """Co-segment a photo with itself: ``(1, 3, H, W)`` in [0, 1] -> hard masks ``(1, K, H, W)``."""
        return self._run([image])[0]

    def segment_pair(self, content: torch.Tensor, style: torch.Tensor) -> tuple[Segmentation, Segmentation]:
        """Co-segment two photos, ``(1, 3, H, W)`` and ``(1, 3, H', W')`` in [0, 1].

        Returns:
            Hard masks ``(1, K, H, W)`` and ``(1, K, H', W')`` with the same labels in the same order;
            every label covers at least ``min_fraction`` of each photo (unless only one is left).
        """
        content_seg, style_seg = self._run([content, style])
        return content_seg, style_seg
