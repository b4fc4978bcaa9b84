"""Region matching (``--segmenter regmatch``): regions per photo, paired by meaning, the pairing recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from photostyle.errors import InputError
from photostyle.io import load_image, resize_long_side
from photostyle.masks import Segmentation
from photostyle.segmentation import available_segmenters, get_segmenter
from photostyle.segmentation.regmatch import (
    Pairing,
    RegionMatchSegmenter,
    kmeans,
    pair_regions,
    region_descriptors,
    transport_plan,
)

EXAMPLES = Path(__file__).parents[1] / "examples"


def _photo(name: str) -> torch.Tensor:
    return resize_long_side(load_image(EXAMPLES / name).tensor, 192)


@pytest.mark.parametrize("style_name", ["coffee.png", "flipped"])
def test_pairs_a_pair_and_records_every_decision(vgg16, style_name):
    content = _photo("rocket.jpg")
    style = content.flip(-2) if style_name == "flipped" else _photo(style_name)
    segmenter = get_segmenter("regmatch")
    content_seg, style_seg = segmenter.segment_pair(content, style)
    assert content_seg.labels == style_seg.labels and len(content_seg.labels) >= 1
    assert content_seg.masks.shape[-2:] == content.shape[-2:] and style_seg.masks.shape[-2:] == style.shape[-2:]
    assert torch.allclose(content_seg.masks.sum(1), torch.ones(1, *content.shape[-2:]))  # a partition of the content
    pairing = segmenter.last_pairing.to_dict()
    assert pairing["method"] == "regmatch" and len(pairing["pairs"]) == len(content_seg.labels)
    assert abs(sum(p["content_fraction"] for p in pairing["pairs"]) - 1) < 0.02
    json.dumps(pairing)


def test_a_rocket_and_a_coffee_cup_share_nothing_so_one_look_covers_the_photo(vgg16):
    """The demo pair: no part of a launch pad at dusk is a kind of thing in a coffee photo, so pairing regions
    would pair look-alikes (sky with saucer) and paint a patchwork; the photo takes the style's look as a whole.
    The same photo styled by itself upside down shares everything and is paired region by region."""
    content, style = _photo("rocket.jpg"), _photo("coffee.png")
    segmenter = get_segmenter("regmatch")
    content_seg, style_seg = segmenter.segment_pair(content, style)
    pairing = segmenter.last_pairing
    assert pairing.relatedness < segmenter.min_relatedness and "share no recognisable kind" in pairing.note
    assert len(content_seg.labels) == 1 and pairing.pairs[0].source == "global"
    assert bool((content_seg.masks == 1).all()) and bool((style_seg.masks == 1).all())
    assert pairing.notes()[0] == pairing.note
    segmenter.segment_pair(content, content.flip(-2))
    assert segmenter.last_pairing.relatedness > 0.6 and segmenter.last_pairing.note == ""
    assert len(segmenter.last_pairing.pairs) > 1


def test_relatedness_is_the_area_weighted_best_similarity_and_decides_the_pairing():
    """Content regions of 1/3 and 2/3 whose best style partners score 0.2 and 0.8: relatedness 0.6."""
    content = torch.zeros(1, 2, 6, 9)
    content[0, 0, :, :3], content[0, 1, :, 3:] = 1, 1
    style = _halves(8, 8, vertical=True)
    content_desc = torch.tensor([[0.2, 0.0, (1 - 0.04) ** 0.5], [0.0, 0.8, 0.6]])
    style_desc = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    c, s, pairing = pair_regions(content, style, content_desc, style_desc, min_similarity=0.1, min_relatedness=0.55)
    assert pairing.relatedness == pytest.approx(0.6, abs=1e-5) and pairing.note == "" and len(c.labels) == 2
    c, s, pairing = pair_regions(content, style, content_desc, style_desc, min_similarity=0.1, min_relatedness=0.65)
    assert pairing.relatedness == pytest.approx(0.6, abs=1e-5) and "0.60 < 0.65" in pairing.note
    assert c.labels == s.labels == ["region-0"] and pairing.pairs[0].content_regions == [0, 1]
    assert bool((c.masks == 1).all()) and bool((s.masks == 1).all())


def test_regions_swapped_in_position_keep_their_meaning(vgg16):
    """The style is the content turned upside down: the top of the content must not take its look from the
    top of the style (which is now ground), but from the same kind of thing wherever it is."""
    content = _photo("rocket.jpg")
    style = content.flip(-2)
    segmenter = get_segmenter("regmatch")
    content_seg, style_seg = segmenter.segment_pair(content, style)
    flipped = style_seg.masks.flip(-2)  # each style region put back where it came from
    overlap = (content_seg.masks * flipped).sum() / content_seg.masks.sum()
    assert overlap > 0.6


def _halves(h: int, w: int, vertical: bool) -> torch.Tensor:
    """Two hard masks (1, 2, h, w): left/right halves, or top/bottom when ``vertical``."""
    first = torch.zeros(h, w)
    if vertical:
        first[: h // 2] = 1
    else:
        first[:, : w // 2] = 1
    return torch.stack([first, 1 - first])[None]


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a > 0.5, b > 0.5
    return float((a & b).sum() / (a | b).sum())


# ---------------------------------------------------------------- pairing logic (no network)


def test_kmeans_is_deterministic_and_separates_clusters():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(30, 3, generator=g) * 0.1, torch.randn(30, 3, generator=g) * 0.1 + 5])
    a1, d1 = kmeans(x, 2)
    a2, _ = kmeans(x, 2)
    assert torch.equal(a1, a2) and d1.shape == (60, 2)
    assert len(set(a1[:30].tolist())) == 1 and len(set(a1[30:].tolist())) == 1 and a1[0] != a1[-1]


def test_pairs_by_descriptor_not_by_position():
    """Content: A left, B right. Style: B on top, A below. Each content half must get the style half of its kind."""
    content, style = _halves(8, 12, vertical=False), _halves(10, 10, vertical=True)
    a, b = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    content_desc = torch.stack([a, b])  # region 0 (left) is A, region 1 (right) is B
    style_desc = torch.stack([b, a])  # region 0 (top) is B, region 1 (bottom) is A
    c, s, pairing = pair_regions(content, style, content_desc, style_desc, layout=0.0)
    assert c.labels == s.labels == ["region-0", "region-1"] and len(pairing.pairs) == 2
    for k in range(2):
        kind = 0 if _iou(c.masks[0, k], content[0, 0]) > 0.99 else 1  # which content half the label holds
        expected = style[0, 1] if kind == 0 else style[0, 0]
        assert _iou(s.masks[0, k], expected) > 0.99
        pair = pairing.pairs[k]
        assert pair.source == "matched" and pair.confidence > 0.99 and pair.similarity == pytest.approx(1.0)
        assert pair.style_regions == [1 if kind == 0 else 0]
    assert pairing.unused_style == 0.0


def test_layout_breaks_a_tie_toward_the_same_height():
    """Two identical style descriptors: the content top region takes the style top region."""
    content, style = _halves(10, 10, vertical=True), _halves(10, 10, vertical=True)
    same = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    c, s, _ = pair_regions(content, style, same, same, layout=0.2, max_labels=8)
    top = next(k for k in range(2) if _iou(c.masks[0, k], content[0, 0]) > 0.99)
    assert _iou(s.masks[0, top], style[0, 0]) > 0.99


def test_unmatched_region_without_a_confident_partner_gets_the_whole_style_photo():
    content = torch.zeros(1, 3, 6, 9)
    for k in range(3):
        content[0, k, :, 3 * k : 3 * k + 3] = 1
    style = _halves(8, 8, vertical=True)
    content_desc = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # region 2 is like nothing
    style_desc = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    c, s, pairing = pair_regions(content, style, content_desc, style_desc, layout=0.0, min_similarity=0.5)
    k = next(k for k in range(3) if _iou(c.masks[0, k], content[0, 2]) > 0.99)
    assert bool((s.masks[0, k] == 1).all())
    assert pairing.pairs[k].source == "global" and pairing.pairs[k].confidence == 0.0
    assert pairing.pairs[k].style_regions == [] and pairing.pairs[k].style_fraction == 1.0
    assert "whole style photo" in pairing.notes()[k]


def test_unchosen_region_with_a_confident_partner_takes_its_nearest():
    content = torch.zeros(1, 3, 6, 9)
    for k in range(3):
        content[0, k, :, 3 * k : 3 * k + 3] = 1
    style = _halves(8, 8, vertical=True)
    d = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.2, 1.0]]), dim=1)
    c, s, pairing = pair_regions(content, style, d, torch.eye(2), method="argmax", layout=0.0, min_similarity=0.5)
    k = next(k for k in range(3) if _iou(c.masks[0, k], content[0, 2]) > 0.99)
    assert pairing.pairs[k].source == "nearest" and pairing.pairs[k].style_regions == [1]
    assert _iou(s.masks[0, k], style[0, 1]) > 0.99


def test_max_labels_merges_the_most_alike_labels():
    content = torch.zeros(1, 4, 4, 16)
    for k in range(4):
        content[0, k, :, 4 * k : 4 * k + 4] = 1
    style = torch.zeros(1, 4, 16, 4)
    for k in range(4):
        style[0, k, 4 * k : 4 * k + 4] = 1
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    desc = torch.stack([a, a, b, b])
    c, s, pairing = pair_regions(content, style, desc, desc, layout=0.0, max_labels=2)
    assert len(c.labels) == 2 and s.masks.shape[1] == 2
    for k in range(2):  # each label holds the two content regions of one kind, and the style regions of that kind
        members = sorted(pairing.pairs[k].content_regions)
        assert members in ([0, 1], [2, 3]) and sorted(pairing.pairs[k].style_regions) == members
    assert torch.equal(c.masks.sum(dim=1), torch.ones(1, 4, 16))  # still a partition


def _strips(h: int, widths: list[float], vertical: bool = False) -> torch.Tensor:
    """Hard masks (1, K, h, h) of side-by-side strips (stacked when ``vertical``) of these width fractions."""
    masks = torch.zeros(1, len(widths), h, h)
    edges = [0] + [round(h * sum(widths[: k + 1])) for k in range(len(widths))]
    for k in range(len(widths)):
        if vertical:
            masks[0, k, edges[k] : edges[k + 1]] = 1
        else:
            masks[0, k, :, edges[k] : edges[k + 1]] = 1
    return masks


def _look(style: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``(K,)`` share of a label's look that each style region gives (its weighted area, normalised)."""
    mass = (style[0] * weight).sum(dim=(1, 2))
    return mass / mass.sum()


