"""Metrics of the benchmark on tiny synthetic images with known answers."""

import pytest
import torch

from photostyle.bench.metrics import (
    GRAM_LAYERS,
    LPIPS_SCALE,
    LPIPS_SHIFT,
    Evaluator,
    gram_key,
    segment_colour_distance,
    segment_gram_distance,
    segment_gram_distances,
    sliced_wasserstein,
    ssim_luminance,
)
from photostyle.errors import InputError
from photostyle.matting import affine_energy_per_pixel
from photostyle.weights import IMAGENET_MEAN, IMAGENET_STD


def _smooth_image(h: int = 48, w: int = 64, seed: int = 0) -> torch.Tensor:
    """A photo-like image: smooth random colours, (1, 3, h, w) in [0.1, 0.9]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, h // 8, w // 8, generator=g)
    return 0.1 + 0.8 * torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic").clamp(0, 1)


@pytest.fixture(scope="module")
def evaluator() -> Evaluator:
    torch.manual_seed(0)
    return Evaluator(weights=None, eval_size=64)


def _halves(h: int, w: int) -> torch.Tensor:
    masks = torch.zeros(1, 2, h, w)
    masks[:, 0, : h // 2] = 1
    masks[:, 1, h // 2 :] = 1
    return masks


def test_identical_images_score_perfectly(evaluator):
    content = _smooth_image()
    masks = _halves(48, 64)
    targets = evaluator.targets(content, content, masks, masks)
    scores = evaluator.score(content, targets)
    assert scores["lpips"] == pytest.approx(0.0, abs=1e-6)
    assert scores["ssim"] == pytest.approx(1.0, abs=1e-5)
    assert scores["gram"] == pytest.approx(0.0, abs=1e-5)
    assert scores["colour"] == pytest.approx(0.0, abs=1e-3)
    assert scores["matting"] == pytest.approx(0.0, abs=1e-3)


def test_different_images_score_worse(evaluator):
    content, other = _smooth_image(seed=0), _smooth_image(seed=1)
    targets = evaluator.targets(content, content, None, None)
    scores = evaluator.score(other, targets)
    assert scores["lpips"] > 0.01
    assert scores["ssim"] < 0.9
    assert scores["gram"] > 0.01
    assert scores["colour"] > 1.0


def test_score_resizes_to_the_content(evaluator):
    content = _smooth_image(96, 128)
    targets = evaluator.targets(content, content, None, None)
    assert tuple(targets.content.shape[-2:]) == (48, 64)
    assert evaluator.score(content, targets)["lpips"] == pytest.approx(0.0, abs=1e-6)


def test_lpips_scaling_is_imagenet_normalisation():
    # LPIPS' ScalingLayer on [-1, 1] input equals ImageNet mean/std on [0, 1] input.
    for shift, scale, mean, std in zip(LPIPS_SHIFT, LPIPS_SCALE, IMAGENET_MEAN, IMAGENET_STD):
        assert (shift + 1) / 2 == pytest.approx(mean, abs=1e-9)
        assert scale / 2 == pytest.approx(std, abs=1e-9)


def test_matting_energy_affine_recolouring_vs_noise():
    content = _smooth_image()
    matrix = torch.tensor([[0.6, 0.2, 0.1], [0.1, 0.5, 0.2], [0.2, 0.1, 0.4]])
    recoloured = torch.einsum("ij,bjhw->bihw", matrix, content) + torch.tensor([0.05, 0.1, 0.2]).view(1, 3, 1, 1)
    noisy = (content + 0.05 * torch.randn(content.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    affine = affine_energy_per_pixel(recoloured, content)
    noise = affine_energy_per_pixel(noisy, content)
    assert affine < 1e-6
    assert noise > 1e3 * max(affine, 1e-9)


def test_sliced_wasserstein_of_a_shift_is_the_shift():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3000, 3, generator=g) * torch.tensor([10.0, 3.0, 5.0])
    shift = torch.tensor([3.0, -4.0, 12.0])
    assert float(sliced_wasserstein(x, x + shift)) == pytest.approx(13.0, rel=1e-4)
    assert float(sliced_wasserstein(x, x)) == pytest.approx(0.0, abs=1e-6)
    # Deterministic, and symmetric.
    y = torch.randn(2000, 3, generator=g)
    assert float(sliced_wasserstein(x, y)) == float(sliced_wasserstein(x, y))
    assert float(sliced_wasserstein(x, y)) == pytest.approx(float(sliced_wasserstein(y, x)), rel=1e-5)


def test_sliced_wasserstein_subsampled_shift():
    x = torch.randn(40_000, 3, generator=torch.Generator().manual_seed(1))
    shifted = x + torch.tensor([0.0, 2.0, 0.0])
    assert float(sliced_wasserstein(x, shifted, max_points=5000)) == pytest.approx(2.0, rel=1e-4)


def test_sliced_wasserstein_rejects_bad_input():
    with pytest.raises(InputError):
        sliced_wasserstein(torch.randn(10, 3), torch.randn(10, 3), directions=64)
    with pytest.raises(InputError):
        sliced_wasserstein(torch.randn(0, 3), torch.randn(10, 3))


def test_colour_distance_is_per_segment():
    # Top half red, bottom half blue in both images: per segment identical colours.
    image = torch.zeros(1, 3, 32, 32)
    image[:, 0, :16] = 0.8
    image[:, 2, 16:] = 0.8
    masks = _halves(32, 32)
    assert float(segment_colour_distance(image, image, masks, masks)) == pytest.approx(0.0, abs=1e-3)
    # Swapping the style's segments makes every segment compare red with blue.
    swapped = masks.flip(1)
    assert float(segment_colour_distance(image, image, masks, swapped)) > 50


def test_gram_distance_weights_segments_by_area():
    g = torch.Generator().manual_seed(0)
    feats = {"conv1_1": torch.rand(1, 4, 8, 8, generator=g)}
    style = {"conv1_1": feats["conv1_1"].clone()}
    style["conv1_1"][:, :, 4:] *= 2  # bottom half's Gram is 4x: relative error 3/4
    masks = _halves(8, 8)
    value = segment_gram_distance(feats, style, masks, masks, layers=["conv1_1"])
    assert float(value) == pytest.approx(0.5 * 0.0 + 0.5 * 0.75, rel=1e-5)


def test_gram_distance_per_layer_and_its_mean():
    g = torch.Generator().manual_seed(0)
    feats = {"conv1_1": torch.rand(1, 4, 8, 8, generator=g), "conv2_1": torch.rand(1, 6, 4, 4, generator=g)}
    style = {name: f.clone() for name, f in feats.items()}
    style["conv2_1"] *= 2  # Gram 4x everywhere: relative error 3/4 in conv2_1, none in conv1_1
    masks = _halves(8, 8)
    layers = ["conv1_1", "conv2_1"]
    per_layer = segment_gram_distances(feats, style, masks, masks, layers=layers)
    assert per_layer.tolist() == pytest.approx([0.0, 0.75], abs=1e-5)
    assert float(segment_gram_distance(feats, style, masks, masks, layers=layers)) == pytest.approx(0.375, rel=1e-5)


def test_score_reports_the_gram_distance_of_each_layer(evaluator):
    content, other = _smooth_image(seed=0), _smooth_image(seed=1)
    scores = evaluator.score(other, evaluator.targets(content, content, _halves(48, 64), _halves(48, 64)))
    per_layer = [scores[gram_key(layer)] for layer in GRAM_LAYERS]
    assert min(per_layer) > 0 and scores["gram"] == pytest.approx(sum(per_layer) / len(per_layer), rel=1e-5)


def test_ssim_luminance():
    x = _smooth_image()
    assert float(ssim_luminance(x, x)) == pytest.approx(1.0, abs=1e-6)
    assert float(ssim_luminance(x, 1 - x)) < 0
    with pytest.raises(InputError):
        ssim_luminance(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))
