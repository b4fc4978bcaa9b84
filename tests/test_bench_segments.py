"""Agreement of automatic segments with hand masks (``python -m photostyle.bench.segments``)."""

import math
from pathlib import Path

import pytest
import torch

from photostyle.bench.segments import evaluate_pairs, features_label_style, main, segment_agreement, start_colour
from photostyle.io import load_image, resize_long_side, save_image
from photostyle.masks import Segmentation
from photostyle.segmentation import base
from photostyle.segmentation.base import Segmenter

H, W = 8, 12
EXAMPLES = Path(__file__).parents[1] / "examples"


def _mask(rows: slice = slice(None), cols: slice = slice(None)) -> torch.Tensor:
    m = torch.zeros(H, W)
    m[rows, cols] = 1
    return m


LEFT, RIGHT = _mask(cols=slice(0, W // 2)), _mask(cols=slice(W // 2, W))
TOP, BOTTOM = _mask(rows=slice(0, H // 2)), _mask(rows=slice(H // 2, H))
# hand masks: the content's "black" is its left half and the style's "black" its top half
HAND_C = Segmentation(torch.stack([LEFT, RIGHT])[None], ["black", "white"])
HAND_S = Segmentation(torch.stack([TOP, BOTTOM])[None], ["black", "white"])


def _seg(*masks: torch.Tensor) -> Segmentation:
    return Segmentation(torch.stack(masks)[None], [f"r{k}" for k in range(len(masks))])


def test_right_pairing_scores_one():
    r = segment_agreement(_seg(LEFT, RIGHT), _seg(TOP, BOTTOM), HAND_C, HAND_S)
    assert r.content_iou == pytest.approx(1.0) and r.style_iou == pytest.approx(1.0) and r.cross == 0.0
    assert r.mapping == {"r0": "black", "r1": "white"} and r.regions == 2


def test_swapped_pairing_scores_zero_in_the_style_and_counts_as_cross_kind():
    r = segment_agreement(_seg(LEFT, RIGHT), _seg(BOTTOM, TOP), HAND_C, HAND_S)
    assert r.content_iou == pytest.approx(1.0) and r.style_iou == pytest.approx(0.0) and r.cross == pytest.approx(1.0)


def test_over_segmented_content_with_the_right_partners_loses_nothing():
    quarter_a, quarter_b = LEFT * _mask(rows=slice(0, H // 2)), LEFT * _mask(rows=slice(H // 2, H))
    r = segment_agreement(_seg(quarter_a, quarter_b, RIGHT), _seg(TOP, TOP, BOTTOM), HAND_C, HAND_S)
    assert r.content_iou == pytest.approx(1.0) and r.style_iou == pytest.approx(1.0)


def test_half_wrong_style_region_gives_a_partial_iou():
    """Label 0 (content left = black) takes the style's top-left quarter and bottom-left quarter."""
    left_style = _mask(cols=slice(0, W // 2))
    r = segment_agreement(_seg(LEFT, RIGHT), _seg(left_style, 1 - left_style), HAND_C, HAND_S)
    # black: predicted left half, truth top half: IoU 1/3; white likewise
    assert r.style_iou == pytest.approx(1 / 3)
    assert r.per_segment["black"] == (pytest.approx(1.0), pytest.approx(1 / 3))


def test_whole_style_photo_is_a_global_transfer_not_another_kind():
    r = segment_agreement(_seg(LEFT, RIGHT), _seg(torch.ones(H, W), BOTTOM), HAND_C, HAND_S)
    assert r.cross == 0.0 and r.style_iou < 1.0


def test_a_content_only_hand_segment_is_no_kind_of_the_style_photo():
    """Hand segment "sun" is in the content only, so its style segment is the whole style photo: it does not
    make a region that lies in the style's "white" (and a little in its "black") a cross-kind pairing."""
    sun = _mask(rows=slice(0, 2), cols=slice(W - 2, W))
    hand_c = Segmentation(torch.stack([LEFT, RIGHT - sun, sun])[None], ["black", "white", "sun"])
    hand_s = Segmentation(torch.stack([TOP, BOTTOM, torch.ones(H, W)])[None], ["black", "white", "sun"])
    mostly_bottom = _mask(rows=slice(H // 2 - 1, H))
    r = segment_agreement(_seg(LEFT, RIGHT - sun, sun), _seg(TOP, mostly_bottom, TOP), hand_c, hand_s)
    assert r.cross == 0.0
    r = segment_agreement(_seg(LEFT, RIGHT - sun, sun), _seg(mostly_bottom, TOP, TOP), hand_c, hand_s)
    assert r.cross == pytest.approx(float((LEFT + RIGHT - sun).sum()) / (H * W))  # all but the sun crossed


def test_a_style_segment_covering_most_of_the_photo_is_still_a_kind():
    """The style's "white" covers 92% of it but is a real segment, not the whole photo: styling the content's
    "black" from it is a cross-kind pairing."""
    black_s = _mask(rows=slice(0, 1), cols=slice(0, 8))
    hand_s = Segmentation(torch.stack([black_s, 1 - black_s])[None], ["black", "white"])
    r = segment_agreement(_seg(LEFT, RIGHT), _seg(BOTTOM, TOP), HAND_C, hand_s)
    assert r.cross == pytest.approx(0.5)


def test_labels_must_agree():
    with pytest.raises(ValueError, match="automatic labels differ"):
        segment_agreement(_seg(LEFT, RIGHT), Segmentation(torch.stack([TOP, BOTTOM])[None], ["a", "b"]),
                          HAND_C, HAND_S)


def _paint(mask: torch.Tensor, inside: tuple[float, float, float], outside: tuple[float, float, float]) -> torch.Tensor:
    a, b = torch.tensor(inside).view(3, 1, 1), torch.tensor(outside).view(3, 1, 1)
    return (mask * a + (1 - mask) * b)[None]


def test_start_colour_is_lowest_with_the_hand_pairing():
    """Content: grey left / light grey right; style: magenta top / green bottom (black = left = top).

    One segment for the whole photo sends the darker grey to the darker green: the wrong pairing.
    """
    content = _paint(LEFT, (0.3, 0.3, 0.3), (0.8, 0.8, 0.8))
    style = _paint(TOP, (0.8, 0.2, 0.7), (0.1, 0.7, 0.2))
    hand = (HAND_C, HAND_S)
    right = start_colour(content, style, (_seg(LEFT, RIGHT), _seg(TOP, BOTTOM)), hand)
    one = start_colour(content, style, (_seg(torch.ones(H, W)), _seg(torch.ones(H, W))), hand)
    swapped = start_colour(content, style, (_seg(LEFT, RIGHT), _seg(BOTTOM, TOP)), hand)
    assert right == pytest.approx(start_colour(content, style, hand, hand))
    assert right < 2.0 < 50.0 < min(one, swapped)  # Lab units: green and magenta are about 130 apart


class Halves(Segmenter):
    """Content: left/right halves; style: top/bottom halves (the hand masks' pairing)."""

    name = "test-halves"

    def segment(self, image):  # pragma: no cover - segment_pair is overridden
        raise AssertionError

    def segment_pair(self, content, style):
        def halves(image, vertical):
            h, w = image.shape[-2:]
            first = torch.zeros(h, w)
            if vertical:
                first[: h // 2] = 1
            else:
                first[:, : w // 2] = 1
            return Segmentation(torch.stack([first, 1 - first])[None], ["a", "b"])

        return halves(content, False), halves(style, True)


@pytest.fixture
def pairs_dir(tmp_path: Path) -> Path:
    """A DPST-layout folder with one pair whose hand masks are the halves above (blue = left / top)."""
    for sub in ("input", "style", "segmentation"):
        (tmp_path / sub).mkdir()
    save_image(torch.rand(1, 3, 16, 24), tmp_path / "input" / "in1.png")
    save_image(torch.rand(1, 3, 20, 20), tmp_path / "style" / "tar1.png")
    mask_c = torch.zeros(1, 3, 16, 24)
    mask_c[0, 2, :, :12] = 1  # blue left, black right
    mask_s = torch.zeros(1, 3, 20, 20)
    mask_s[0, 2, :10] = 1  # blue top, black bottom
    save_image(mask_c, tmp_path / "segmentation" / "in1.png")
    save_image(mask_s, tmp_path / "segmentation" / "tar1.png")
    return tmp_path


def test_evaluate_pairs_runs_a_segmenter_on_a_folder(pairs_dir):
    (r,) = evaluate_pairs(pairs_dir, segmenter=Halves())
    assert r.id == "1" and r.content_iou == pytest.approx(1.0) and r.style_iou == pytest.approx(1.0)
    assert r.seconds >= 0
    assert r.colour == pytest.approx(r.hand_colour)  # the same segments as the hand masks


def test_evaluate_pairs_can_skip_the_colour(pairs_dir):
    (r,) = evaluate_pairs(pairs_dir, segmenter=Halves(), colour=False)
    assert math.isnan(r.colour) and math.isnan(r.hand_colour)


def test_command_line_prints_the_table_and_means(pairs_dir, capsys, monkeypatch):
    monkeypatch.setattr(base, "_REGISTRY", {**base._REGISTRY, "test-halves": Halves})
    assert main(["--pairs", str(pairs_dir), "--segmenter", "test-halves"]) == 0
    out = capsys.readouterr().out
    assert "content" in out and "style" in out and "mean" in out and "worst" in out
    assert "1.000" in out and "colour" in out and "hand" in out


def test_features_label_the_style_by_the_content_hand_masks(vgg16):
    """Content: the rocket's sky on the left, the coffee cup on the right; style: the two swapped, from other
    parts of the same photos. The hand masks say which is which in the content; the features must find each
    kind on the other side of the style photo, and a content-only segment keeps the whole style photo."""
    rocket, coffee = (resize_long_side(load_image(EXAMPLES / n).tensor, 256) for n in ("rocket.jpg", "coffee.png"))
    sky, cup = rocket[..., :96, :96], coffee[..., 64:160, 80:176]
    sky2, cup2 = rocket[..., :96, 120:216], coffee[..., 48:144, 64:160]
    content, style = torch.cat([sky, cup], dim=-1), torch.cat([cup2, sky2], dim=-1)
    left, corner = torch.zeros(96, 192), torch.zeros(96, 192)
    left[:, :96], corner[80:, :16] = 1, 1  # the corner of the content's sky has no partner in the style
    hand_c = Segmentation(torch.stack([left - corner, 1 - left, corner])[None], ["sky", "cup", "only-content"])
    hand_s = Segmentation(torch.stack([1 - left, left, torch.ones(96, 192)])[None], ["sky", "cup", "only-content"])
    labelled = features_label_style(content, style, hand_c, hand_s)
    assert labelled.labels == hand_c.labels and labelled.masks.shape == (1, 3, 96, 192)
    assert bool((labelled.masks[0, 2] == 1).all())  # the whole style photo
    r = segment_agreement(hand_c, labelled, hand_c, hand_s)
    assert r.per_segment["sky"][1] > 0.8 and r.per_segment["cup"][1] > 0.8 and r.cross == 0.0
    swapped = Segmentation(hand_s.masks[:, [1, 0, 2]], hand_s.labels)
    assert start_colour(content, style, (hand_c, labelled), (hand_c, hand_s)) < 0.5 * start_colour(
        content, style, (hand_c, swapped), (hand_c, hand_s))


def test_bound_takes_no_segmenter(pairs_dir):
    with pytest.raises(SystemExit):
        main(["--pairs", str(pairs_dir), "--bound", "--segmenter", "regmatch"])


def test_evaluate_pairs_bound_gives_the_content_its_hand_masks(pairs_dir, vgg16):
    (r,) = evaluate_pairs(pairs_dir, bound=True)
    assert r.content_iou == pytest.approx(1.0) and r.regions == 2 and 0.0 <= r.style_iou <= 1.0
    assert math.isfinite(r.colour) and math.isfinite(r.hand_colour)