def test_transport_plan_sends_all_content_area_and_respects_kinds():
    score = torch.tensor([[0.9, 0.9, 0.2], [0.2, 0.2, 0.9]])
    area_c, area_s = torch.tensor([0.5, 0.5]), torch.tensor([0.1, 0.4, 0.5])
    plan = transport_plan(score, area_c, area_s, epsilon=0.02)
    assert torch.allclose(plan.sum(dim=1), area_c, atol=1e-5)
    assert float(plan[0, 2]) < 1e-3 and float(plan[1, :2].sum()) < 1e-3  # no mass across kinds
    assert float(plan[0, 1] / plan[0, 0]) == pytest.approx(4.0, rel=0.05)  # within a kind, by area


def test_a_kind_split_in_two_takes_the_style_kind_in_proportion():
    """Content: kind A in two strips (30% + 30%), kind B (40%). Style: kind A in a small (10%) and a large
    (40%) strip, kind B (50%). Each content strip of A must take A's look in the style's proportion
    (1 : 4), not one style strip each (the argmax rule gives one of them all of A and the other a part)."""
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    content, style = _strips(40, [0.3, 0.3, 0.4]), _strips(40, [0.1, 0.4, 0.5], vertical=True)
    c, s, pairing = pair_regions(content, style, torch.stack([a, a, b]), torch.stack([a, a, b]))
    for k, pair in enumerate(pairing.pairs):
        look = _look(style, s.masks[0, k])
        if pair.content_regions in ([0], [1]):
            assert torch.allclose(look, torch.tensor([0.2, 0.8, 0.0]), atol=0.03), (k, look)
        else:
            assert pair.content_regions == [2] and float(look[2]) > 0.99
    _, s_argmax, p_argmax = pair_regions(content, style, torch.stack([a, a, b]), torch.stack([a, a, b]),
                                         method="argmax")
    looks = [_look(style, s_argmax.masks[0, k]) for k, p in enumerate(p_argmax.pairs) if p.content_regions != [2]]
    assert any(not torch.allclose(look, torch.tensor([0.2, 0.8, 0.0]), atol=0.1) for look in looks)


