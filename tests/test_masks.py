import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from photostyle.errors import MaskError
from photostyle.masks import (
    DPST_COLOURS,
    Segmentation,
    load_dpst_mask,
    match_segmentations,
    save_colour_mask,
)

DPST = Path(__file__).resolve().parents[2] / "shared" / "benchmark" / "dpst"
BLOCK = 12  # 10x10 interior pixels per block, above the default min_pixels of 64


def _nine_colour_mask(jitter: float = 0.0, seed: int = 0) -> np.ndarray:
    """A 12x108 mask: one 12x12 block per DPST colour, in DPST_COLOURS order."""
    colours = np.array(list(DPST_COLOURS.values()), dtype=np.float64)
    rgb = np.repeat(np.repeat(colours[None], BLOCK, axis=0), BLOCK, axis=1)
    noise = np.random.default_rng(seed).uniform(-jitter, jitter, rgb.shape)
    return np.clip(np.rint((rgb + noise) * 255), 0, 255).astype(np.uint8)


def _save(pixels: np.ndarray, path: Path) -> Path:
    Image.fromarray(pixels).save(path)
    return path


def _seg(labels, masks) -> Segmentation:
    return Segmentation(torch.as_tensor(masks, dtype=torch.float32).unsqueeze(0), list(labels))


@pytest.mark.parametrize("jitter", [0.0, 0.09])
def test_all_nine_colours_parsed(tmp_path, jitter):
    seg = load_dpst_mask(_save(_nine_colour_mask(jitter), tmp_path / "mask.png"))
    assert seg.labels == list(DPST_COLOURS)
    assert seg.masks.shape == (1, 9, BLOCK, 9 * BLOCK) and seg.is_hard()
    for k in range(9):
        expected = torch.zeros(BLOCK, 9 * BLOCK)
        expected[:, k * BLOCK : (k + 1) * BLOCK] = 1
        assert torch.equal(seg.masks[0, k], expected), seg.labels[k]


def test_unknown_colours_uncovered_and_reported(tmp_path, caplog):
    pixels = _nine_colour_mask()[:, : 2 * BLOCK].copy()  # blue | green
    pixels[:, :6] = (255, 128, 0)  # orange: no DPST colour
    with caplog.at_level(logging.INFO, logger="photostyle.masks"):
        seg = load_dpst_mask(_save(pixels, tmp_path / "mask.png"), min_pixels=0)
    assert seg.labels == ["blue", "green"]
    assert int(seg.masks.sum(1).eq(0).sum()) == 6 * BLOCK
    assert "72 pixels (25.0%) are not covered" in caplog.text


def test_mask_without_dpst_colours_raises(tmp_path):
    path = _save(np.full((8, 8, 3), (255, 128, 0), np.uint8), tmp_path / "orange.png")
    with pytest.raises(MaskError, match="blue, green, black, white, red, yellow, grey, lightblue, purple"):
        load_dpst_mask(path)


def test_size_mismatch_resized_with_warning(tmp_path):
    path = _save(_nine_colour_mask(), tmp_path / "mask.png")
    with pytest.warns(UserWarning, match=r"mask is 108x12 .* photo is 108x13"):
        seg = load_dpst_mask(path, size=(13, 108))
    assert seg.size == (13, 108) and seg.is_hard() and len(seg.labels) == 9


def test_antialiasing_seams_dropped(tmp_path):
    pixels = np.zeros((20, 20, 3), np.uint8)
    pixels[:, 10:] = 255
    pixels[:, 10] = 128  # one-pixel grey seam between black and white, as drawing tools leave
    path = _save(pixels, tmp_path / "mask.png")
    assert load_dpst_mask(path).labels == ["black", "white"]
    assert load_dpst_mask(path, min_pixels=0).labels == ["black", "white", "grey"]


def test_transparent_pixels_uncovered(tmp_path):
    pixels = np.zeros((BLOCK, BLOCK, 4), np.uint8)
    pixels[..., 3] = 255
    pixels[:3, :, 3] = 0
    seg = load_dpst_mask(_save(pixels, tmp_path / "mask.png"), min_pixels=0)
    assert seg.labels == ["black"] and seg.masks[0, 0, :3].sum() == 0 and seg.masks[0, 0, 3:].min() == 1


# ---- Segmentation ---------------------------------------------------------------------------


def test_segmentation_validates():
    with pytest.raises(ValueError, match="labels"):
        _seg(["a"], torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="distinct"):
        _seg(["a", "a"], torch.zeros(2, 4, 4))


