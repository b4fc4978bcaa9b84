"""Semantic grouping of segment labels by WordNet similarity (the paper's Sematch step).

Automated Deep Photo Style Transfer (Spenhouet et al. 2019) segments both photos with a
scene parser and then has to make their label sets agree, because a style Gram matrix
can only be matched to a content segment with the same label:

* a label found only in the style photo is replaced by the most similar label of the
  content photo, and a label found only in the content photo by the most similar label
  of the style photo;
* labels found in both photos whose similarity reaches a threshold are merged.

Similarities follow Sematch's ``WordNetSimilarity`` (noun synsets, the maximum over the
synsets of both words, information content from the Brown corpus ``ic-brown.dat``), computed
offline with nltk on the WordNet 3.0 that :func:`photostyle.wordnet.ensure_wordnet` provides.
Every metric returns a value in [0, 1], so one ``threshold`` has the same meaning for all:

========  ==================================================================  ===========
metric    definition (``d`` = shortest path length in edges, ``lcs`` = least   range
          common subsumer, ``IC`` = information content)
========  ==================================================================  ===========
path      ``1 / (1 + d)`` (Rada)                                                (0, 1]
wup       ``2 depth(lcs) / (depth(a) + depth(b))`` (Wu & Palmer, nltk)          (0, 1]
lin       ``2 IC(lcs) / (IC(a) + IC(b))`` (Lin)                                 [0, 1]
res       ``IC(lcs) / IC_max`` (Resnik, divided by the largest IC of a noun)    [0, 1]
jcn       ``1 / (1 + IC(a) + IC(b) - 2 IC(lcs))`` (Jiang & Conrath, Sematch)    (0, 1]
li        ``exp(-0.2 d) tanh(0.6 depth(lcs))`` (Li et al. 2003, Sematch)         [0, 1)
wpath     ``1 / (1 + d 0.8^IC(lcs))`` (Zhu & Iglesias 2017, Sematch)            (0, 1]
========  ==================================================================  ===========

Unlike nltk, a synset never seen in the Brown corpus gets ``IC_max`` instead of an
infinite IC, which keeps res, lin and jcn finite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F

from photostyle.errors import MaskError
from photostyle.masks import Segmentation

__all__ = [
    "METRICS",
    "GroupingResult",
    "apply_grouping",
    "group_labels",
    "label_similarity",
    "label_synsets",
    "merge_small_segments",
    "merge_small_segments_pair",
    "synset_similarity",
]

METRICS = ("path", "wup", "lin", "res", "jcn", "li", "wpath")
# Sematch WordNetSimilarity.li defaults (Li et al. 2003 found beta = 0.45 best on their data;
# Sematch, and so the paper, uses 0.6)
_LI_ALPHA, _LI_BETA = 0.2, 0.6
_WPATH_K = 0.8  # Sematch WordNetSimilarity.wpath default


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown similarity metric {metric!r}; expected one of {', '.join(METRICS)}")


@cache
def _wordnet() -> tuple[Any, dict, float]:
    """nltk's WordNet reader, the Brown IC table and the largest finite noun IC."""
    from photostyle.wordnet import ensure_wordnet

    ensure_wordnet()
    from nltk.corpus import wordnet, wordnet_ic

    ic = wordnet_ic.ic("ic-brown.dat")
    counts = ic["n"]
    smallest = min(c for offset, c in counts.items() if offset != 0 and c > 0)
    return wordnet, ic, -math.log(smallest / counts[0])


def _ic(synset: Any) -> float:
    from nltk.corpus.reader.wordnet import information_content

    _, ic, ic_max = _wordnet()
    return min(information_content(synset, ic), ic_max)


