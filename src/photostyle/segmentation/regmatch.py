"""Automatic segmentation by region matching: each photo is segmented alone, then regions are paired by meaning.

``coseg`` factorises the features of both photos *together*, so a factor is whatever the two
photos have in common, which is often colour or texture: a green field joins a cloudy sky, an
evening sky joins a coffee cup. Here the two questions are kept apart:

1. **Regions, per photo.** Each photo is encoded by VGG16 (ImageNet weights, max pooling, long
   side ``size`` px). ``conv3_3``, ``conv4_3`` and ``conv5_3`` are resampled to the ``conv3_3``
   grid; each is normalised per photo (every channel divided by its mean over the photo plus
   the layer's mean, which removes the photo's global cast) and then per cell to unit length,
   so each layer counts alike. With the photo's Lab colour (weight ``colour``) and the cell's
   position (weight ``position``) appended, spherical-ish k-means (k-means++ start, seeded)
   splits the photo into ``regions`` regions. Their soft memberships are upsampled, refined to
   the photo's edges with a guided filter (He et al. 2010, the photo as guide) and each pixel
   takes its strongest region. A photo is over-segmented on purpose: a region is a piece of one
   kind of thing far more often than a whole kind is one cluster.
2. **Pairing, between photos.** Each region is described by the mean of ``conv5_1`` over it,
   normalised per photo as above (with the layer's mean weighted by ``semantic_norm``) and to
   unit length: deep, per-photo-normalised features say *what* a region is far more than how
   it looks (on the 45 DPST pairs' hand-made segments, the most similar style segment is the
   right one for 96% of the content area). The score of a content and a style region is their
   cosine similarity minus ``layout`` times the difference of their mean heights (sky stays
   above ground). The regions are paired by **optimal transport** (:func:`transport_plan`): the
   content photo's area is sent onto the style photo's, cheaply between regions that score
   high, so that a content region takes its look from the style regions of its kind *in
   proportion to their area*. Proportion matters: a yellow dahlia split into bright petals and
   a shaded heart, given a red rose split into lit petals, shade and black gaps, must end up with
   the rose's whole mix of colours, not the black gaps alone on its heart. The style marginal is
   soft (``relax``), so a style region that is like nothing in the content is left out (no sky
   from a cup), and only partners scoring within ``margin`` of a region's best are kept (a
   large sky in the content does not spill into the style's ground because the style's sky is
   small). A content region whose best score is below ``min_similarity`` takes the **whole
   style photo** (a global transfer: better than the look of another kind of thing).
   ``pairing="argmax"`` is the simpler rule: every style region gives its look to its most
   similar content region. Before any of this, the **pair** is judged: its *relatedness* is the
   content-area-weighted mean of each content region's best cosine similarity. Below
   ``min_relatedness`` the photos share no kind of thing the features recognise (a rocket at
   dusk and a coffee cup: 0.40), and any pairing would be a pairing of look-alikes that paints a
   patchwork of unrelated looks over one sky; the whole content photo then takes the whole style
   photo's look, as one label. The threshold sits below every one of the 45 DPST pairs (lowest
   0.44, Starry Night for a town) and above most of their unrelated cross pairs (a portrait
   styled by a mountain valley: 0.31; 23% of the 1,980 cross pairs fall below it, and those
   looked at were all unrelated).
3. **Labels.** The most alike labels are merged until at most ``max_labels`` are left
   (``"region-0"``, ``"region-1"``, ... by decreasing content area). A label's style mask weighs
   each style region by the share of it the label takes (scaled so that its largest is 1), so
   style masks are soft and may overlap; the losses and the colour start point weigh style
   pixels by them.

Every decision is recorded in a :class:`Pairing` (which style regions gave each label its look,
how similar, how confident): :meth:`RegionMatchSegmenter.segment_pair` leaves it in
``last_pairing``, and :meth:`Pairing.to_dict` is JSON-ready for reports.

Cost on a 2-core CPU: two VGG16 passes at 352 px, k-means on ~5,000 cells per photo and a
guided filter at up to ``refine_size`` px: a few seconds per pair.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from kornia.color import rgb_to_lab
from kornia.filters import guided_blur

from photostyle.masks import Segmentation
from photostyle.segmentation.base import Segmenter, check_image, register_segmenter

__all__ = [
    "Pairing",
    "RegionMatchSegmenter",
    "RegionPair",
    "cell_descriptors",
    "kmeans",
    "over_segment",
    "pair_regions",
    "refine_to_edges",
    "region_descriptors",
]

_EPS = 1e-9
#: layers clustered into regions (all resampled to the first one's grid)
REGION_LAYERS = ("conv3_3", "conv4_3", "conv5_3")
#: layer whose per-region mean describes what a region is
SEMANTIC_LAYER = "conv5_1"
ENCODER_LAYERS = ("conv3_3", "conv4_3", "conv5_1", "conv5_3")


@dataclass
class RegionPair:
    """Where one shared label of a content/style pair takes its look from.

    Attributes:
        label: the shared label (``"region-0"``, ...).
        content_fraction: fraction of the content photo the label covers.
        style_fraction: fraction of the style photo giving the look, each region weighed by the share
            of it the label takes (1.0 for ``"global"``).
        style_regions: indices of the style photo's regions (:attr:`Pairing.style_regions`) that
            give the look; empty for ``"global"``.
        content_regions: indices of the content photo's regions under this label.
        similarity: area-weighted mean cosine similarity of the paired regions' descriptors, in [-1, 1].
        confidence: in [0, 1]: how sure the pairing is that these style regions belong to this
            label rather than to another content region (mean softmax probability); 0 for ``"global"``.
        source: ``"matched"`` (paired by the transport plan, or chosen by style regions with
            ``pairing="argmax"``), ``"nearest"`` (``"argmax"``: no style region chose it; it took its most
            similar one) or ``"global"`` (no confident partner: the whole style photo).
    """

    label: str
    content_fraction: float
    style_fraction: float
    style_regions: list[int]
    content_regions: list[int]
    similarity: float
    confidence: float
    source: Literal["matched", "nearest", "global"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {"label": self.label, "content_fraction": round(self.content_fraction, 4),
                "style_fraction": round(self.style_fraction, 4), "style_regions": list(self.style_regions),
                "content_regions": list(self.content_regions), "similarity": round(self.similarity, 4),
                "confidence": round(self.confidence, 4), "source": self.source}


@dataclass
class Pairing:
    """The pairing of one content/style pair, label by label (same order as the segmentations).

    Attributes:
        pairs: one :class:`RegionPair` per shared label.
        content_regions: number of regions the content photo was split into.
        style_regions: number of regions the style photo was split into.
        unused_style: fraction of the style photo that gives its look to no label.
        relatedness: content-area-weighted mean of each content region's best cosine similarity to a
            style region, in [-1, 1]: how much the two photos show the same kinds of thing.
        note: the pair-level decision in words (empty when the regions were paired one by one).
    """

    pairs: list[RegionPair] = field(default_factory=list)
    content_regions: int = 0
    style_regions: int = 0
    unused_style: float = 0.0
    relatedness: float = 1.0
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view, for reports."""
        return {"method": "regmatch", "content_regions": self.content_regions, "style_regions": self.style_regions,
                "unused_style": round(self.unused_style, 4), "relatedness": round(self.relatedness, 4),
                "note": self.note, "pairs": [p.to_dict() for p in self.pairs]}

    def notes(self) -> list[str]:
        """:attr:`note` first if there is one, then one line per label, e.g.
        ``"region-0 (41% of content) <- 2 style regions (38% of style), confidence 0.93"``."""
        lines = [self.note] if self.note else []
        for p in self.pairs:
            if p.source == "global":
                lines.append(f"{p.label} ({p.content_fraction:.0%} of content) <- the whole style photo "
                             "(no confident partner)")
            else:
                lines.append(f"{p.label} ({p.content_fraction:.0%} of content) <- {len(p.style_regions)} style "
                             f"region(s) ({p.style_fraction:.0%} of style), similarity {p.similarity:.2f}, "
                             f"confidence {p.confidence:.2f}" + (" (nearest)" if p.source == "nearest" else ""))
        return lines