def test_a_large_kind_does_not_spill_into_another_kind():
    """Content: 80% sky, 20% ground; style: 20% sky, 80% ground. The sky takes only the style's sky,
    though a balanced plan would have to send most of it onto ground."""
    sky, ground = torch.tensor([0.95, 0.31]), torch.tensor([0.31, 0.95])  # cosine 0.59 across kinds
    content, style = _strips(40, [0.8, 0.2], vertical=True), _strips(40, [0.2, 0.8], vertical=True)
    c, s, pairing = pair_regions(content, style, torch.stack([sky, ground]), torch.stack([sky, ground]))
    k = next(k for k, p in enumerate(pairing.pairs) if p.content_regions == [0])
    assert float(_look(style, s.masks[0, k])[1]) < 0.01 and pairing.pairs[k].style_regions == [0]


def test_pairing_to_dict_is_json_ready():
    c, s, pairing = pair_regions(_halves(4, 4, False), _halves(4, 4, True), torch.eye(2), torch.eye(2), layout=0.0)
    data = json.loads(json.dumps(pairing.to_dict()))
    assert data["method"] == "regmatch" and len(data["pairs"]) == 2
    assert {"label", "style_regions", "confidence", "source", "similarity"} <= set(data["pairs"][0])
    assert isinstance(pairing, Pairing) and len(pairing.notes()) == 2


