import json
from pathlib import Path

import pytest
import torch

from photostyle.cli import main
from photostyle.errors import MaskError, WeightsError
from photostyle.io import load_image, save_image
from photostyle.masks import Segmentation, load_dpst_mask
from photostyle.segmentation import base
from photostyle.segmentation.auto import SegmentationOutcome, choose_segmenter, save_overlay, segment_pair
from photostyle.segmentation.base import Segmenter
from photostyle.segmentation.coseg import CoSegmenter
from photostyle.segmentation.regmatch import RegionMatchSegmenter
from photostyle.settings import TransferConfig

DPST = Path("/work/shared/benchmark/dpst")


class FakeLabelled(Segmenter):
    """Top third "sky", middle third "tree", bottom third "plant" (rows), whatever the photo."""

    labelled = True
    name = "fake-labelled"

    def __init__(self, **options):
        self.options = options

    def segment(self, image: torch.Tensor) -> Segmentation:
        h, w = image.shape[-2:]
        band = (torch.arange(h) * 3 // h).view(h, 1).expand(h, w)
        masks = torch.stack([(band == k).float() for k in range(3)]).unsqueeze(0)
        return Segmentation(masks, ["sky", "tree", "plant"])


class MissingWeights(Segmenter):
    def __init__(self, **kwargs):
        raise WeightsError("no model here")

    def segment(self, image):  # pragma: no cover - never built
        raise AssertionError


@pytest.fixture
def registry(monkeypatch):
    """The segmenter registry, restored after the test."""
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    return base._REGISTRY


def test_none_gives_one_segment_at_the_segment_shape():
    given = Segmentation(torch.ones(1, 1, 8, 8), ["sky"])
    out = segment_pair(torch.rand(1, 3, 80, 60), torch.rand(1, 3, 9, 7), method="none", content_mask=given,
                       style_mask=given, max_side=40)
    assert isinstance(out, SegmentationOutcome)
    assert out.segmenter == "none" and out.grouping is None and out.labels == ["all"] and not out.automatic
    assert out.content.size == (40, 30) and out.style.size == (9, 7) and float(out.content.masks.min()) == 1
    assert out.to_dict() == {"segmenter": "none"} and out.mask_notes == []


def test_given_segmentations_are_used_as_they_are_whatever_the_method():
    content, style = Segmentation(torch.ones(1, 1, 4, 4), ["sky"]), Segmentation(torch.ones(1, 1, 5, 5), ["sky"])
    for method in ("auto", "masks"):
        out = segment_pair(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 9, 7), method=method, content_mask=content,
                           style_mask=style)
        assert out.content is content and out.style is style and out.to_dict() == {"segmenter": "given"}


def test_unknown_method_and_missing_masks_are_errors():
    image = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="auto"):
        segment_pair(image, image, method="hand")
    with pytest.raises(MaskError, match="content mask and a style mask"):
        segment_pair(image, image, method="masks", content_mask="a.png")
    with pytest.raises(MaskError, match="needs a content mask and a style mask"):
        segment_pair(image, image, method="masks")


@pytest.mark.skipif(not (DPST / "segmentation" / "in1.png").is_file(), reason="DPST benchmark not available")
def test_masks_of_a_benchmark_pair_are_matched_at_each_photo_size():
    content = load_image(DPST / "input" / "in1.png").tensor
    style = load_image(DPST / "style" / "tar1.png").tensor
    out = segment_pair(content, style, method="masks", content_mask=DPST / "segmentation" / "in1.png",
                       style_mask=DPST / "segmentation" / "tar1.png")
    assert out.segmenter == "given" and out.content.labels == out.style.labels
    assert out.content.size == tuple(content.shape[-2:]) and out.style.size == tuple(style.shape[-2:])
    hand = load_dpst_mask(DPST / "segmentation" / "in1.png")
    assert set(out.content.labels) <= set(hand.labels)


def test_auto_picks_regmatch_when_ade20k_is_missing(registry):
    registry["ade20k"] = MissingWeights
    backend, notes = choose_segmenter("auto")
    assert isinstance(backend, RegionMatchSegmenter) and backend.name == "regmatch"
    assert "regmatch" in notes[0]


def test_segmenters_on_vgg16_features_take_the_transfers_vgg16_weights(registry, tmp_path):
    """``--weights PATH`` serves segmentation too: no run needs the registry's file beside the user's."""
    registry["ade20k"] = MissingWeights
    mine = str(tmp_path / "my-vgg16.pth")
    for name in ("auto", "regmatch", "coseg"):
        backend, _ = choose_segmenter(name, mine)
        assert backend.weights == mine, name
    assert TransferConfig(weights=mine).vgg16_weights == mine
    assert TransferConfig(weights=mine, arch="vgg19").vgg16_weights == "default"  # VGG19 weights fit no VGG16


def test_auto_picks_ade20k_when_available(registry):
    registry["ade20k"] = FakeLabelled
    backend, notes = choose_segmenter("auto")
    assert isinstance(backend, FakeLabelled) and "ADE20K" in notes[0]


def test_unlabelled_backend_segments_the_pair_together():
    torch.manual_seed(0)
    content, style = torch.rand(1, 3, 40, 56), torch.rand(1, 3, 48, 36)
    out = segment_pair(content, style, segmenter=CoSegmenter(weights=None, size=64, iterations=20))
    assert out.segmenter == "coseg" and out.grouping is None
    assert out.content.labels == out.style.labels
    assert out.content.size == (40, 56) and out.style.size == (48, 36)


