import torch
import torch.nn.functional as F
from kornia.color import rgb_to_grayscale

from photostyle.upsample import apply_local_affine, fit_local_affine, local_affine_upsample, texture_weight


def test_locally_affine_result_is_reproduced_exactly_at_same_size():
    torch.manual_seed(0)
    guide = torch.rand(1, 3, 30, 41)
    a = torch.tensor([[0.8, 0.1, 0.0], [0.0, 0.6, 0.2], [0.1, 0.0, 0.5]])
    target = torch.einsum("ij,bjhw->bihw", a, guide) + 0.1
    out = local_affine_upsample(guide, target, guide, eps=1e-8)
    assert (out - target).abs().max() < 1e-5


def test_tiles_join_without_seams():
    torch.manual_seed(0)
    coeffs = fit_local_affine(torch.rand(1, 3, 16, 20), torch.rand(1, 3, 16, 20))
    image = torch.rand(1, 3, 61, 77)
    whole = apply_local_affine(coeffs, image, tile_rows=1000)
    tiled = apply_local_affine(coeffs, image, tile_rows=7)
    assert torch.equal(whole, tiled)


def test_upsampled_from_half_size_is_close_to_full_size_fit():
    torch.manual_seed(0)
    # A smooth photo-like image and a smoothly varying recolouring of it.
    base = F.interpolate(torch.rand(1, 3, 8, 8), size=(64, 64), mode="bicubic", align_corners=False).clamp(0, 1)
    ramp = torch.linspace(0.7, 1.2, 64).view(1, 1, 1, 64)
    target = (base * ramp + 0.05).clamp(0, 1)
    half = F.interpolate(base, size=(32, 32), mode="area")
    half_target = F.interpolate(target, size=(32, 32), mode="area")
    out = local_affine_upsample(half, half_target, base)
    assert (out - target).abs().mean() < 0.01


def test_detail_one_reproduces_the_lightness_of_any_result_and_never_its_painted_colour():
    torch.manual_seed(0)
    guide = 0.2 + 0.6 * torch.rand(1, 3, 24, 30)
    result = 0.9 * guide + 0.05 + 0.05 * torch.randn(1, 3, 24, 30)  # a recolouring plus colour speckle
    affine = local_affine_upsample(guide, result, guide, detail=0.0)
    full = local_affine_upsample(guide, result, guide, detail=1.0)
    half = local_affine_upsample(guide, result, guide, detail=0.5)
    assert (rgb_to_grayscale(full) - rgb_to_grayscale(result)).abs().max() < 1e-5
    added = full - affine
    assert added.abs().mean() > 0.01 and torch.allclose(added, added.mean(dim=1, keepdim=True), atol=1e-6)
    assert torch.allclose(half, (affine + full) / 2, atol=1e-5)


def test_detail_is_carried_through_tiles():
    torch.manual_seed(0)
    guide, result = torch.rand(1, 3, 16, 20), torch.rand(1, 3, 16, 20)
    big = torch.rand(1, 3, 50, 61)
    whole = local_affine_upsample(guide, result, big, detail=0.7, tile_rows=1000)
    tiled = local_affine_upsample(guide, result, big, detail=0.7, tile_rows=9)
    assert torch.equal(whole, tiled)


def test_texture_weight_is_low_on_flat_and_high_on_textured_regions():
    torch.manual_seed(0)
    image = torch.full((1, 3, 20, 40), 0.5)
    image[..., 20:] = torch.rand(1, 3, 20, 20)
    weight = texture_weight(image, threshold=0.05)
    assert weight.shape == (1, 1, 20, 40)
    assert weight[..., :15].max() < 1e-6
    assert weight[..., 25:].min() > 0.8


def test_flat_regions_get_no_added_texture_and_no_blotches():
    torch.manual_seed(0)
    guide = torch.full((1, 3, 20, 40), 0.4)
    guide[..., 20:] = torch.rand(1, 3, 20, 20)
    painted = (guide + 0.1 * torch.randn(1, 3, 20, 40)).clamp(0, 1)  # texture everywhere
    kept = local_affine_upsample(guide, painted, guide, detail=1.0, flat=0.05, flat_radius=8)
    everywhere = local_affine_upsample(guide, painted, guide, detail=1.0)
    affine = local_affine_upsample(guide, painted, guide, detail=0.0)
    flat, textured = (..., slice(0, 15)), (..., slice(25, 40))
    # The 5x5 affine fit alone leaves blotches of the painted noise where the content is flat (std 0.016).
    assert kept[flat].std() < 0.4 * affine[flat].std() < 0.15 * everywhere[flat].std()
    assert torch.allclose(kept[textured], everywhere[textured], atol=0.05)  # texture stays where the content has it


def test_a_flat_sky_made_brighter_does_not_show_its_noise_several_times_over():
    """A dark sky with sensor noise (std 0.015 per channel, under the flatness threshold) whose result is three
    times as bright, as a colour transfer from a dark to a bright sky gives: the output takes the brightness,
    not three times the noise (an unregularised affine map would reproduce the result exactly)."""
    torch.manual_seed(0)
    sky = 0.2 + 0.015 * torch.randn(1, 3, 48, 64)
    result = (3 * sky).clamp(0, 1)
    out = local_affine_upsample(sky, result, sky, detail=0.75, flat=0.03, flat_radius=8)
    assert abs(float(out.mean()) - 0.6) < 0.03
    assert float(out.std()) < 1.8 * float(sky.std())  # 1.5x; 2.4x if flat regions had the textured ones' ridge