def test_region_descriptors_ignore_the_photos_global_cast():
    """A feature map and the same map brighter by a per-channel factor give the same descriptors."""
    g = torch.Generator().manual_seed(0)
    feature = torch.rand(1, 5, 6, 6, generator=g)
    masks = _halves(12, 12, vertical=False)
    d1 = region_descriptors(masks, feature, norm=0.0)
    d2 = region_descriptors(masks, feature * torch.tensor([1.0, 3.0, 0.5, 2.0, 7.0]).view(1, 5, 1, 1), norm=0.0)
    assert torch.allclose(d1, d2, atol=1e-5)


# ---------------------------------------------------------------- the segmenter's contract (random weights)


def test_registered_as_unlabelled():
    assert "regmatch" in available_segmenters()
    segmenter = get_segmenter("regmatch", weights=None)
    assert isinstance(segmenter, RegionMatchSegmenter) and segmenter.name == "regmatch" and not segmenter.labelled


def test_pair_contract_with_random_weights():
    """Random VGG weights: shapes, shared labels, content partition, determinism and the recorded pairing."""
    torch.manual_seed(0)
    content, style = torch.rand(1, 3, 40, 56), torch.rand(1, 3, 48, 36)
    segmenter = RegionMatchSegmenter(weights=None, size=64, regions=6, max_labels=4)
    c, s = segmenter.segment_pair(content, style)
    assert isinstance(c, Segmentation) and c.labels == s.labels and 1 <= len(c.labels) <= 4
    assert c.masks.shape == (1, len(c.labels), 40, 56) and s.masks.shape == (1, len(s.labels), 48, 36)
    assert c.is_hard() and torch.equal(c.masks.sum(dim=1), torch.ones(1, 40, 56))
    assert float(s.masks.min()) >= 0 and float(s.masks.max()) == 1  # soft style weights, each label's largest 1
    assert bool((s.masks.sum(dim=(0, 2, 3)) > 0).all())  # every label has a style partner
    pairing = segmenter.last_pairing
    assert [p.label for p in pairing.pairs] == c.labels
    assert all(0.0 <= p.confidence <= 1.0 for p in pairing.pairs)
    assert sum(p.content_fraction for p in pairing.pairs) == pytest.approx(1.0, abs=1e-5)
    c2, s2 = segmenter.segment_pair(content, style)
    assert torch.equal(c.masks, c2.masks) and torch.equal(s.masks, s2.masks)
    one = segmenter.segment(content)
    assert one.masks.shape[-2:] == (40, 56) and torch.equal(one.masks.sum(dim=1), torch.ones(1, 40, 56))


def test_rejects_non_images():
    with pytest.raises(InputError, match=r"\(1, 3, H, W\)"):
        RegionMatchSegmenter(weights=None).segment_pair(torch.rand(3, 20, 20), torch.rand(1, 3, 20, 20))


# ---------------------------------------------------------------- real features: meaning over colour and place