def synset_similarity(a: Any, b: Any, metric: str = "li") -> float:
    """Similarity in [0, 1] of two nltk noun synsets with one of :data:`METRICS`."""
    _check_metric(metric)
    if metric in ("path", "wup"):
        return float(getattr(a, f"{metric}_similarity")(b))
    if metric in ("res", "lin"):  # nltk's lcs for IC metrics: the common hypernym of largest IC
        lcs_ic = max(_ic(h) for h in a.common_hypernyms(b))
        if metric == "res":
            return lcs_ic / _wordnet()[2]
        total = _ic(a) + _ic(b)
        return 2.0 * lcs_ic / total if total > 0 else 1.0
    # Sematch's lcs for the rest: the lowest common hypernym
    lcs = a.lowest_common_hypernyms(b)[0]
    if metric == "jcn":
        return 1.0 / (1.0 + max(0.0, _ic(a) + _ic(b) - 2.0 * _ic(lcs)))
    distance = a.shortest_path_distance(b)
    if metric == "li":
        return math.exp(-_LI_ALPHA * distance) * math.tanh(_LI_BETA * lcs.max_depth())
    return 1.0 / (1.0 + distance * _WPATH_K ** _ic(lcs))  # wpath


@cache
def label_synsets(label: str) -> tuple[Any, ...]:
    """Noun synsets of a label name such as ``"car, auto, automobile, machine, motorcar"``.

    The comma-separated aliases of an ADE20K name are synonyms of one synset, so the first
    alias WordNet knows is used (the others only add unrelated senses, e.g. "machine" for
    a car). Spaces become underscores ("chest of drawers" -> ``chest_of_drawers``). If no
    alias is known, the last word of each alias is tried ("arcade machine" -> "machine").
    An empty tuple means the label is unknown to WordNet.
    """
    wordnet = _wordnet()[0]
    aliases = [a.strip().lower() for a in label.split(",") if a.strip()]
    for candidates in (aliases, [a.split()[-1] for a in aliases]):
        for alias in candidates:
            synsets = wordnet.synsets(alias.replace(" ", "_"), pos=wordnet.NOUN)
            if synsets:
                return tuple(synsets)
    return ()


@cache
def label_similarity(a: str, b: str, metric: str = "li") -> float:
    """Similarity in [0, 1] of two label names: the maximum over their noun synsets.

    Equal names give 1; a name WordNet does not know gives 0 with every other name.
    """
    _check_metric(metric)
    if a.strip().lower() == b.strip().lower():
        return 1.0
    pairs = [(x, y) for x in label_synsets(a) for y in label_synsets(b)]
    return max([synset_similarity(x, y, metric) for x, y in pairs], default=0.0)