def _resize_long(image: torch.Tensor, size: int) -> torch.Tensor:
    height, width = image.shape[-2:]
    scale = size / max(height, width)
    if scale == 1:
        return image
    return F.interpolate(image, size=(max(16, round(height * scale)), max(16, round(width * scale))),
                         mode="bilinear", align_corners=False, antialias=scale < 1)


def _photo_norm(x: torch.Tensor, strength: float) -> torch.Tensor:
    """Each channel divided by its mean over the photo plus ``strength`` times the layer's mean."""
    return x / (x.mean(dim=(2, 3), keepdim=True) + strength * x.mean() + _EPS)


def kmeans(x: torch.Tensor, k: int, *, iterations: int = 30, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means with a seeded k-means++ start.

    Args:
        x: ``(N, D)`` points.
        k: clusters (at most ``N``).
        iterations: Lloyd rounds.
        seed: seed of the k-means++ draws, so the result is deterministic.

    Returns:
        ``(N,)`` cluster of each point and ``(N, k)`` squared distances to the centres.

    Example:
        >>> x = torch.cat([torch.zeros(5, 2), torch.ones(5, 2)])
        >>> assign, _ = kmeans(x, 2)
        >>> bool(assign[0] != assign[-1])
        True
    """
    x = x.contiguous()
    k = max(1, min(k, x.shape[0]))
    generator = torch.Generator().manual_seed(seed)  # on the CPU, whatever x's device: the same seeds everywhere
    xx = (x * x).sum(dim=1, keepdim=True)

    def sqdist(centres: torch.Tensor) -> torch.Tensor:
        return (xx - 2 * x @ centres.T + (centres * centres).sum(dim=1)[None]).clamp_min(0)

    chosen = [int(torch.randint(x.shape[0], (1,), generator=generator))]
    nearest = sqdist(x[chosen])[:, 0]
    for _ in range(1, k):
        if float(nearest.sum()) <= 0:
            break
        chosen.append(int(torch.multinomial((nearest / nearest.sum()).cpu(), 1, generator=generator)))
        nearest = torch.minimum(nearest, sqdist(x[chosen[-1:]])[:, 0])
    centres = x[chosen].clone()
    for _ in range(iterations):
        assign = sqdist(centres).argmin(dim=1)
        onehot = F.one_hot(assign, centres.shape[0]).to(x.dtype)
        count = onehot.sum(dim=0)
        centres = torch.where(count[:, None] > 0, onehot.T @ x / count.clamp_min(1)[:, None], centres)
    dist = sqdist(centres)
    return dist.argmin(dim=1), dist


def _cell_features(feats: dict[str, torch.Tensor], image: torch.Tensor, colour: float, position: float,
                   norm: float) -> tuple[torch.Tensor, tuple[int, int]]:
    """``(N, D)`` features of the cells of the first region layer's grid, and that grid."""
    grid = tuple(feats[REGION_LAYERS[0]].shape[-2:])
    blocks = []
    for name in REGION_LAYERS:
        x = feats[name].float()
        if tuple(x.shape[-2:]) != grid:
            x = F.interpolate(x, size=grid, mode="bilinear", align_corners=False)
        blocks.append(F.normalize(_photo_norm(x, norm), dim=1))
    if colour > 0:
        lab = rgb_to_lab(F.adaptive_avg_pool2d(image.float().clamp(0, 1), grid))
        lab = lab / torch.tensor([100.0, 128.0, 128.0], device=lab.device).view(1, 3, 1, 1)
        spread = (lab - lab.mean(dim=(2, 3), keepdim=True)).norm(dim=1).mean().clamp_min(1e-3)
        blocks.append(colour * lab / spread)  # the photo's colour contrast scaled to about 1
    if position > 0:
        h, w = grid
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, h, device=image.device),
                                torch.linspace(-1, 1, w, device=image.device), indexing="ij")
        long = max(h, w)
        blocks.append(position * torch.stack([yy * h / long, xx * w / long])[None])
    return torch.cat(blocks, dim=1)[0].flatten(1).T, grid  # type: ignore[return-value]


