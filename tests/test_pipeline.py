import torch
from kornia.color import rgb_to_lab

from photostyle.pipeline import TransferConfig, stylise

TINY = dict(size=32, iterations=3, weights=None, segmentation="none", lr=0.05)


def _pair() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    content = torch.rand(1, 3, 28, 32) * 0.5 + 0.25  # at working size: the upsample is exact
    style = torch.rand(1, 3, 36, 40) * torch.tensor([0.9, 0.5, 0.2]).view(1, 3, 1, 1)  # warm, dark
    return content, style


def test_strength_zero_returns_the_content():
    content, style = _pair()
    out = stylise(content, style, config=TransferConfig(**TINY, strength=0.0, detail=0.0)).image
    assert out.shape == content.shape
    assert (out - content).abs().max() < 1 / 255  # within one 8-bit level (Lab round trip, ridge eps)


def test_chroma_zero_changes_tone_but_keeps_the_contents_colours():
    content, style = _pair()
    full = stylise(content, style, config=TransferConfig(**TINY, detail=0.0, chroma=1.0)).image
    grey = stylise(content, style, config=TransferConfig(**TINY, detail=0.0, chroma=0.0)).image
    lab_c, lab_full, lab_grey = rgb_to_lab(content), rgb_to_lab(full), rgb_to_lab(grey)
    colour_shift = lambda lab: (lab[:, 1:] - lab_c[:, 1:]).abs().mean()  # noqa: E731
    assert colour_shift(lab_full) > 5 * colour_shift(lab_grey)
    assert (lab_grey[:, :1] - lab_c[:, :1]).abs().mean() > 3  # the style's tone still arrives


def test_a_black_and_white_style_gives_a_black_and_white_result():
    content, style = _pair()
    grey_style = style.mean(dim=1, keepdim=True).expand_as(style).contiguous()
    out = stylise(content, grey_style, config=TransferConfig(**TINY)).image
    assert rgb_to_lab(out)[:, 1:].norm(dim=1).max() < 0.5  # not a tint left, where the content is colourful
    assert rgb_to_lab(content)[:, 1:].norm(dim=1).mean() > 10


def test_flat_threshold_keeps_flat_regions_of_the_content_smooth():
    torch.manual_seed(0)
    content = torch.full((1, 3, 28, 32), 0.5)
    content[..., 16:] = torch.rand(1, 3, 28, 16)  # left half flat, right half textured
    _, style = _pair()
    config = dict(TINY, iterations=5, detail=1.0, init="noise")  # a noisy start leaves texture everywhere
    clean = stylise(content, style, config=TransferConfig(**config, flat_threshold=0.03)).image
    painted = stylise(content, style, config=TransferConfig(**config, flat_threshold=0.0)).image
    flat = (..., slice(0, 12))
    assert clean[flat].std() < 0.5 * painted[flat].std()


def test_bf16_features_give_the_fp32_result_within_a_few_levels_and_losses_stay_fp32(monkeypatch):
    from photostyle import runtime
    from photostyle.features import get_encoder
    from photostyle.runtime import compute_dtype, encode

    content, style = _pair()
    config = dict(TINY, iterations=5, detail=0.0)
    fp32 = stylise(content, style, config=TransferConfig(**config, precision="fp32"))
    bf16 = stylise(content, style, config=TransferConfig(**config, precision="bf16"))  # the CUDA path, run on CPU
    assert fp32.precision == "float32" and bf16.precision == "bfloat16"
    assert (fp32.image - bf16.image).abs().mean() < 2 / 255
    assert abs(bf16.loss["total"] - fp32.loss["total"]) < 0.05 * fp32.loss["total"]
    encoder = get_encoder("vgg16", None, ("conv1_1", "conv4_2"), "max", "cpu")
    feats = encode(encoder, content, torch.bfloat16)
    assert all(f.dtype == torch.float32 for f in feats.values())  # Gram matrices are summed in fp32
    assert compute_dtype("auto", torch.device("cuda")) == torch.bfloat16
    for native, expected in ((False, None), (True, torch.bfloat16)):  # bf16 on a CPU only where it is native
        monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda native=native: native)
        assert compute_dtype("auto", torch.device("cpu")) == expected
    assert compute_dtype("fp32", torch.device("cpu")) is None


def test_a_finer_level_starts_from_the_coarser_result_with_its_texture():
    content, style = _pair()
    content = torch.nn.functional.interpolate(content, size=(48, 64), mode="bilinear")  # levels at 32 and 64 px
    config = dict(TINY, size=64, levels=2, fine_iterations=0, init="noise", flat_threshold=0.0)  # a noisy coarse result
    affine = stylise(content, style, config=TransferConfig(**config, detail=0.0))
    textured = stylise(content, style, config=TransferConfig(**config, detail=1.0))
    assert affine.steps == textured.steps == 3 and affine.working.shape[-2:] == (48, 64)
    # with no steps at the finer level its image is the carried-over one: the painted texture kept or not
    assert (textured.working - affine.working).abs().mean() > 0.01
