"""Segments in words (photostyle.segmentation.names)."""

import pytest
import torch

from photostyle.masks import Segmentation
from photostyle.segmentation.names import (colour_words, describe_mask, describe_pairing, name_segments,
                                           position_words)


def test_words_for_colours_and_places():
    assert colour_words((0.2, 0.4, 0.8)) == "blue"
    assert colour_words((0.95, 0.95, 0.95)) == "white"
    assert colour_words((0.05, 0.05, 0.05)) == "black"
    assert colour_words((0.45, 0.27, 0.1)) == "brown"
    assert colour_words((0.2, 0.6, 0.2)) == "green"
    assert position_words(0.1, 0.5, 0.3) == "top"
    assert position_words(0.8, 0.1, 0.2) == "bottom left"
    assert position_words(0.5, 0.5, 0.2) == "centre"
    assert position_words(0.5, 0.9, 0.2) == "right side"
    assert position_words(0.5, 0.5, 0.9) == "most of the photo"


def _sky_over_grass(h: int = 40, w: int = 60) -> tuple[torch.Tensor, Segmentation]:
    image = torch.zeros(1, 3, h, w)
    image[0, :, : h // 2] = torch.tensor([0.3, 0.5, 0.9]).view(3, 1, 1)  # blue sky
    image[0, :, h // 2 :] = torch.tensor([0.2, 0.6, 0.2]).view(3, 1, 1)  # green ground
    masks = torch.zeros(1, 2, h, w)
    masks[0, 0, h // 2 :] = 1  # label 0: the ground, listed first on purpose
    masks[0, 1, : h // 2] = 1
    return image, Segmentation(masks, ["region-0", "region-1"])


def test_describe_mask_says_where_and_what_colour():
    image, seg = _sky_over_grass()
    sky = describe_mask(image, seg.masks[0, 1] > 0.5)
    assert sky["where"] == "top" and sky["colour"] == "blue" and sky["hint"] == "sky-like"
    assert sky["coverage"] == pytest.approx(0.5) and sky["rgb"] == [77, 128, 229]
    assert describe_mask(image, torch.zeros(40, 60, dtype=torch.bool))["where"] == "nowhere"


def test_name_segments_renames_both_photos_alike_and_keeps_names_unique():
    image, seg = _sky_over_grass()
    content, style = name_segments(image, seg, Segmentation(seg.masks.flip(-2), list(seg.labels)))
    assert content.labels == ["bottom green", "top blue"] == style.labels
    assert torch.equal(content.masks, seg.masks)
    # two parts with the same words: the larger keeps them, the other is numbered
    twin = torch.zeros(1, 2, 40, 60)
    twin[0, 0, :, :20], twin[0, 1, :, 20:24] = 1, 1  # both on the left side, the first larger
    (named,) = name_segments(torch.full((1, 3, 40, 60), 0.5), Segmentation(twin, ["a", "b"]))
    assert named.labels == ["left side grey", "left side grey 2"]


def test_describe_pairing_names_the_style_part_and_carries_the_segmenters_confidence():
    image, seg = _sky_over_grass()
    whole = Segmentation(torch.stack([seg.masks[0, 0], torch.ones(40, 60)])[None], list(seg.labels))
    records = [{"label": "region-0", "source": "matched", "similarity": 0.8, "confidence": 0.93},
               {"label": "region-1", "source": "global", "similarity": 0.1, "confidence": 0.0}]
    ground, sky = describe_pairing(image, image, seg, whole, records)
    assert ground["confidence"] == 0.93 and ground["style"]["where"] == "bottom" and not ground["style"]["whole"]
    assert ground["text"] == "region-0 (50% of content) <- bottom green of the style (50%), confidence 0.93"
    assert sky["style"]["whole"] and sky["text"].endswith("<- the whole style photo, no confident partner")
    # without a record (hand masks, coseg): words only
    plain = describe_pairing(image, image, seg, seg)
    assert "confidence" not in plain[0] and plain[1]["text"].startswith("region-1 (50% of content) <- top blue")