@dataclass
class GroupingResult:
    """Outcome of :func:`group_labels`.

    Attributes:
        groups: the group names, in order; both photos end with exactly these groups.
        content: content label -> group name.
        style: style label -> group name.
        decisions: one JSON-ready dict per replacement or merge, with keys ``label``,
            ``photo`` ("content", "style" or "both"), ``mapped_to``, ``similarity``, ``reason``.
        metric: the similarity metric used.
        threshold: the merge threshold used.
    """

    groups: list[str]
    content: dict[str, str]
    style: dict[str, str]
    decisions: list[dict[str, Any]] = field(default_factory=list)
    metric: str = "li"
    threshold: float = 0.8

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable view for reports."""
        return {"metric": self.metric, "threshold": self.threshold, "groups": list(self.groups),
                "content": dict(self.content), "style": dict(self.style),
                "decisions": [dict(d) for d in self.decisions]}


def _most_similar(label: str, candidates: Sequence[str], metric: str) -> tuple[str, float]:
    """The candidate most similar to ``label`` (ties: the earlier one) and its similarity."""
    sims = [label_similarity(label, c, metric) for c in candidates]
    best = max(range(len(candidates)), key=lambda i: (sims[i], -i))
    return candidates[best], sims[best]


def group_labels(
    content_labels: Sequence[str],
    style_labels: Sequence[str],
    metric: str = "li",
    threshold: float = 0.8,
    *,
    areas: Mapping[str, float] | None = None,
) -> GroupingResult:
    """Make the label sets of a content and a style photo agree (Spenhouet et al. 2019).

    1. Each style label missing from the content photo is replaced by its most similar
       content label.
    2. Each content label still missing from the (replaced) style labels is replaced by its
       most similar label among them. Both photos now use the same labels.
    3. Of these, labels whose similarity reaches ``threshold`` are merged (connected
       components of the "similar enough" graph).

    Ties go to the earlier label. A group is named after its member of largest ``areas``
    value if given (e.g. pixel fractions summed over both photos), else after its first
    member in content order.

    Args:
        content_labels: the distinct labels of the content photo.
        style_labels: the distinct labels of the style photo.
        metric: one of :data:`METRICS`.
        threshold: merge threshold in [0, 1] for step 3.
        areas: optional label -> area, used only to name groups.

    Returns:
        The groups, each photo's label -> group mapping and the decisions taken.

    Raises:
        MaskError: a photo has no labels or repeats a label.
        ValueError: unknown ``metric``.

    Example:
        >>> r = group_labels(["sky", "tree", "road"], ["sky", "plant", "road"])  # doctest: +SKIP
        >>> r.style["plant"]  # doctest: +SKIP
        'tree'
    """
    _check_metric(metric)
    for photo, labels in (("content", content_labels), ("style", style_labels)):
        if not labels or len(set(labels)) != len(labels):
            raise MaskError(f"the {photo} photo needs at least one label and no repeats, got {list(labels)}")
    decisions: list[dict[str, Any]] = []

    def replace(labels: Sequence[str], vocabulary: Sequence[str], photo: str) -> dict[str, str]:
        mapping = {}
        for label in labels:
            mapping[label], sim = label, 1.0
            if label not in vocabulary:
                mapping[label], sim = _most_similar(label, vocabulary, metric)
                decisions.append({"label": label, "photo": photo, "mapped_to": mapping[label],
                                  "similarity": round(sim, 6), "reason": f"only in the {photo} photo"})
        return mapping

    style_map = replace(style_labels, list(content_labels), "style")
    replaced_style = set(style_map.values())
    shared = [label for label in content_labels if label in replaced_style]
    content_map = replace(content_labels, shared, "content")

    parent = {label: label for label in shared}

    def root(x: str) -> str:
        while parent[x] != x:
            x = parent[x]
        return x

    for i, a in enumerate(shared):
        for b in shared[i + 1:]:
            sim = label_similarity(a, b, metric)
            if sim >= threshold:
                parent[root(b)] = root(a)
                decisions.append({"label": b, "photo": "both", "mapped_to": a,
                                  "similarity": round(sim, 6), "reason": f"similarity >= {threshold}"})
    members: dict[str, list[str]] = {}
    for label in shared:
        members.setdefault(root(label), []).append(label)
    name = {}
    for group in members.values():
        chosen = max(group, key=lambda x: areas.get(x, 0.0)) if areas else group[0]
        name.update({label: chosen for label in group})
    return GroupingResult(groups=list(dict.fromkeys(name[x] for x in shared)),
                          content={x: name[content_map[x]] for x in content_labels},
                          style={x: name[style_map[x]] for x in style_labels},
                          decisions=decisions, metric=metric, threshold=threshold)


def _regroup(seg: Segmentation, mapping: Mapping[str, str], groups: Sequence[str], photo: str) -> Segmentation:
    missing = [label for label in seg.labels if label not in mapping]
    if missing:
        raise MaskError(f"the {photo} segmentation has labels {missing} that the grouping does not know; "
                        f"group the labels of these very segmentations")
    index = {g: i for i, g in enumerate(groups)}
    onehot = torch.zeros(len(seg.labels), len(groups), dtype=seg.masks.dtype, device=seg.masks.device)
    for k, label in enumerate(seg.labels):
        onehot[k, index[mapping[label]]] = 1
    masks = torch.einsum("bkhw,kg->bghw", seg.masks, onehot).clamp_(0, 1)
    return Segmentation(masks=masks, labels=list(groups))


def apply_grouping(
    content: Segmentation, style: Segmentation, result: GroupingResult
) -> tuple[Segmentation, Segmentation]:
    """Sum the masks of each group: both outputs carry ``result.groups`` in the same order.

    Args:
        content: content segmentation, masks ``(1, K_c, H, W)`` in [0, 1].
        style: style segmentation, masks ``(1, K_s, H', W')`` in [0, 1].
        result: the grouping of their labels from :func:`group_labels`.

    Returns:
        Content and style segmentations with masks ``(1, G, H, W)`` and ``(1, G, H', W')``,
        clamped to [0, 1].
    """
    return (_regroup(content, result.content, result.groups, "content"),
            _regroup(style, result.style, result.groups, "style"))


def _merge_small(segs: Sequence[Segmentation], min_fraction: float) -> list[Segmentation]:
    labels = list(segs[0].labels)
    if any(list(s.labels) != labels for s in segs):
        raise MaskError("segmentations merged together must carry the same labels in the same order, got "
                        + " vs ".join(str(list(s.labels)) for s in segs))
    masks = [s.masks for s in segs]
    while len(labels) > 1:
        fractions = torch.stack([m.mean(dim=(0, 2, 3)) for m in masks])  # (P, K)
        smallest = fractions.min(dim=0).values
        k = int(smallest.argmin())
        if smallest[k] >= min_fraction:
            break
        border = torch.zeros(len(labels), dtype=torch.float64)
        for m in masks:
            ring = F.max_pool2d(m[:, k : k + 1], kernel_size=3, stride=1, padding=1)
            border += (ring * m).sum(dim=(0, 2, 3)).double().cpu() / m[0, 0].numel()
        border[k] = -1.0
        if border.max() <= 0:  # touches nothing: join the largest other segment
            border = fractions.sum(dim=0).double().cpu()
            border[k] = -1.0
        target = int(border.argmax())
        keep = [i for i in range(len(labels)) if i != k]
        for p, m in enumerate(masks):
            m = m.clone()
            m[:, target] = (m[:, target] + m[:, k]).clamp(0, 1)
            masks[p] = m[:, keep]
        labels = [labels[i] for i in keep]
    return [Segmentation(masks=m, labels=list(labels)) for m in masks]


def merge_small_segments(seg: Segmentation, min_fraction: float = 0.01) -> Segmentation:
    """Merge segments covering less than ``min_fraction`` of the image into a neighbour.

    The smallest segment goes first; it joins the segment with which it shares the longest
    border (its mask dilated by one pixel, overlapped with each other mask), or the largest
    segment if it touches none. This repeats until no segment is too small, so no Gram
    matrix is estimated from a handful of pixels.

    Args:
        seg: masks ``(1, K, H, W)`` in [0, 1].
        min_fraction: smallest allowed area as a fraction of ``H * W``, in [0, 1].

    Returns:
        A segmentation with masks ``(1, K', H, W)``, ``K' <= K``, keeping the surviving labels in order.
    """
    return _merge_small([seg], min_fraction)[0]


def merge_small_segments_pair(
    content: Segmentation, style: Segmentation, min_fraction: float = 0.01
) -> tuple[Segmentation, Segmentation]:
    """:func:`merge_small_segments` for two grouped photos, keeping their labels equal.

    A segment is merged if it is too small in *either* photo (its Gram matrix would be
    unreliable there), and in both photos into the same target: the label whose border
    with it is longest, measured as a fraction of each image's area and summed over both.

    Args:
        content: masks ``(1, K, H, W)`` with the same labels, in the same order, as ``style``.
        style: masks ``(1, K, H', W')``.
        min_fraction: smallest allowed area as a fraction of each image, in [0, 1].

    Returns:
        Both segmentations with the same ``K' <= K`` labels.
    """
    merged = _merge_small([content, style], min_fraction)
    return merged[0], merged[1]