def over_segment(
    image: torch.Tensor,
    feats: dict[str, torch.Tensor],
    *,
    regions: int = 16,
    colour: float = 1.0,
    position: float = 1.0,
    norm: float = 1.0,
    radius: float = 0.02,
    eps: float = 1e-3,
    refine_size: int = 512,
    seed: int = 0,
) -> torch.Tensor:
    """Split one photo into at most ``regions`` regions (see the module docstring, step 1).

    Args:
        image: ``(1, 3, H, W)`` RGB in [0, 1].
        feats: the photo's :data:`REGION_LAYERS` from a VGG16 encoder.
        regions: k of k-means.
        colour: weight of the Lab colour block (0 = features and position only).
        position: weight of the cell position block.
        norm: per-photo channel normalisation strength (see ``_photo_norm``).
        radius: guided-filter radius as a fraction of the refinement long side (0 = none).
        eps: guided-filter regularisation.
        refine_size: long side in px at which the memberships are refined (then upsampled).
        seed: k-means start.

    Returns:
        Hard masks ``(1, K, H, W)``, ``K <= regions``, no empty region, partitioning the photo.
    """
    x, grid = _cell_features(feats, image, colour, position, norm)
    assign, dist = kmeans(x, regions, seed=seed)
    used = torch.unique(assign)
    dist = dist[:, used]
    # soft memberships: a temperature of a tenth of the mean distance to the nearest centre
    temperature = 0.1 * dist.min(dim=1).values.mean().clamp_min(_EPS)
    act = torch.softmax(-dist / temperature, dim=1).T.reshape(1, -1, *grid)
    masks = refine_to_edges(act, image, radius=radius, eps=eps, refine_size=refine_size)
    return masks[:, masks.sum(dim=(0, 2, 3)) > 0]