def _smooth(h: int, w: int, tint: tuple[float, float, float], g: torch.Generator) -> torch.Tensor:
    """A sky: smooth vertical gradient with faint noise, (3, h, w)."""
    ramp = torch.linspace(0.85, 1.0, h).view(1, h, 1)
    return torch.tensor(tint).view(3, 1, 1) * ramp + 0.01 * torch.randn(3, h, w, generator=g)


def _blades(h: int, w: int, tint: tuple[float, float, float], g: torch.Generator) -> torch.Tensor:
    """Grass: dark/bright vertical blades with strong noise, (3, h, w)."""
    blades = (torch.rand(1, 1, w, generator=g) > 0.5).float().expand(1, h, w)
    return torch.tensor(tint).view(3, 1, 1) * (0.45 + 0.4 * blades + 0.15 * torch.randn(1, h, w, generator=g))


@pytest.mark.parametrize("swap_colours", [False, True])
def test_sky_takes_the_sky_even_when_places_and_colours_are_swapped(vgg16, swap_colours):
    """Content: blue sky left, green grass right. Style: grass on top, sky below (upside down), and
    with ``swap_colours`` the style's sky is green and its grass blue, so colour or place alone pairs wrongly."""
    g = torch.Generator().manual_seed(0)
    h, w = 96, 128
    blue, green = (0.55, 0.75, 0.95), (0.3, 0.65, 0.25)
    content = torch.cat([_smooth(h, w // 2, blue, g), _blades(h, w // 2, green, g)], dim=2).clamp(0, 1)[None]
    sky_tint, grass_tint = (green, blue) if swap_colours else (blue, green)
    style = torch.cat([_blades(h // 2, w, grass_tint, g), _smooth(h // 2, w, sky_tint, g)], dim=1).clamp(0, 1)[None]
    content_sky = torch.zeros(h, w)
    content_sky[:, : w // 2] = 1
    style_sky = torch.zeros(h, w)
    style_sky[h // 2 :] = 1
    segmenter = RegionMatchSegmenter(regions=4, layout=0.0)
    c, s = segmenter.segment_pair(content, style)
    pairs = segmenter.last_pairing.pairs
    paired = [k for k in range(len(c.labels)) if pairs[k].source != "global"]  # global: the whole style, no kind
    assert sum(pairs[k].content_fraction for k in paired) > 0.75, segmenter.last_pairing.notes()
    # the style pixels paired with content sky pixels are style sky pixels, and likewise for grass
    for truth_c, truth_s in ((content_sky, style_sky), (1 - content_sky, 1 - style_sky)):
        share = (c.masks[0] * truth_c).sum(dim=(1, 2)) / c.masks[0].sum(dim=(1, 2))  # each label's share of this kind
        labels = [k for k in paired if share[k] > 0.5]
        assert labels, (c.labels, share)
        style_of_kind = s.masks[0, labels].amax(dim=0)
        precision = float((style_of_kind * truth_s).sum() / style_of_kind.sum())
        assert precision > 0.9, (swap_colours, segmenter.last_pairing.notes())


def test_the_default_transfer_reports_each_parts_partner_in_words(vgg16):
    from photostyle.pipeline import TransferConfig, stylise

    content, style = _photo("rocket.jpg"), _photo("coffee.png")
    config = TransferConfig(size=64, iterations=1, segmenter="regmatch")  # "auto" without ADE20K; VGG16 segments by meaning
    report = json.loads(stylise(content, style, config=config).to_json())
    segmentation = report["segmentation"]
    assert segmentation["segmenter"] == "regmatch" and segmentation["named"] is False
    assert any("share no recognisable kind" in note for note in segmentation["notes"])  # the pair-level decision
    assert report["segments"] == [p["label"] for p in segmentation["pairing"]]
    assert not any(label.startswith("region-") for label in report["segments"])  # named by place and colour
    for part in segmentation["pairing"]:
        assert part["source"] in ("matched", "nearest", "global") and 0 <= part["confidence"] <= 1
        assert part["text"].startswith(f"{part['label']} (") and " <- " in part["text"]


def test_an_unknown_pairing_method_is_named_in_the_error():
    with pytest.raises(ValueError, match="'transport' or 'argmax'"):
        pair_regions(_halves(4, 4, False), _halves(4, 4, True), torch.eye(2), torch.eye(2), method="nearest")
