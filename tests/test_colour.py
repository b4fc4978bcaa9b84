import torch
from kornia.color import rgb_to_lab

from photostyle.colour import blend_lab, segment_colour_transfer


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