@pytest.mark.parametrize(("threshold", "groups"), [(0.9, ["sky", "tree", "plant"]), (0.6, ["sky", "tree"])])
def test_labelled_backend_groups_similar_labels(wn, threshold, groups):
    content, style = torch.rand(1, 3, 30, 20), torch.rand(1, 3, 24, 32)
    out = segment_pair(content, style, segmenter=FakeLabelled(), threshold=threshold, metric="li")
    assert out.segmenter == "fake-labelled"
    assert out.content.labels == out.style.labels == groups == out.grouping["groups"]
    assert out.content.size == (30, 20) and out.style.size == (24, 32)
    if threshold == 0.6:  # tree (0.67 similar to plant) absorbed plant: its mask is the bottom two thirds
        assert torch.equal(out.content.masks[0, 1], (torch.arange(30) >= 10).float().view(30, 1).expand(30, 20))
        assert any(d["label"] == "plant" and d["mapped_to"] == "tree" for d in out.grouping["decisions"])


def test_overlay_draws_tint_and_legend(tmp_path):
    image = torch.full((1, 3, 60, 80), 0.5)
    seg = Segmentation(torch.stack([torch.ones(60, 80), torch.zeros(60, 80)]).unsqueeze(0), ["sky", "concept-1"])
    legend = save_overlay(image, seg, tmp_path / "o.png")
    out = load_image(tmp_path / "o.png").tensor
    assert out.shape == image.shape
    blue = torch.tensor(legend["sky"]) / 255  # "sky" is not a DPST colour name: it takes the first free one
    assert torch.allclose(out[0, :, -1, -1], 0.5 * 0.5 + 0.5 * blue, atol=0.01)  # tinted far from the legend
    assert not torch.allclose(out[0, :, 2, 2], out[0, :, -1, -1], atol=0.05)  # legend box in the corner


def test_cli_segment_writes_masks_overlays_and_grouping(tmp_path, registry, wn):
    registry["fake-labelled"] = FakeLabelled
    for name, size in (("a.png", (30, 40)), ("b.png", (36, 28))):
        save_image(torch.rand(1, 3, *size), tmp_path / name)
    out = tmp_path / "out"
    code = main(["segment", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(out),
                 "--segmenter", "fake-labelled", "--semantic-threshold", "0.6", "-q"])
    assert code == 0
    for role in ("content", "style"):
        assert (out / f"{role}_mask.png").is_file() and (out / f"{role}_overlay.png").is_file()
    assert load_dpst_mask(out / "style_mask.png", min_pixels=0).size == (36, 28)
    summary = json.loads((out / "grouping.json").read_text())
    assert summary["segmenter"] == "fake-labelled" and summary["grouping"]["groups"] == ["sky", "tree"]
    assert summary["images"]["content"]["labels"] == ["sky", "tree"]

    code = main(["segment", str(tmp_path / "a.png"), "-o", str(tmp_path / "one"), "--segmenter", "fake-labelled", "-q"])
    assert code == 0 and (tmp_path / "one" / "image_overlay.png").is_file()
    assert json.loads((tmp_path / "one" / "grouping.json").read_text())["images"]["image"]["labels"] == [
        "sky", "tree", "plant"]
    assert main(["segment", str(tmp_path / "a.png"), "-o", str(out), "--segmenter", "nope", "-q"]) == 2


class FakePairing(Segmenter):
    """Unlabelled: top half / bottom half of each photo, the style's halves swapped, with a pairing record."""

    name = "fake-pairing"

    def segment(self, image: torch.Tensor) -> Segmentation:  # pragma: no cover - segment_pair is used
        raise AssertionError

    def segment_pair(self, content, style):
        def halves(image, flip):
            h, w = image.shape[-2:]
            top = (torch.arange(h) < h // 2).float().view(h, 1).expand(h, w)
            masks = torch.stack([1 - top, top] if flip else [top, 1 - top])[None]
            return Segmentation(masks, ["region-0", "region-1"])

        class Record:
            def to_dict(self):
                return {"pairs": [{"label": "region-0", "source": "matched", "similarity": 0.9, "confidence": 0.97},
                                  {"label": "region-1", "source": "global", "similarity": 0.2, "confidence": 0.0}]}

        self.last_pairing = Record()
        return halves(content, False), halves(style, True)


def test_unlabelled_parts_are_named_in_words_and_the_pairing_is_reported(tmp_path, registry):
    content = torch.zeros(1, 3, 40, 60)
    content[0, 2, :20], content[0, 1, 20:] = 0.9, 0.6  # blue top, green bottom
    style = content.flip(-2)
    out = segment_pair(content, style, segmenter=FakePairing())
    assert out.content.labels == out.style.labels == ["top blue", "bottom green"] and not out.named
    top, bottom = out.pairing
    assert top["label"] == "top blue" and top["confidence"] == 0.97 and top["style"]["where"] == "bottom"
    assert bottom["source"] == "global" and "no confident partner" in bottom["text"]
    # the command line's segment says the same, in grouping.json and on stderr
    registry["fake-pairing"] = FakePairing
    save_image(content, tmp_path / "a.png")
    save_image(style, tmp_path / "b.png")
    assert main(["segment", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(tmp_path / "o"),
                 "--segmenter", "fake-pairing", "--min-segment", "0"]) == 0
    summary = json.loads((tmp_path / "o" / "grouping.json").read_text())
    assert [p["label"] for p in summary["pairing"]] == ["top blue", "bottom green"]
    assert summary["pairing"][0]["text"].startswith("top blue (50% of content) <- bottom blue of the style (50%)")
