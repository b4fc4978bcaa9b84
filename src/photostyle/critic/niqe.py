"""NIQE (Mittal, Soundararajan & Bovik 2013) as a differentiable torch critic.

A port of ``basicsr==1.4.2``'s ``calculate_niqe(img, crop_border=0, convert_to="y")``
(Apache-2.0, XPixel), which reproduces the authors' MATLAB release:

* Y of BT.601 YCbCr in [16, 235], rounded to integers;
* the image cropped to whole 96 x 96 blocks;
* MSCN with basicsr's 7x7 Gaussian window, 'nearest' borders, ``c = 1``;
* per block, AGGD fits (shape from a lookup table, zeros on neither side) of the
  MSCN coefficients, ``[alpha, (beta_l + beta_r) / 2]``, and of their products with the
  circularly shifted block (right, down, down-right, down-left), ``[alpha, mean, beta_l,
  beta_r]``: 18 features;
* the same on MATLAB's antialiased bicubic ``imresize(0.5)`` with 48 x 48 blocks: 36;
* a Gaussian fitted to the blocks' features, compared with the pristine model:
  ``sqrt((mu_p - mu)^T pinv((S_p + S) / 2) (mu_p - mu))``.

The pristine model ``data/niqe_pris_params.npz`` is the file basicsr ships
(``basicsr/metrics/niqe_pris_params.npz`` in the 1.4.2 sdist, sha256 below, unchanged); it
ships with photostyle, so this critic needs no download. Lower is better; natural photos
score about 2.5..6.

The rounding of Y and the lookup table make basicsr's score piecewise constant. With
``reference=True`` both are kept (straight-through: the value is basicsr's, the gradient
that of the smooth version); by default neither is, so that the loss is smooth and a line
search sees the function its gradient describes (the score moves by up to about 0.1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import InputError
from .base import Critic, check_image, load_packaged_npz
from .nss import AGGDFit, aggd_fit, mscn

_PARAMS_FILE = "niqe_pris_params.npz"
_PARAMS_SHA256 = "2a7c182a68c9e7f1b2e2e5ec723279d6f65d912b6fcaf37eb2bf03d7367c4296"
_Y = (65.481, 128.553, 24.966)  # BT.601 Y from RGB in [0, 1], offset 16
#: circular shifts (rows, columns) whose products with the block are fitted, basicsr's order.
_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))


def _matlab_half_taps(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """MATLAB ``imresize(0.5)`` antialiased bicubic (a = -0.5) weights: 8 taps, sum 1."""
    distance = torch.arange(3.5, -4.0, -1.0, dtype=torch.float64) / 2  # kernel stretched by 1/scale
    d = distance.abs()
    cubic = torch.where(d <= 1, 1.5 * d**3 - 2.5 * d**2 + 1, -0.5 * d**3 + 2.5 * d**2 - 4 * d + 2)
    return (cubic / cubic.sum()).to(dtype=dtype, device=device)


def matlab_half(image: torch.Tensor) -> torch.Tensor:
    """MATLAB's ``imresize(image, 0.5)`` (bicubic, antialiasing on), differentiable.

    As basicsr's ``imresize``: symmetric borders (edge pixel repeated). Output pixel k is the
    weighted sum of input pixels ``2k-3 .. 2k+4``.

    Args:
        image: ``(B, 1, H, W)`` with H and W even.

    Returns:
        ``(B, 1, H / 2, W / 2)``.
    """
    taps = _matlab_half_taps(image.dtype, image.device)
    for dim in (-1, -2):
        image = torch.cat([image.narrow(dim, 0, 3).flip(dim), image, image.narrow(dim, image.shape[dim] - 3, 3).flip(dim)], dim)
    image = F.conv2d(image, taps.view(1, 1, 1, 8), stride=(1, 2))
    return F.conv2d(image, taps.view(1, 1, 8, 1), stride=(2, 1))


def _blocks(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(B, 1, nh * h, nw * w)`` -> ``(B, nh * nw, h, w)`` non-overlapping blocks."""
    b, _, height, width = x.shape
    h, w = size
    x = x.view(b, height // h, h, width // w, w).permute(0, 1, 3, 2, 4)
    return x.reshape(b, -1, h, w)


def _beta(fit: AGGDFit) -> tuple[torch.Tensor, torch.Tensor]:
    return fit.std_left * fit.scale, fit.std_right * fit.scale


def block_features(mscn_blocks: torch.Tensor, *, snap_to_grid: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The 18 NIQE features of each block, in basicsr's order.

    Args:
        mscn_blocks: ``(B, N, h, w)`` MSCN coefficients of N blocks.
        snap_to_grid: shapes from basicsr's lookup table (see :func:`.nss.invert_ggd_ratio`).

    Returns:
        ``(B, N, 18)`` features and ``(B, N, 18)`` bool: which are defined (basicsr: not NaN).
    """
    fit = aggd_fit(mscn_blocks.flatten(2), zero_is_right=False, snap_to_grid=snap_to_grid)
    beta_l, beta_r = _beta(fit)
    features, valid = [fit.alpha, (beta_l + beta_r) / 2], [fit.valid] * 2
    for shift in _SHIFTS:
        product = mscn_blocks * torch.roll(mscn_blocks, shifts=shift, dims=(-2, -1))
        fit = aggd_fit(product.flatten(2), zero_is_right=False, snap_to_grid=snap_to_grid)
        beta_l, beta_r = _beta(fit)
        features += [fit.alpha, fit.mean, beta_l, beta_r]
        valid += [fit.valid] * 4
    return torch.stack(features, dim=-1), torch.stack(valid, dim=-1)


class NIQE(Critic):
    """Differentiable NIQE score, lower is better (about 2.5..6 for photos).

    With ``reference=True`` matches basicsr 1.4.2's ``calculate_niqe`` on 8-bit photos to
    about 2e-3, by default to about 0.1 (3 %; see ``tests/test_critic.py``). Needs at least
    two whole blocks (default 96 x 96 pixels) with texture; pixels past the last whole block
    are not scored (zero gradient). Computes in float64 on the image's device.

    :meth:`loss` is the score itself (its magnitude is already comparable with NIMA's
    ``10 - mean score``).

    Args:
        block_size: block side in pixels, even; 96 as the pristine model was built with.
        reference: round Y and snap shapes to the lookup table as basicsr does (exact value,
            straight-through gradient) instead of the smooth default.

    Example:
        >>> critic = NIQE()
        >>> critic(torch.rand(1, 3, 192, 96)).shape
        torch.Size([1])
    """

    name = "niqe"
    higher_is_better = False

    def __init__(self, *, block_size: int = 96, reference: bool = False) -> None:
        super().__init__()
        if block_size < 8 or block_size % 2:
            raise InputError(f"NIQE block_size must be an even number of pixels >= 8 but received {block_size}")
        params = load_packaged_npz(_PARAMS_FILE, _PARAMS_SHA256)
        self.register_buffer("mu_pristine", torch.from_numpy(params["mu_pris_param"][0]))  # (36,)
        self.register_buffer("cov_pristine", torch.from_numpy(params["cov_pris_param"]))  # (36, 36)
        self.register_buffer("window", torch.from_numpy(params["gaussian_window"]))  # (7, 7)
        self.block_size = block_size
        self.reference = reference

    def features(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-block features ``(B, N, 36)`` float64 and their validity ``(B, N, 36)`` bool."""
        check_image(image, self.block_size, self.name)
        weights = torch.tensor(_Y, dtype=torch.float64, device=image.device).view(1, 3, 1, 1)
        y = (image.double() * weights).sum(1, keepdim=True) + 16
        if self.reference:
            y = y + (y.round() - y).detach()
        size = self.block_size
        height, width = (image.shape[-2] // size) * size, (image.shape[-1] // size) * size
        y = y[..., :height, :width]
        scale1 = block_features(_blocks(mscn(y, self.window, c=1.0, padding="replicate"), (size, size)), snap_to_grid=self.reference)
        half = mscn(matlab_half(y), self.window, c=1.0, padding="replicate")
        scale2 = block_features(_blocks(half, (size // 2, size // 2)), snap_to_grid=self.reference)
        return torch.cat([scale1[0], scale2[0]], dim=-1), torch.cat([scale1[1], scale2[1]], dim=-1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """NIQE scores ``(B,)`` of ``(B, 3, H, W)`` RGB in [0, 1] with at least two whole blocks."""
        features, valid = self.features(image)
        rows = valid.all(-1)  # (B, N): blocks with every feature defined
        if int(rows.sum(-1).min()) < 2:
            raise InputError(
                f"NIQE needs at least two {self.block_size}x{self.block_size} blocks with texture but the image "
                f"{tuple(image.shape[-2:])} has {int(rows.sum(-1).min())}; use a larger image or the 'brisque' critic"
            )
        features = torch.where(valid, features, torch.zeros_like(features))
        mu = features.sum(1) / valid.sum(1).clamp(min=1)  # nanmean per feature
        scores = []
        for b in range(features.shape[0]):  # blocks with a NaN feature leave the covariance, as in basicsr
            cov = torch.cov(features[b][rows[b]].T)
            diff = self.mu_pristine - mu[b]
            scores.append(torch.sqrt(diff @ torch.linalg.pinv((self.cov_pristine + cov) / 2) @ diff))
        return torch.stack(scores).to(image.dtype)

    def loss_from_score(self, score: torch.Tensor) -> torch.Tensor:
        """The NIQE score itself: lower is better."""
        return score