def test_segmentation_methods():
    masks = torch.zeros(2, 4, 4)
    masks[0, :, :1] = 1
    masks[1, :, 1:] = 1
    seg = _seg(["sky", "tree"], masks)
    assert torch.allclose(seg.coverage(), torch.tensor([0.25, 0.75]))
    swapped = seg.select(["tree", "sky"])
    assert swapped.labels == ["tree", "sky"] and torch.equal(swapped.masks[0, 0], masks[1])
    with pytest.raises(KeyError, match="sky"):
        seg.select(["water"])
    big = seg.resize(8, 8)
    assert big.is_hard() and torch.allclose(big.coverage(), seg.coverage())
    soft = _seg(["a"], torch.full((1, 4, 4), 0.5)).resize(2, 2)
    assert torch.allclose(soft.masks, torch.full((1, 1, 2, 2), 0.5))
    assert seg.to(dtype=torch.float64).masks.dtype == torch.float64


# ---- matching -------------------------------------------------------------------------------


def test_match_segmentations():
    content = _seg(["sky", "tree", "water"], torch.eye(3).view(3, 1, 3).expand(3, 2, 3))
    style_masks = torch.zeros(3, 5, 5)
    style_masks[0, :2] = 1
    style_masks[1, 2:] = 1
    style = _seg(["tree", "sky", "road"], style_masks)
    c, s, notes = match_segmentations(content, style)
    assert c.labels == s.labels == ["sky", "tree", "water"]
    assert torch.equal(s.masks[0, 0], style_masks[1]) and torch.equal(s.masks[0, 1], style_masks[0])
    assert torch.equal(s.masks[0, 2], torch.ones(5, 5))  # water: whole style photo
    assert torch.equal(c.masks, content.masks)
    assert any("'water'" in n and "whole style photo" in n for n in notes)
    assert not any("'road'" in n for n in notes)  # road's mask is empty: not present
    assert len(notes) == 1


def test_match_drops_style_only_segments():
    content = _seg(["sky"], torch.ones(1, 3, 3))
    style = _seg(["sky", "road"], torch.stack([torch.eye(3), 1 - torch.eye(3)]))
    c, s, notes = match_segmentations(content, style)
    assert c.labels == s.labels == ["sky"]
    assert notes == ["style segment 'road' has no counterpart in the content photo: it is not used"]


# ---- writing --------------------------------------------------------------------------------


def test_colour_mask_round_trip(tmp_path):
    original = load_dpst_mask(_save(_nine_colour_mask(), tmp_path / "in.png"))
    legend = save_colour_mask(original, tmp_path / "out.png")
    assert legend["grey"] == (128, 128, 128)
    again = load_dpst_mask(tmp_path / "out.png")
    assert again.labels == original.labels and torch.equal(again.masks, original.masks)


def test_colour_mask_for_arbitrary_labels(tmp_path):
    labels = [f"class{i}" for i in range(11)] + ["red"]
    masks = torch.zeros(12, 12, 12)
    for k in range(12):
        masks[k, :, k] = 1
    masks[:, :, 0] = 0  # column 0 uncovered
    legend = save_colour_mask(_seg(labels, masks), tmp_path / "mask.png")
    assert legend["red"] == (255, 0, 0) and legend["class0"] == (0, 0, 255)  # first free DPST colour
    assert len(set(legend.values())) == 12
    pixels = np.asarray(Image.open(tmp_path / "mask.png"))
    assert tuple(pixels[0, 0]) == (40, 40, 40)
    assert all(tuple(pixels[0, k]) == legend[label] for k, label in enumerate(labels) if k)
    extra = np.array([legend["class9"], legend["class10"]]) / 255
    assert ((extra > 0.1) & (extra < 0.9)).all()  # never read back as a DPST colour


# ---- the benchmark's masks --------------------------------------------------------------------


@pytest.mark.skipif(not DPST.is_dir(), reason="shared DPST benchmark not available")
@pytest.mark.parametrize("pair", [1, 7])
def test_benchmark_masks(pair):
    photo = Image.open(DPST / "input" / f"in{pair}.png")
    size = (photo.height, photo.width)
    if pair == 7:
        with pytest.warns(UserWarning, match="700x393 .* 700x394"):
            content = load_dpst_mask(DPST / "segmentation" / f"in{pair}.png", size=size)
    else:
        content = load_dpst_mask(DPST / "segmentation" / f"in{pair}.png", size=size)
    style = load_dpst_mask(DPST / "segmentation" / f"tar{pair}.png")
    assert content.size == size
    for seg in (content, style):
        total = seg.masks.sum(1)
        assert total.max() == 1  # segments are disjoint
        assert total.mean() > 0.95  # and cover nearly everything (the rest: antialiased edges)
        assert "grey" not in seg.labels  # black/white seams, not a segment, in these pairs
    c, s, notes = match_segmentations(content, style)
    assert c.labels == s.labels and len(c.labels) >= 2
