"""Tests of photostyle.critic: registry, NIMA end to end, and the BRISQUE / NIQE ports.

Reference values were computed by the reference packages themselves, in a separate
environment, on the synthetic photos that :func:`synthetic_photo` makes:

* BRISQUE: ``brisque==0.2.0`` (``BRISQUE(url=False).score(rgb_uint8)``; with numpy 2.2,
  as the package fails on numpy >= 2.4, scikit-image 0.26, opencv-python-headless 5.0,
  libsvm-official 3.37);
* NIQE: ``basicsr==1.4.2``'s ``calculate_niqe(bgr_float32, 0, input_order="HWC",
  convert_to="y")`` (basicsr is Apache-2.0; its functions were loaded from the sdist).

Neither package is a dependency of photostyle, so the numbers are recorded here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from photostyle.critic import BRISQUE, DEFAULT_OFFLINE_CRITIC, NIMA, NIQE, available_critics, get_critic, nima_vgg16, remap_state_dict
from photostyle.critic.brisque import opencv_half_bicubic
from photostyle.critic.niqe import matlab_half
from photostyle.critic.nss import ggd_ratio, invert_ggd_ratio
from photostyle.errors import InputError, WeightsError


def synthetic_photo(height: int, width: int, seed: int) -> np.ndarray:
    """A photo-like 8-bit RGB image ``(H, W, 3)``: sky gradient, soft shapes, texture, sensor noise."""
    rng = np.random.default_rng(seed)
    side = max(height, width)
    y, x = np.mgrid[0:height, 0:width] / side
    image = np.stack([0.45 + 0.35 * y, 0.6 + 0.2 * y, 0.95 - 0.4 * y], axis=-1)
    for _ in range(7):
        cy, cx = rng.uniform(0, 1, 2) * (height / side, width / side)
        r = rng.uniform(0.08, 0.3)
        inside = 1 / (1 + np.exp(((y - cy) ** 2 + (x - cx) ** 2 - r**2) / 0.002))
        image = image * (1 - inside[..., None]) + rng.uniform(0.05, 0.95, 3) * inside[..., None]
    texture = gaussian_filter(rng.normal(size=(height, width)), 1.5)
    image = image + 0.08 * texture[..., None] + 0.004 * rng.normal(size=image.shape)
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


def as_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255


#: (height, width, seed) of the reference photos.
PHOTOS = ((200, 300, 1), (240, 200, 2))
#: reference scores of synthetic_photo(*PHOTOS[i]): brisque==0.2.0 and basicsr==1.4.2 NIQE.
BRISQUE_REFERENCE = (47.796541688945325, 51.30166550029125)
NIQE_REFERENCE = (6.727788953695237, 7.908220822757309)


@pytest.fixture(scope="module")
def photos() -> list[torch.Tensor]:
    return [as_tensor(synthetic_photo(*spec)) for spec in PHOTOS]


# --- registry -------------------------------------------------------------------------------


def test_registry_lists_and_builds() -> None:
    assert available_critics() == ("nima", "brisque", "niqe", "none")
    assert get_critic("none") is None
    assert isinstance(get_critic("BRISQUE"), BRISQUE)
    assert isinstance(get_critic("niqe", reference=True), NIQE)
    assert DEFAULT_OFFLINE_CRITIC in available_critics()


def test_registry_errors_list_valid_choices() -> None:
    with pytest.raises(InputError, match="nima, brisque, niqe, none"):
        get_critic("musiq")
    with pytest.raises(InputError, match="block_size"):
        get_critic("niqe", blocks=3)


# --- BRISQUE --------------------------------------------------------------------------------


@pytest.mark.parametrize("index", range(len(PHOTOS)))
def test_brisque_matches_the_brisque_package(photos: list[torch.Tensor], index: int) -> None:
    # Observed difference 1e-6 (float32 output); 1e-3 leaves room for BLAS summation order.
    assert BRISQUE()(photos[index]).item() == pytest.approx(BRISQUE_REFERENCE[index], abs=1e-3)


def test_brisque_batch_equals_single(photos: list[torch.Tensor]) -> None:
    critic = BRISQUE()
    first = photos[0][..., :160, :160]
    batch = torch.cat([first, first.flip(-1)])
    assert torch.allclose(critic(batch), torch.cat([critic(first), critic(first.flip(-1))]), atol=1e-4)


def test_brisque_gradient_reaches_the_image_and_descends(photos: list[torch.Tensor]) -> None:
    critic = BRISQUE()
    image = photos[0][..., :128, :128].clone().requires_grad_()
    loss = critic.loss(image)
    loss.backward()
    grad = image.grad
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    with torch.no_grad():
        assert critic.loss(image - 1e-3 * grad / grad.norm()) < loss


def test_brisque_loss_gives_nothing_below_zero() -> None:
    critic = BRISQUE()
    assert critic.loss_from_score(torch.tensor([-20.0, 30.0])).tolist() == pytest.approx([0.0, 3.0])


def test_opencv_half_bicubic_reproduces_linear_ramps_and_cvround_sizes() -> None:
    ramp = torch.arange(41, dtype=torch.float64).view(1, 1, 1, 41).expand(1, 1, 9, 41)
    half = opencv_half_bicubic(ramp)
    assert half.shape[-2:] == (4, 20)  # cvRound(4.5) = 4, cvRound(20.5) = 20: half to even
    assert torch.allclose(half[0, 0, :, 1:-1], 2 * torch.arange(1, 19, dtype=torch.float64) + 0.5)


# --- NIQE -----------------------------------------------------------------------------------


@pytest.mark.parametrize("index", range(len(PHOTOS)))
def test_niqe_matches_basicsr(photos: list[torch.Tensor], index: int) -> None:
    # reference mode: observed <= 5e-4 here and on the DPST photos; basicsr computes in float32.
    assert NIQE(reference=True)(photos[index]).item() == pytest.approx(NIQE_REFERENCE[index], abs=2e-3)
    # smooth default (no Y rounding, no lookup table): observed 2 %, at most 3 % on the DPST photos.
    assert NIQE()(photos[index]).item() == pytest.approx(NIQE_REFERENCE[index], rel=0.04)


@pytest.mark.parametrize("reference", [False, True])
def test_niqe_gradient_reaches_the_image_and_descends(photos: list[torch.Tensor], reference: bool) -> None:
    critic = NIQE(reference=reference)
    image = photos[0].clone().requires_grad_()
    loss = critic.loss(image)
    loss.backward()
    grad = image.grad
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert grad[..., 192:, :].abs().sum() == 0  # rows past the last whole 96-pixel block are not scored
    if not reference:  # reference mode is piecewise constant (rounded Y): its gradient is a surrogate
        with torch.no_grad():
            assert critic.loss(image - 0.05 * grad / grad.norm()) < loss


def test_niqe_refuses_too_small_or_flat_images() -> None:
    critic = NIQE()
    with pytest.raises(InputError, match="at least 96"):
        critic(torch.rand(1, 3, 64, 300))
    with pytest.raises(InputError, match="two 96x96 blocks"):
        critic(torch.rand(1, 3, 100, 100))
    with pytest.raises(InputError, match="texture"):
        critic(torch.full((1, 3, 192, 192), 0.5))


def test_matlab_half_reproduces_linear_ramps() -> None:
    ramp = torch.arange(32, dtype=torch.float64).view(1, 1, 1, 32).expand(1, 1, 8, 32)
    half = matlab_half(ramp)
    assert half.shape[-2:] == (4, 16)
    assert torch.allclose(half[0, 0, :, 2:-2], 2 * torch.arange(2, 14, dtype=torch.float64) + 0.5)


def test_ggd_ratio_inverse_and_its_gradient() -> None:
    alpha = torch.tensor([0.3, 0.8, 2.0, 5.5], dtype=torch.float64)
    ratio = ggd_ratio(alpha).requires_grad_()
    assert torch.allclose(invert_ggd_ratio(ratio, snap_to_grid=False), alpha, atol=1e-10)
    assert torch.allclose(invert_ggd_ratio(ratio, snap_to_grid=True), alpha, atol=1e-3)
    assert ggd_ratio(torch.tensor(2.0, dtype=torch.float64)).item() == pytest.approx(2 / np.pi)
    torch.autograd.gradcheck(lambda r: invert_ggd_ratio(r, snap_to_grid=False), (ratio,))


# --- NIMA -----------------------------------------------------------------------------------


def tiny_nima() -> NIMA:
    torch.manual_seed(0)
    backbone = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=4), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten()
    )
    return NIMA(backbone, 32, input_size=64)


def test_nima_tiny_end_to_end() -> None:
    critic = tiny_nima().train()  # stays in eval mode: dropout off, scores deterministic
    assert not critic.training
    image = torch.rand(2, 3, 50, 70, requires_grad=True)
    p = critic.distribution(image)
    assert p.shape == (2, 10) and (p > 0).all()
    assert torch.allclose(p.sum(1), torch.ones(2))
    score = critic(image)
    assert ((score >= 1) & (score <= 10)).all()
    assert torch.allclose(score, p @ torch.arange(1.0, 11.0))
    assert torch.equal(score, critic(image))
    loss = critic.loss(image)
    assert loss.item() == pytest.approx(10 - score.mean().item())
    loss.backward()
    assert torch.isfinite(image.grad).all() and image.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in critic.parameters())


def test_nima_vgg16_loads_a_kentsyx_checkpoint(tmp_path) -> None:
    torch.manual_seed(0)
    model = nima_vgg16(weights=None)
    state = {k.removeprefix("backbone."): v for k, v in model.state_dict().items() if k.startswith("backbone.features")}
    state["classifier.1.weight"] = torch.randn(10, 25088) * 1e-3  # kentsyx: Dropout, Linear(25088, 10), Softmax
    state["classifier.1.bias"] = torch.randn(10)
    path = tmp_path / "epoch-82.pth"
    torch.save({f"module.{k}": v for k, v in state.items()}, path)
    loaded = nima_vgg16(weights=path)
    assert torch.equal(loaded.head[1].weight, state["classifier.1.weight"])
    assert torch.equal(loaded.backbone.features[28].bias, state["features.28.bias"])
    score = loaded(torch.rand(1, 3, 64, 80))
    assert 1 <= score.item() <= 10


def test_remap_state_dict_paper_layout() -> None:
    state = {
        "_baseline_model.features.0.weight": torch.zeros(64, 3, 3, 3),
        "_baseline_model.classifier.0.weight": torch.zeros(4096, 1),
        "_baseline_model.classifier.3.bias": torch.zeros(4096),
        "_baseline_model.classifier.6.weight": torch.zeros(10, 4096),
    }
    renamed, fc_layers = remap_state_dict(state)
    assert fc_layers
    assert set(renamed) == {"backbone.features.0.weight", "backbone.classifier.0.weight", "backbone.classifier.3.bias", "head.1.weight"}
    with pytest.raises(WeightsError, match="not a VGG16 NIMA checkpoint"):
        remap_state_dict({"fc.weight": torch.zeros(1000, 512)})


def test_nima_missing_weights_say_how_to_get_them(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PHOTOSTYLE_NIMA_WEIGHTS", str(tmp_path / "absent.pth"))
    with pytest.raises(WeightsError, match="kentsyx/Neural-IMage-Assessment.*brisque"):
        get_critic("nima")
