"""Agreement of an automatic segmentation with a pair's hand-made masks (issue 13).

An automatic segmenter returns, for a content and a style photo, regions with the same labels
in both (label ``k`` of the style photo is where content region ``k`` takes its look from). The
hand masks of the DPST benchmark say the same with colours. The agreement is measured so that
both the regions *and* their pairing count:

1. each automatic label ``k`` is mapped to the hand label ``h(k)`` it overlaps most **in the
   content photo**;
2. the same mapping is applied to the style photo: the predicted hand segment ``h`` of either
   photo is the union of the automatic regions ``k`` with ``h(k) = h``;
3. per photo, the IoU of each hand segment with its prediction is averaged over the hand
   segments (pixels no hand colour covers are ignored).

So the content IoU says how well the regions follow the hand segments, and the style IoU also
whether each region found the right partner: a sky paired with the style's cup scores 0 there.
Hand masks are matched with :func:`photostyle.masks.match_segmentations`, so a hand segment
found only in the content photo has the whole style photo as its style segment.

Three further numbers per pair:

* ``cross``: the fraction of the content photo's hand-labelled pixels that lie in automatic
  regions taking their look from a style region of *another* kind: the region's largest hand
  label in the style photo is not its hand label ``h(k)`` in the content -- "sky from a cup"
  (a region whose style mask is the whole style photo, a global transfer, is not counted; nor is a
  hand segment of the content only, whose hand style segment is the whole style photo);
* ``colour``: how far the colours a user gets are from the hand pairing's, in the benchmark's own
  unit (:func:`start_colour`): each automatic content region is given the colour distribution of
  its style regions (the transfer's start point, :func:`photostyle.colour.segment_colour_transfer`),
  and the result is scored like the benchmark's Lab column, with the *hand* masks. Beside it,
  ``hand_colour`` is the same with the hand masks as the segments: the floor an automatic
  segmenter is measured against. It takes about 1 s per pair instead of the benchmark's minute and
  follows the benchmark's Lab column (45 DPST pairs, 2-core CPU: start point 9.3 automatic, 3.0
  hand, 16.8 one segment; full transfer 9.6, 4.6, 16.4), so pairings can be compared in minutes;
* ``seconds``: the wall time of the segmenter's ``segment_pair`` on the full-size photos.

``--bound`` asks how far pairing by VGG16 features can go at all (:func:`features_label_style`): the
content photo gets its *hand* masks, a perfect segmentation, and each cell of the style photo takes
the hand segment whose mean ``conv5_1`` descriptor (per-photo normalised, as
:mod:`~photostyle.segmentation.regmatch` pairs regions) is most like its own, refined to the style
photo's edges. Every automatic segmenter built on these features pairs with less to go on, so its
style IoU and colour are not expected to beat these.

Command line (evaluation only; nothing is written)::

    python -m photostyle.bench.segments --pairs ../shared/benchmark/dpst [--ids 1 5] [--segmenter NAME]
        [--set KEY=VALUE ...] [--bound]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from photostyle.bench.metrics import segment_colour_distance
from photostyle.colour import segment_colour_transfer
from photostyle.io import load_image, resize_long_side
from photostyle.masks import Segmentation, load_mask_pair
from photostyle.segmentation.names import held_pixels

__all__ = ["PairAgreement", "evaluate_pairs", "features_label_style", "main", "segment_agreement", "start_colour"]


@dataclass
class PairAgreement:
    """Agreement of one pair's automatic segmentation with its hand masks.

    Attributes:
        id: pair id.
        content_iou: mean IoU over the content photo's hand segments.
        style_iou: mean IoU over the same hand segments in the style photo.
        cross: fraction of hand-labelled content pixels in automatic regions that take their look
            from a style region of another kind.
        regions: number of automatic labels.
        colour: Lab distance to the style of the start point the automatic segments give, scored
            with the hand masks (:func:`start_colour`; ``nan`` when not measured).
        hand_colour: the same with the hand masks as the segments.
        seconds: wall time of ``segment_pair``.
        mapping: automatic label -> hand label (by largest overlap in the content photo).
        per_segment: hand label -> ``(content IoU, style IoU)``.
    """

    id: str
    content_iou: float
    style_iou: float
    cross: float
    regions: int
    colour: float = math.nan
    hand_colour: float = math.nan
    seconds: float = math.nan
    mapping: dict[str, str] = field(default_factory=dict)
    per_segment: dict[str, tuple[float, float]] = field(default_factory=dict)


def _content_only(hand_style: Segmentation) -> torch.Tensor:
    """``(K,)`` bool: the hand segments found in the content only, to which
    :func:`~photostyle.masks.match_segmentations` gives the whole style photo (an all-ones style mask)."""
    return (hand_style.masks[0] > 0.5).flatten(1).all(dim=1)


def _members(seg: Segmentation, size: tuple[int, int], valid: torch.Tensor) -> torch.Tensor:
    """``(K, H, W)`` bool: pixels each label holds (:func:`~photostyle.segmentation.names.held_pixels`) within ``valid``."""
    return held_pixels(seg, *size) & valid


def segment_agreement(
    auto_content: Segmentation, auto_style: Segmentation, hand_content: Segmentation, hand_style: Segmentation
) -> PairAgreement:
    """Content IoU, style IoU and cross-kind fraction of automatic segments against hand masks.

    Args:
        auto_content: automatic segmentation of the content photo (any size; resized to the hand mask's).
        auto_style: of the style photo, with the same labels in the same order.
        hand_content: hand masks of the content photo, matched to ``hand_style`` (same labels).
        hand_style: hand masks of the style photo; may overlap (a content-only segment is the whole photo).

    Returns:
        :class:`PairAgreement` with ``id=""`` and no time.
    """
    if list(auto_content.labels) != list(auto_style.labels):
        raise ValueError(f"automatic labels differ: {auto_content.labels} vs {auto_style.labels}")
    if list(hand_content.labels) != list(hand_style.labels):
        raise ValueError(f"hand labels differ: {hand_content.labels} vs {hand_style.labels}")
    k_auto, k_hand = len(auto_content.labels), len(hand_content.labels)
    hc = hand_content.masks[0].float().cpu() > 0.5  # (Kh, H, W)
    hs = hand_style.masks[0].float().cpu() > 0.5
    onehot_c = _members(auto_content, hand_content.size, hc.any(dim=0))  # (Ka, H, W)
    onehot_s = _members(auto_style, hand_style.size, hs.any(dim=0))
    overlap_c = torch.einsum("ahw,bhw->ab", onehot_c.float(), hc.float())  # (Ka, Kh)
    overlap_s = torch.einsum("ahw,bhw->ab", onehot_s.float(), hs.float())
    target = overlap_c.argmax(dim=1) if k_auto else torch.zeros(0, dtype=torch.long)  # automatic -> hand label
    mapping = {auto_content.labels[k]: hand_content.labels[int(target[k])] for k in range(k_auto)}
    per_segment = {}
    for h in range(k_hand):
        ious = []
        for onehot, hand in ((onehot_c, hc), (onehot_s, hs)):
            pred = onehot[target == h].any(dim=0) if bool((target == h).any()) else torch.zeros_like(hand[h])
            union = float((pred | hand[h]).sum())
            ious.append(float((pred & hand[h]).sum()) / union if union else 1.0)
        per_segment[hand_content.labels[h]] = (ious[0], ious[1])
    # cross-kind: automatic regions whose style region is mostly of another hand label than the
    # content region's own (ties count as right). A hand segment found in the content only has the
    # whole style photo as its style segment: it is no kind of the style photo, and any look is right for it.
    wrong = 0.0
    style_valid = max(float(hs.any(dim=0).sum()), 1.0)
    whole = _content_only(hand_style).cpu()
    kinds = overlap_s.masked_fill(whole[None], -1.0)
    for k in range(k_auto):
        if float(onehot_s[k].sum()) >= 0.9 * style_valid or bool(whole[target[k]]):  # a global transfer
            continue
        if float(overlap_s[k].sum()) > 0 and kinds[k, target[k]] < kinds[k].max():
            wrong += float(onehot_c[k].sum())
    total = max(float(hc.any(dim=0).sum()), 1.0)
    return PairAgreement(
        id="",
        content_iou=sum(v[0] for v in per_segment.values()) / max(k_hand, 1),
        style_iou=sum(v[1] for v in per_segment.values()) / max(k_hand, 1),
        cross=wrong / total,
        regions=k_auto,
        mapping=mapping,
        per_segment=per_segment,
    )


def start_colour(
    content: torch.Tensor,
    style: torch.Tensor,
    segments: tuple[Segmentation, Segmentation],
    hand: tuple[Segmentation, Segmentation],
    side: int = 400,
) -> float:
    """Lab distance to the style photo of the colour start point ``segments`` give, scored with ``hand``.

    Each content segment gets the colour distribution of its style segment (sliced transport,
    :func:`photostyle.colour.segment_colour_transfer`); the result is scored as the benchmark's
    Lab column (:func:`photostyle.bench.metrics.segment_colour_distance`) with the hand masks.

    Args:
        content: ``(1, 3, H, W)`` RGB in [0, 1].
        style: ``(1, 3, H', W')`` RGB in [0, 1].
        segments: content and style segmentation to transfer with (same labels; any size).
        hand: content and style hand masks to score with (same labels; any size).
        side: both photos are shrunk to at most this long side first (the score is a mean over pixels).

    Returns:
        Lab units (L 0..100), >= 0; lower is closer to the style the hand masks ask for.
    """
    content, style = (resize_long_side(x, min(side, max(x.shape[-2:]))) for x in (content, style))
    (seg_c, seg_s), (hand_c, hand_s) = segments, hand
    seg_c, hand_c = seg_c.resize(*content.shape[-2:]), hand_c.resize(*content.shape[-2:])
    seg_s, hand_s = seg_s.resize(*style.shape[-2:]), hand_s.resize(*style.shape[-2:])
    start = segment_colour_transfer(content, style, seg_c.masks.float(), seg_s.masks.float(), method="distribution")
    return float(segment_colour_distance(start, style, hand_c.masks.float(), hand_s.masks.float()))


@torch.no_grad()
def features_label_style(
    content: torch.Tensor,
    style: torch.Tensor,
    hand_content: Segmentation,
    hand_style: Segmentation,
    *,
    weights: str | None = "default",
    size: int = 352,
    temperature: float = 0.05,
) -> Segmentation:
    """The style photo's segments as VGG16 features give them when the content's hand masks are known.

    Each hand segment of the content is described by :func:`~photostyle.segmentation.regmatch.region_descriptors`
    of ``conv5_1`` (long side ``size`` px); each ``conv5_1`` cell of the style photo by
    :func:`~photostyle.segmentation.regmatch.cell_descriptors`. A cell's memberships are the softmax of its
    cosine similarities over ``temperature``, refined to the style photo's edges
    (:func:`~photostyle.segmentation.regmatch.refine_to_edges`). A hand segment found in the content only
    (its style mask is the whole photo) keeps the whole style photo and takes no cell.

    Args:
        content: ``(1, 3, H, W)`` RGB in [0, 1].
        style: ``(1, 3, H', W')`` RGB in [0, 1].
        hand_content: the content's hand masks (any size).
        hand_style: the style's hand masks, matched to ``hand_content`` (same labels); only which of them
            cover the whole photo is used.
        weights: VGG16 weights (``None``: random, for tests of the contract only).
        size: long side in px at which features are computed.
        temperature: of the softmax over similarities.

    Returns:
        The style photo's segmentation with ``hand_content``'s labels: hard masks ``(1, K, H', W')``.
    """
    from photostyle.features import get_encoder
    from photostyle.segmentation.regmatch import (
        SEMANTIC_LAYER,
        cell_descriptors,
        refine_to_edges,
        region_descriptors,
    )

    encoder = get_encoder("vgg16", weights, (SEMANTIC_LAYER,), "max", str(style.device))
    feat_c = encoder(resize_long_side(content, size))[SEMANTIC_LAYER]
    feat_s = encoder(resize_long_side(style, size))[SEMANTIC_LAYER]
    whole = _content_only(hand_style).to(style.device)
    prototypes = region_descriptors(hand_content.masks.to(style.device), feat_c)  # (K, C)
    score = torch.einsum("kc,chw->khw", prototypes, cell_descriptors(feat_s)[0])
    score[whole] = -float("inf")
    masks = refine_to_edges(torch.softmax(score / temperature, dim=0)[None], style)
    masks[:, whole] = 1.0
    return Segmentation(masks, list(hand_content.labels))


def evaluate_pairs(
    pairs_dir: str | Path,
    ids: Sequence[str] | None = None,
    segmenter: str | object = "auto",
    *,
    device: str = "cpu",
    colour: bool = True,
    bound: bool = False,
) -> list[PairAgreement]:
    """Run ``segmenter`` on the pairs of a DPST-layout folder and score each against its hand masks.

    Args:
        pairs_dir: folder with ``input/``, ``style/`` and ``segmentation/`` (pairs without masks are skipped).
        ids: pair ids (default all).
        segmenter: ``"auto"`` (:func:`~photostyle.segmentation.auto.choose_segmenter`), a registry name,
            or a :class:`~photostyle.segmentation.Segmenter`.
        device: where the photos are put before segmenting.
        colour: also measure :attr:`PairAgreement.colour` and ``hand_colour`` (about 1 s per pair).
        bound: instead of ``segmenter``, the content's hand masks and the style labelled by
            :func:`features_label_style`: what pairing by VGG16 features reaches with a perfect content
            segmentation.

    Returns:
        One :class:`PairAgreement` per pair with masks, in folder order.
    """
    from photostyle.bench.runner import discover_pairs, select_pairs
    from photostyle.segmentation.auto import choose_segmenter

    backend = None if bound else choose_segmenter(segmenter)[0]  # type: ignore[arg-type]
    results = []
    for pair in select_pairs(discover_pairs(pairs_dir), ids):
        if pair.content_mask is None or pair.style_mask is None:
            continue
        content = load_image(pair.content).tensor.to(device)
        style = load_image(pair.style).tensor.to(device)
        with warnings.catch_warnings():  # a mask one pixel off its photo's size (pair 7) is resized
            warnings.simplefilter("ignore")
            hand_c, hand_s, _ = load_mask_pair(pair.content_mask, pair.style_mask, tuple(content.shape[-2:]),
                                               tuple(style.shape[-2:]))
        start = time.perf_counter()
        if bound:
            auto_c, auto_s = hand_c, features_label_style(content, style, hand_c, hand_s)
        else:
            auto_c, auto_s = backend.segment_pair(content, style)  # type: ignore[union-attr]
        seconds = time.perf_counter() - start
        result = segment_agreement(auto_c, auto_s, hand_c, hand_s)
        result.id, result.seconds = pair.id, seconds
        if colour:
            content, style = content.cpu(), style.cpu()
            result.colour = start_colour(content, style, (auto_c.to("cpu"), auto_s.to("cpu")), (hand_c, hand_s))
            result.hand_colour = start_colour(content, style, (hand_c, hand_s), (hand_c, hand_s))
        results.append(result)
    return results


def _table(results: Sequence[PairAgreement], worst: int = 5) -> str:
    lines = [f"{'pair':>6} {'content':>8} {'style':>8} {'cross':>6} {'colour':>7} {'hand':>6} {'regions':>7} {'s':>6}"]
    for r in results:
        lines.append(f"{r.id:>6} {r.content_iou:8.3f} {r.style_iou:8.3f} {r.cross:6.3f} {r.colour:7.2f} "
                     f"{r.hand_colour:6.2f} {r.regions:7d} {r.seconds:6.1f}")
    if results:
        n = len(results)
        mean = lambda f: sum(f(r) for r in results) / n  # noqa: E731
        lines.append(f"{'mean':>6} {mean(lambda r: r.content_iou):8.3f} {mean(lambda r: r.style_iou):8.3f} "
                     f"{mean(lambda r: r.cross):6.3f} {mean(lambda r: r.colour):7.2f} {mean(lambda r: r.hand_colour):6.2f} "
                     f"{mean(lambda r: r.regions):7.1f} {mean(lambda r: r.seconds):6.1f}")
        low = sorted(results, key=lambda r: r.content_iou + r.style_iou)[:worst]
        lines.append("worst (content+style): " + ", ".join(
            f"{r.id} ({r.content_iou:.2f}/{r.style_iou:.2f})" for r in low))
        crossed = [r for r in results if r.cross > 0.05]
        lines.append(f"pairs with more than 5% of the content styled from another kind: {len(crossed)}"
                     + (" (" + ", ".join(f"{r.id}: {r.cross:.0%}" for r in crossed) + ")" if crossed else ""))
    return "\n".join(lines)


def _setting(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
    for kind in (int, float):
        try:
            return key, kind(text)
        except ValueError:
            pass
    return key, {"none": None, "true": True, "false": False}.get(text.lower(), text)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m photostyle.bench.segments --pairs DIR [--ids ...] [--segmenter NAME]``: print the table."""
    parser = argparse.ArgumentParser(prog="python -m photostyle.bench.segments", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", required=True, help="DPST-layout folder (input/, style/, segmentation/)")
    parser.add_argument("--ids", nargs="*", default=None, help="pair ids (default: all)")
    parser.add_argument("--segmenter", default="auto", help="'auto' or a registered segmenter name")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="segmenter settings, e.g. --set regions=12 layout=0.2 (numbers are parsed)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-colour", dest="colour", action="store_false",
                        help="skip the start-point colour columns (about 1 s per pair)")
    parser.add_argument("--bound", action="store_true",
                        help="instead of a segmenter: the content's hand masks, the style labelled by VGG16 "
                             "features (how far pairing by these features can go)")
    args = parser.parse_args(argv)
    if args.bound and (args.set or args.segmenter != "auto"):
        parser.error("--bound uses no segmenter; leave out --segmenter and --set")
    segmenter: Any = args.segmenter
    if args.set:
        from photostyle.segmentation import get_segmenter

        if segmenter == "auto":
            parser.error("--set needs a named --segmenter")
        segmenter = get_segmenter(segmenter, **dict(_setting(item) for item in args.set))
    results = evaluate_pairs(args.pairs, args.ids, segmenter, device=args.device, colour=args.colour, bound=args.bound)
    print(_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