def refine_to_edges(
    act: torch.Tensor, image: torch.Tensor, *, radius: float = 0.02, eps: float = 1e-3, refine_size: int = 512
) -> torch.Tensor:
    """Coarse soft memberships -> hard masks at the photo's size that follow its edges.

    The memberships are upsampled to ``refine_size`` px (long side), smoothed by a guided filter with the
    photo as guide (He et al. 2010), upsampled to the photo's size, and each pixel takes its strongest one.

    Args:
        act: ``(1, K, h, w)`` soft memberships on any coarse grid of the photo.
        image: ``(1, 3, H, W)`` RGB in [0, 1], the guide.
        radius: guided-filter radius as a fraction of the refinement long side (0 = none).
        eps: guided-filter regularisation.
        refine_size: long side in px of the refinement.

    Returns:
        Hard masks ``(1, K, H, W)`` partitioning the photo, in the order of ``act`` (some may be empty).
    """
    guide = _resize_long(image.float(), min(refine_size, max(image.shape[-2:])))
    act = F.interpolate(act, size=guide.shape[-2:], mode="bilinear", align_corners=False)
    r = round(radius * max(guide.shape[-2:]))
    if r > 0:
        act = guided_blur(guide, act, 2 * r + 1, eps, subsample=max(1, r // 4))
    if tuple(act.shape[-2:]) != tuple(image.shape[-2:]):
        act = F.interpolate(act, size=image.shape[-2:], mode="bilinear", align_corners=False)
    index = act.argmax(dim=1)
    return (index[:, None] == torch.arange(act.shape[1], device=index.device).view(1, -1, 1, 1)).float()


def cell_descriptors(feature: torch.Tensor, norm: float = 3.0) -> torch.Tensor:
    """``(1, C, h, w)``: each cell of a feature map normalised per photo (see ``_photo_norm``), then to unit length.

    The cell-level counterpart of :func:`region_descriptors`: a cell's cosine similarity to a region's
    descriptor is a dot product.
    """
    return F.normalize(_photo_norm(feature.float(), norm), dim=1)


def region_descriptors(masks: torch.Tensor, feature: torch.Tensor, norm: float = 3.0) -> torch.Tensor:
    """``(K, C)`` unit-length per-region means of a per-photo-normalised feature map.

    Args:
        masks: ``(1, K, H, W)`` in [0, 1], any size (area-averaged to the feature grid).
        feature: ``(1, C, h, w)`` non-negative features of the same photo.
        norm: strength of the per-photo normalisation (see ``_photo_norm``).
    """
    x = _photo_norm(feature.float(), norm)
    m = F.adaptive_avg_pool2d(masks.float(), x.shape[-2:])[0].flatten(1)  # (K, hw)
    mean = m @ x[0].flatten(1).T / m.sum(dim=1, keepdim=True).clamp_min(_EPS)
    return F.normalize(mean, dim=1)


def _heights(masks: torch.Tensor) -> torch.Tensor:
    """``(K,)`` mean height of each mask, 0 at the top of the photo and 1 at the bottom."""
    h = masks.shape[-2]
    yy = torch.linspace(0, 1, h, device=masks.device).view(1, 1, h, 1)
    return ((masks * yy).sum(dim=(2, 3)) / masks.sum(dim=(2, 3)).clamp_min(_EPS))[0]


def transport_plan(
    score: torch.Tensor,
    area_c: torch.Tensor,
    area_s: torch.Tensor,
    *,
    epsilon: float = 0.05,
    relax: float = 0.1,
    iterations: int = 200,
) -> torch.Tensor:
    """Entropic optimal transport of the content regions' area onto the style regions' area.

    Every content region sends all its area (a hard marginal); a style region receives about its
    own area, with a Kullback-Leibler penalty of weight ``relax`` on the difference (a soft
    marginal: a style region like no content region may go unused, one like many may serve
    more). The cost of sending area from content region ``i`` to style region ``j`` is
    ``1 - score[i, j]``. ``relax = 0`` gives each content region the area-weighted softmax of its
    scores; ``relax -> inf`` the balanced plan, where the look of each style region is spent in
    proportion to its area.

    Args:
        score: ``(Kc, Ks)`` pairing scores (cosine similarity, layout term subtracted).
        area_c: ``(Kc,)`` content region areas, summing to 1.
        area_s: ``(Ks,)`` style region areas, summing to 1.
        epsilon: entropic regularisation, in units of the cost (smaller: closer to one partner).
        relax: weight of the style marginal's penalty.
        iterations: Sinkhorn rounds.

    Returns:
        ``(Kc, Ks)`` plan ``P >= 0`` with ``P.sum(1) == area_c``.

    Example:
        >>> score = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> plan = transport_plan(score, torch.tensor([0.5, 0.5]), torch.tensor([0.5, 0.5]), epsilon=0.01)
        >>> [round(v, 3) for v in plan.flatten().tolist()]
        [0.5, 0.0, 0.0, 0.5]
    """
    log_a, log_b = area_c.double().clamp_min(_EPS).log(), area_s.double().clamp_min(_EPS).log()
    log_k = (score.double() - 1) / epsilon + log_b[None]  # (Kc, Ks)
    log_v = torch.zeros_like(log_b)
    power = relax / (relax + epsilon)
    for _ in range(iterations if relax > 0 else 0):
        log_u = log_a - torch.logsumexp(log_k + log_v[None], dim=1)
        log_v = power * (log_b - torch.logsumexp(log_k + log_u[:, None], dim=0))
    return (torch.softmax(log_k + log_v[None], dim=1) * area_c.double()[:, None]).float()


def pair_regions(
    content_masks: torch.Tensor,
    style_masks: torch.Tensor,
    content_desc: torch.Tensor,
    style_desc: torch.Tensor,
    *,
    method: Literal["transport", "argmax"] = "transport",
    layout: float = 0.0,
    min_similarity: float = 0.3,
    min_relatedness: float = 0.42,
    epsilon: float = 0.02,
    relax: float = 0.1,
    margin: float = 0.1,
    min_share: float = 0.05,
    temperature: float = 0.05,
    max_labels: int = 8,
    prefix: str = "region",
) -> tuple[Segmentation, Segmentation, Pairing]:
    """Pair the regions of a content and a style photo (see the module docstring, steps 2 and 3).

    Args:
        content_masks: ``(1, Kc, H, W)`` hard regions of the content photo.
        style_masks: ``(1, Ks, H', W')`` hard regions of the style photo.
        content_desc: ``(Kc, C)`` unit-length descriptors (:func:`region_descriptors`).
        style_desc: ``(Ks, C)``.
        method: ``"transport"``: each content region takes a share of the style regions by a
            :func:`transport_plan` (with ``epsilon`` and ``relax``), among those scoring within
            ``margin`` of its best and holding at least ``min_share`` of its look; style masks are soft
            (a style region's weight is the share of it the label takes). ``"argmax"``: each style region
            gives its look to its most similar content region; hard style masks.
        layout: weight of the height difference subtracted from the cosine similarity.
        min_similarity: a content region whose best score is below it takes the whole style photo; for
            ``"argmax"`` a style region gives its look to no content region below it.
        min_relatedness: below this relatedness (see :class:`Pairing`) the photos are judged to share
            nothing: one label, the whole content photo taking the whole style photo's look.
        epsilon, relax: of :func:`transport_plan`.
        margin: ``"transport"`` only: partners score at least the best score minus this.
        min_share: ``"transport"`` only: smaller shares of a content region's look are dropped.
        temperature: of the softmax that turns similarities into confidences.
        max_labels: at most this many labels: the most alike labels (content and style
            descriptors both) are merged until so.
        prefix: labels are ``f"{prefix}-{n}"``.

    Returns:
        Content and style segmentations with the same labels (a partition of the content; style
        masks in [0, 1] that may overlap) and the :class:`Pairing`.
    """
    kc, ks = content_masks.shape[1], style_masks.shape[1]
    area_c = content_masks.float().mean(dim=(0, 2, 3))
    area_s = style_masks.float().mean(dim=(0, 2, 3))
    sim = content_desc @ style_desc.T  # (Kc, Ks)
    score = sim - layout * (_heights(content_masks)[:, None] - _heights(style_masks)[None]).abs()
    best = score.max(dim=1).values if ks else score.new_full((kc,), -1.0)
    relatedness = float((sim.max(dim=1).values * area_c).sum() / area_c.sum().clamp_min(_EPS)) if ks else -1.0
    note = ""
    # each content region's share of every style region (None: the whole style photo), and how it was found
    groups: list[tuple[list[int], torch.Tensor | None, str]] = []
    if relatedness < min_relatedness:
        note = (f"the photos share no recognisable kind of thing (relatedness {relatedness:.2f} < "
                f"{min_relatedness:.2f}): the whole photo takes the whole style photo's look")
        groups.append((list(range(kc)), None, "global"))
    elif method == "transport":
        a, b = area_c / area_c.sum(), area_s / area_s.sum()
        plan = transport_plan(score, a, b, epsilon=epsilon, relax=relax)
        look = plan / plan.sum(dim=1, keepdim=True).clamp_min(_EPS)  # (Kc, Ks): where each region's look comes from
        keep = (look >= min_share) & (score >= best[:, None] - margin)
        shares = plan * keep / b.clamp_min(_EPS)[None]  # (Kc, Ks): the share of each style region taken
        for i in range(kc):
            groups.append(([i], None, "global") if float(best[i]) < min_similarity or not bool(shares[i].any())
                          else ([i], shares[i].clamp(max=1), "matched"))
    elif method == "argmax":
        owner = score.argmax(dim=0)  # style region -> content region
        owner[score.max(dim=0).values < min_similarity] = -1  # a style region like no content region gives none
        for i in range(kc):
            if bool((owner == i).any()):
                groups.append(([i], (owner == i).float(), "matched"))
            elif float(best[i]) >= min_similarity:
                groups.append(([i], F.one_hot(score[i].argmax(), ks).float(), "nearest"))
            else:
                groups.append(([i], None, "global"))
    else:
        raise ValueError(f"unknown pairing method {method!r}; expected 'transport' or 'argmax'")
    groups = _merge_labels(groups, content_desc, style_desc, area_c, area_s, max_labels)
    ordered = sorted(groups, key=lambda g: -float(area_c[g[0]].sum()))
    labels = [f"{prefix}-{n}" for n in range(len(ordered))]
    prob = torch.softmax(score / temperature, dim=0)  # (Kc, Ks): which content region a style region belongs to
    content_out, style_out, pairs = [], [], []
    used = area_s.new_zeros(ks)
    for label, (members, share, source) in zip(labels, ordered):
        content_out.append(content_masks[0, members].sum(dim=0).clamp(0, 1))
        if share is None:
            style_out.append(style_masks.new_ones(style_masks.shape[-2:]))
            pairs.append(RegionPair(label, float(area_c[members].sum()), 1.0, [], members,
                                    float(best[members].max()), 0.0, "global"))
            continue
        weight = share / share.max().clamp_min(_EPS)
        used = torch.maximum(used, share)
        style_out.append((style_masks[0].float() * weight[:, None, None]).sum(dim=0).clamp(0, 1))
        ids = [int(j) for j in share.nonzero().flatten()]
        mass = share[ids] * area_s[ids]
        pair_weight = area_c[members][:, None] * mass[None]
        similarity = float((sim[members][:, ids] * pair_weight).sum() / pair_weight.sum().clamp_min(_EPS))
        confidence = float((prob[members][:, ids].sum(dim=0) * mass).sum() / mass.sum().clamp_min(_EPS))
        pairs.append(RegionPair(label, float(area_c[members].sum()), float(mass.sum()), ids, members,
                                similarity, confidence, source))  # type: ignore[arg-type]
    unused = float(((1 - used).clamp_min(0) * area_s).sum()) if ks else 0.0
    pairing = Pairing(pairs, kc, ks, unused, relatedness, note)
    content_seg = Segmentation(torch.stack(content_out)[None], labels)
    style_seg = Segmentation(torch.stack(style_out)[None], list(labels))
    return content_seg, style_seg, pairing


def _merge_labels(
    groups: list[tuple[list[int], torch.Tensor | None, str]],
    content_desc: torch.Tensor,
    style_desc: torch.Tensor,
    area_c: torch.Tensor,
    area_s: torch.Tensor,
    max_labels: int,
) -> list[tuple[list[int], torch.Tensor | None, str]]:
    """Merge the two most alike labels until at most ``max_labels`` are left.

    Two labels are alike when their content regions are (cosine of the area-weighted mean
    descriptors) and their style partners are (weighted by the share taken; the whole style photo
    for a global label): the sum of both similarities is used. A merged label takes both labels'
    shares (added, at most all of a region); a global label merged with a paired one takes the
    paired one's.
    """

    def mean(desc: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.normalize((desc * weight[:, None]).sum(dim=0), dim=0)

    while len(groups) > max(1, max_labels):
        dc = torch.stack([mean(content_desc[g[0]], area_c[g[0]]) for g in groups])
        ds = (torch.stack([mean(style_desc, area_s if g[1] is None else area_s * g[1]) for g in groups])
              if style_desc.shape[0] else dc)
        joint = dc @ dc.T + ds @ ds.T
        joint.fill_diagonal_(-float("inf"))
        a, b = divmod(int(joint.argmax()), len(groups))
        (ca, sa, xa), (cb, sb, xb) = groups[a], groups[b]
        share = sa if sb is None else sb if sa is None else (sa + sb).clamp(max=1)
        source = "global" if share is None else ("matched" if "matched" in (xa, xb) else "nearest")
        groups = [g for n, g in enumerate(groups) if n not in (a, b)] + [(ca + cb, share, source)]
    return groups


@register_segmenter("regmatch")
class RegionMatchSegmenter(Segmenter):
    """Segment each photo alone into regions, then pair the regions by meaning (see the module docstring).

    Args:
        regions: regions per photo (k of k-means) before pairing.
        size: long side in px at which VGG16 features are computed.
        colour: weight of the Lab colour in the region features.
        position: weight of the cell position in the region features.
        layout: weight of the height difference in the pairing score.
        min_similarity: below it a content region gets the whole style photo (see :func:`pair_regions`).
        min_relatedness: below it the whole content photo gets the whole style photo (see :func:`pair_regions`).
        max_labels: at most this many shared labels (the most alike are merged).
        pairing: ``"transport"`` (default) or ``"argmax"``: how regions are paired (:func:`pair_regions`).
        epsilon, relax: of the :func:`transport_plan`.
        margin, min_share: which style regions may give a content region its look (:func:`pair_regions`).
        semantic_norm: per-photo normalisation strength of the pairing descriptors.
        radius, eps: guided-filter refinement (radius as a fraction of ``refine_size``).
        refine_size: long side in px of the refinement.
        weights: VGG16 weights for :func:`photostyle.features.get_encoder` (``None`` = random,
            for tests of the contract only).
        device: where features are computed (``None``: the photos' device).
        seed: k-means start.

    Attributes:
        last_pairing: the :class:`Pairing` of the latest :meth:`segment_pair` (``None`` before).

    Raises:
        WeightsError: the VGG16 weights are missing (on the first segmentation).

    Example:
        >>> seg = RegionMatchSegmenter()  # doctest: +SKIP
        >>> content_seg, style_seg = seg.segment_pair(content, style)  # doctest: +SKIP
        >>> seg.last_pairing.notes()[0]  # doctest: +SKIP
        'region-0 (52% of content) <- 3 style region(s) (47% of style), similarity 0.81, confidence 0.97'
    """

    labelled = False

    def __init__(
        self,
        *,
        regions: int = 16,
        size: int = 352,
        colour: float = 1.0,
        position: float = 1.0,
        layout: float = 0.0,
        min_similarity: float = 0.3,
        min_relatedness: float = 0.42,
        max_labels: int = 8,
        pairing: Literal["transport", "argmax"] = "transport",
        epsilon: float = 0.02,
        relax: float = 0.1,
        margin: float = 0.1,
        min_share: float = 0.05,
        semantic_norm: float = 3.0,
        radius: float = 0.02,
        eps: float = 1e-3,
        refine_size: int = 512,
        weights: str | None = "default",
        device: str | torch.device | None = None,
        seed: int = 0,
    ) -> None:
        self.regions, self.size, self.colour, self.position = regions, size, colour, position
        self.layout, self.min_similarity, self.semantic_norm = layout, min_similarity, semantic_norm
        self.min_relatedness = min_relatedness
        self.max_labels, self.pairing, self.epsilon, self.relax = max_labels, pairing, epsilon, relax
        self.margin, self.min_share = margin, min_share
        self.radius, self.eps, self.refine_size = radius, eps, refine_size
        self.weights, self.device, self.seed = weights, device, seed
        self.last_pairing: Pairing | None = None

    def _encoder(self, device: torch.device) -> torch.nn.Module:
        from photostyle.features import get_encoder

        return get_encoder("vgg16", self.weights, ENCODER_LAYERS, "max", str(device))

    def _regions(self, image: torch.Tensor, encoder: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """Hard regions ``(1, K, H, W)`` of one photo and their descriptors ``(K, C)``."""
        feats = encoder(_resize_long(image.float(), self.size))
        masks = over_segment(image, feats, regions=self.regions, colour=self.colour, position=self.position,
                             radius=self.radius, eps=self.eps, refine_size=self.refine_size, seed=self.seed)
        return masks, region_descriptors(masks, feats[SEMANTIC_LAYER], self.semantic_norm)

    @torch.no_grad()
    def segment(self, image: torch.Tensor) -> Segmentation:
        """One photo's regions: ``(1, 3, H, W)`` in [0, 1] -> hard masks ``(1, K, H, W)``, labels ``region-N``."""
        check_image(image)
        device = torch.device(self.device) if self.device is not None else image.device
        masks, _ = self._regions(image.to(device), self._encoder(device))
        order = masks.sum(dim=(0, 2, 3)).argsort(descending=True)
        return Segmentation(masks[:, order], [f"region-{n}" for n in range(masks.shape[1])])

    @torch.no_grad()
    def segment_pair(self, content: torch.Tensor, style: torch.Tensor) -> tuple[Segmentation, Segmentation]:
        """Segment both photos and pair their regions.

        Returns:
            Content masks ``(1, K, H, W)`` (a partition) and style masks ``(1, K, H', W')`` (may
            overlap) with the same labels in the same order; the pairing is in :attr:`last_pairing`.
        """
        check_image(content)
        check_image(style)
        device = torch.device(self.device) if self.device is not None else content.device
        encoder = self._encoder(device)
        masks_c, desc_c = self._regions(content.to(device), encoder)
        masks_s, desc_s = self._regions(style.to(device), encoder)
        content_seg, style_seg, self.last_pairing = pair_regions(
            masks_c, masks_s, desc_c, desc_s, method=self.pairing, layout=self.layout,
            min_similarity=self.min_similarity, min_relatedness=self.min_relatedness, epsilon=self.epsilon,
            relax=self.relax, margin=self.margin,
            min_share=self.min_share, max_labels=self.max_labels,
        )
        return content_seg, style_seg
