"""The texture stage: each segment's detail contrast moves towards the style's, never new texture."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from photostyle import pipeline
from photostyle.pipeline import TransferConfig, stylise
from photostyle.texture import MAX_GAIN, band_gains, match_texture
from photostyle.upsample import add_resampled


def _textured(height: int, width: int, amplitude: float, seed: int) -> torch.Tensor:
    """Mid-grey with fine random texture of the given amplitude: ``(1, 3, H, W)``."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(1, 1, height, width, generator=generator) - 0.5
    return (0.5 + amplitude * noise).expand(1, 3, height, width).clone()


def _halves(height: int, width: int, left_first: bool = True) -> torch.Tensor:
    """Two segments, the left and the right half: ``(1, 2, H, W)``."""
    left = torch.zeros(1, 1, height, width)
    left[..., : width // 2] = 1
    masks = torch.cat([left, 1 - left], dim=1)
    return masks if left_first else masks.flip(1)


def test_gains_follow_the_paired_segments_not_their_places():
    # the style is crisp on its right half, soft on its left; the result is medium everywhere. Segment 0 is the
    # result's left half and the style's right half (swapped places), so segment 0 must get crisper.
    result = _textured(40, 40, 0.2, seed=0)
    style = torch.cat([_textured(40, 20, 0.05, seed=1), _textured(40, 20, 0.6, seed=2)], dim=-1)
    gains = band_gains(result, style, _halves(40, 40), _halves(40, 40, left_first=False))
    assert gains.shape == (4, 2)
    assert (gains[:, 0] > 1).all() and (gains[:, 1] < 1).all()
    assert gains.max() <= MAX_GAIN and gains.min() >= 1 / MAX_GAIN


def test_matched_texture_has_the_style_energy_and_the_same_picture():
    result, style = _textured(48, 48, 0.1, seed=0), _textured(48, 48, 0.2, seed=1)
    masks = torch.ones(1, 1, 48, 48)
    out = match_texture(result, result, style, masks, masks, strength=1.0)
    detail = lambda x: (x - F.avg_pool2d(x, 9, 1, 4, count_include_pad=False)).std()  # noqa: E731
    assert detail(out) > 1.5 * detail(result)  # crisper, towards the style's contrast
    assert torch.corrcoef(torch.stack([out.flatten(), result.flatten()]))[0, 1] > 0.95  # its own detail, not new
    assert (out.mean() - result.mean()).abs() < 0.01  # tone kept
    assert torch.equal(match_texture(result, result, style, masks, masks, strength=0.0), result)


def test_flat_regions_are_left_alone():
    result = _textured(40, 40, 0.1, seed=0)
    content = result.clone()
    content[..., :, :20] = 0.5  # the content's left half is flat (a clear sky): its faint noise must not grow
    style = _textured(40, 40, 0.5, seed=1)
    masks = torch.ones(1, 1, 40, 40)
    out = match_texture(result, content, style, masks, masks, strength=1.0, flat=0.03)
    assert (out - result)[..., :, :14].abs().max() < 1e-3
    assert (out - result)[..., :, 26:].abs().mean() > 0.01


def test_added_change_is_resampled_in_tiles_without_seams():
    torch.manual_seed(0)
    change = torch.randn(1, 3, 9, 13) * 0.05
    image = torch.rand(1, 3, 61, 77) * 0.5 + 0.25
    whole = add_resampled(image.clone(), change, tile_rows=1000)
    tiled = add_resampled(image.clone(), change, tile_rows=7)
    assert torch.equal(whole, tiled)
    expected = image + F.interpolate(change, size=(61, 77), mode="bilinear", align_corners=False)
    assert (whole - expected.clamp(0, 1)).abs().max() < 1e-5


@pytest.mark.parametrize("detail_side", [10_000, 24], ids=["own-size", "resampled"])
def test_pipeline_applies_the_texture_stage_at_any_photo_size(monkeypatch, detail_side):
    monkeypatch.setattr(pipeline, "DETAIL_SIDE", detail_side)
    # the style has the content's spread of tones but in large blocks: no fine detail, so the result softens
    content = _textured(36, 48, 0.3, seed=0)
    style = F.interpolate(_textured(5, 5, 0.3, seed=1), size=(40, 40), mode="nearest")
    config = TransferConfig(size=32, iterations=2, weights=None, segmentation="none", texture=0.0)
    plain = stylise(content, style, config=config).image
    soft = stylise(content, style, config=replace(config, texture=1.0)).image
    assert soft.shape == plain.shape == content.shape
    fine = lambda x: (x - F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)).abs().mean()  # noqa: E731
    if detail_side > max(content.shape[-2:]):  # measured and changed at the photo's own size
        assert fine(soft) < 0.8 * fine(plain)
    else:  # measured at 24 px: a smooth change, resampled to the photo's size
        change = soft - plain
        assert change.abs().mean() > 0.005
        assert fine(change) < 0.5 * change.abs().mean()
