"""Region matching (``--segmenter regmatch``): regions per photo, paired by meaning, the pairing recorded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from photostyle import weights
from photostyle.errors import WeightsError
from photostyle.io import load_image, resize_long_side
from photostyle.segmentation import get_segmenter

EXAMPLES = Path(__file__).parents[1] / "examples"


@pytest.fixture(scope="module")
def vgg16():
    try:
        weights.ensure("vgg16-imagenet")
    except WeightsError as err:
        pytest.skip(f"VGG16 weights not fetched: {err}")


def _photo(name: str) -> torch.Tensor:
    return resize_long_side(load_image(EXAMPLES / name).tensor, 192)


def test_pairs_the_demo_and_records_every_decision(vgg16):
    content, style = _photo("rocket.jpg"), _photo("coffee.png")
    segmenter = get_segmenter("regmatch")
    content_seg, style_seg = segmenter.segment_pair(content, style)
    assert content_seg.labels == style_seg.labels and len(content_seg.labels) >= 1
    assert content_seg.masks.shape[-2:] == content.shape[-2:] and style_seg.masks.shape[-2:] == style.shape[-2:]
    assert torch.allclose(content_seg.masks.sum(1), torch.ones(1, *content.shape[-2:]))  # a partition of the content
    pairing = segmenter.last_pairing.to_dict()
    assert pairing["method"] == "regmatch" and len(pairing["pairs"]) == len(content_seg.labels)
    assert abs(sum(p["content_fraction"] for p in pairing["pairs"]) - 1) < 0.02


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
