import torch
from kornia.color import rgb_to_lab

from photostyle.colour import MAX_CHROMA_RATIO, blend_lab, chroma_limits, scale_chroma, segment_colour_transfer


def _two_halves(h, w):
    m = torch.zeros(1, 2, h, w)
    m[:, 0, :, : w // 2] = 1
    m[:, 1, :, w // 2 :] = 1
    return m


def test_global_transfer_matches_lab_mean_and_std():
    torch.manual_seed(0)
    content = torch.rand(1, 3, 32, 32) * 0.5 + 0.25
    style = torch.rand(1, 3, 24, 40) * 0.3 + torch.tensor([0.6, 0.3, 0.1]).view(1, 3, 1, 1)
    out = segment_colour_transfer(content, style)
    lab_o, lab_s = rgb_to_lab(out), rgb_to_lab(style)
    assert torch.allclose(lab_o.mean((2, 3)), lab_s.mean((2, 3)), atol=1.5)
    assert torch.allclose(lab_o.std((2, 3)), lab_s.std((2, 3)), rtol=0.15, atol=0.5)


def test_each_segment_takes_its_own_colours():
    content = torch.full((1, 3, 20, 20), 0.5) + 0.05 * torch.rand(1, 3, 20, 20)
    style = torch.zeros(1, 3, 20, 20)
    style[:, 0, :, :10] = 0.9  # left red
    style[:, 2, :, 10:] = 0.9  # right blue
    m = _two_halves(20, 20)
    out = segment_colour_transfer(content, style, m, m, feather=0)
    left, right = out[0, :, :, :8].mean((1, 2)), out[0, :, :, 12:].mean((1, 2))
    assert left[0] > left[2] + 0.3
    assert right[2] > right[0] + 0.3


def test_mask_count_mismatch_is_an_error():
    content, style = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    try:
        segment_colour_transfer(content, style, _two_halves(8, 8), torch.ones(1, 1, 8, 8))
    except ValueError as err:
        assert "same number of segments" in str(err)
    else:
        raise AssertionError("expected ValueError")


def test_distribution_method_matches_the_style_distribution():
    torch.manual_seed(0)
    content = torch.rand(1, 3, 40, 40) * 0.4 + 0.3
    # A skewed style distribution that mean/std matching cannot reproduce.
    style = (torch.rand(1, 3, 40, 40) ** 3) * 0.8 + 0.1
    lab_s = rgb_to_lab(style)[0, 0].flatten().sort().values
    for method, bound in (("distribution", 1.5), ("reinhard", None)):
        out = segment_colour_transfer(content, style, method=method)
        lab_o = rgb_to_lab(out)[0, 0].flatten().sort().values
        err = (lab_o - lab_s).abs().mean()
        if bound is not None:
            assert err < bound
            hist_err = err
    assert hist_err < err  # distribution matching beats mean/std matching on the L quantiles


def test_distribution_method_matches_joint_colour_distribution_and_stays_in_gamut():
    torch.manual_seed(0)
    content = torch.rand(1, 3, 48, 48) * 0.5 + 0.25
    # Correlated style colours: dark reds and bright oranges, which per-channel matching cannot pair up.
    t = torch.rand(1, 1, 48, 48)
    style = torch.cat([0.4 + 0.6 * t, 0.05 + 0.5 * t**2, 0.05 * torch.ones_like(t)], 1)
    out = segment_colour_transfer(content, style, method="distribution")
    assert out.min() >= 0 and out.max() <= 1
    corr = lambda x: torch.corrcoef(x[0].flatten(1))[0, 1]  # noqa: E731
    assert abs(corr(out) - corr(style)) < 0.1
    assert torch.allclose(out.mean((2, 3)), style.mean((2, 3)), atol=0.03)


def test_a_soft_style_mask_weighs_its_pixels():
    """A style mask holding its dark half at weight 1/4 and its bright half at 1: a fifth of the
    result is dark (a hard mask over both halves would give a half)."""
    torch.manual_seed(0)
    content = torch.rand(1, 3, 40, 40)
    style = torch.full((1, 3, 40, 40), 0.9)
    style[..., :20, :] = 0.1
    weights = torch.ones(1, 1, 40, 40)
    weights[..., :20, :] = 0.25
    out = segment_colour_transfer(content, style, torch.ones(1, 1, 40, 40), weights, method="distribution")
    dark = float((out.mean(1) < 0.5).float().mean())
    assert abs(dark - 0.2) < 0.03
    hard = segment_colour_transfer(content, style, torch.ones(1, 1, 40, 40), torch.ones(1, 1, 40, 40),
                                   method="distribution")
    assert abs(float((hard.mean(1) < 0.5).float().mean()) - 0.5) < 0.03


def test_blend_lab_fades_lightness_and_colour_apart():
    torch.manual_seed(0)
    content = torch.rand(1, 3, 12, 14) * 0.6 + 0.2
    result = (content * torch.tensor([1.2, 0.9, 0.7]).view(1, 3, 1, 1) + 0.05).clamp(0, 1)
    assert blend_lab(content, result) is result
    assert torch.allclose(blend_lab(content, result, lightness=0.0, chroma=0.0), content, atol=1e-4)
    lab_c, lab_r = rgb_to_lab(content), rgb_to_lab(result)
    lab = rgb_to_lab(blend_lab(content, result, lightness=1.0, chroma=0.5))
    assert torch.allclose(lab[:, :1], lab_r[:, :1], atol=0.05)  # tone is the result's
    assert torch.allclose(lab[:, 1:], (lab_c[:, 1:] + lab_r[:, 1:]) / 2, atol=0.05)  # colour half-way
    lab = rgb_to_lab(blend_lab(content, result, lightness=0.0, chroma=1.0))
    assert torch.allclose(lab[:, :1], lab_c[:, :1], atol=0.05)
    assert torch.allclose(lab[:, 1:], lab_r[:, 1:], atol=0.05)


def _chroma(image):
    return rgb_to_lab(image)[:, 1:].norm(dim=1)


def test_chroma_limits_grey_a_segment_whose_style_is_grey_and_leave_a_colourful_one():
    torch.manual_seed(0)
    image = torch.rand(1, 3, 20, 20) * 0.6 + 0.2  # colourful everywhere
    style = torch.rand(1, 3, 20, 20) * 0.6 + 0.2
    style[:, :, :, :10] = style[:, :, :, :10].mean(dim=1, keepdim=True)  # left: black and white
    m = _two_halves(20, 20)
    factor = chroma_limits(image, style, m, m, feather=0)
    assert factor[..., :10].max() < 0.01
    assert factor[..., 10:].min() > 0.999  # as colourful as its style: untouched
    out = scale_chroma(image.clone(), factor)
    assert _chroma(out)[..., :10].mean() < 0.5 < 10 < _chroma(out)[..., 10:].mean()


def test_chroma_limits_never_add_colour_and_allow_up_to_the_ratio():
    torch.manual_seed(0)
    grey = torch.rand(1, 1, 16, 16).expand(1, 3, 16, 16) * 0.5 + 0.25
    tint = torch.tensor([0.04, 0.0, -0.04]).view(1, 3, 1, 1)
    style = grey + tint  # slightly warm
    assert float(chroma_limits(grey, style).min()) == 1.0  # a grey output is left grey
    twice = grey + 0.98 * MAX_CHROMA_RATIO * tint  # just within the ratio (chroma is near-linear here)
    assert float(chroma_limits(twice, style).min()) > 0.999
    far = grey + 6 * tint
    factor = chroma_limits(far, style)
    assert 0.2 < float(factor.mean()) < 0.5
    assert float(chroma_limits(far, style, strength=0.0).min()) == 1.0


def test_scale_chroma_keeps_lightness_and_hue_and_is_the_same_in_tiles():
    torch.manual_seed(0)
    image = torch.rand(1, 3, 24, 30) * 0.6 + 0.2
    factor = torch.rand(1, 1, 6, 8)
    whole = scale_chroma(image.clone(), factor)
    tiled = scale_chroma(image.clone(), factor, tile_rows=5)
    assert torch.allclose(whole, tiled, atol=1e-5)
    lab_in, lab_out = rgb_to_lab(image), rgb_to_lab(whole)
    assert (lab_in[:, 0] - lab_out[:, 0]).abs().max() < 0.05
    hue = lambda lab: torch.atan2(lab[:, 2], lab[:, 1])  # noqa: E731
    strong = _chroma(whole) > 2
    assert (hue(lab_in) - hue(lab_out))[strong].abs().max() < 1e-2
