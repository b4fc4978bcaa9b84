"""BRISQUE (Mittal, Moorthy & Bovik 2012) as a differentiable torch critic.

A port of the PyPI package ``brisque==0.2.0`` (Apache-2.0, Rehan Guha) that reproduces its
``BRISQUE().score(image)``, including its particular choices:

* grey = ``0.2125 R + 0.7154 G + 0.0721 B`` (scikit-image ``rgb2gray``), in [0, 1];
* MSCN with a 7x7 Gaussian (sigma 7/6), zero padding, ``c = 1/255``;
* AGGD fits (shape by exact root, zeros counted right) of the MSCN coefficients,
  ``[alpha, (sl^2 + sr^2) / 2]``, and of their horizontal, vertical and two diagonal
  products, ``[alpha, mean, sl^2, sr^2]``: 18 features;
* the same on the image halved by OpenCV's bicubic ``resize(fx=fy=0.5)``: 36 features;
* features scaled to [-1, 1] with the package's ranges, then its epsilon-SVR with an RBF
  kernel (770 support vectors, gamma 0.05).

The model (``data/brisque_svr.npz``) is the package's ``models/svm.txt`` and
``models/normalize.pickle`` converted to float64 arrays (numbers unchanged); it ships with
photostyle, so this critic needs no download. Scores are about 0 (pristine) to 100 (badly
distorted), lower is better; natural photos score roughly 5 to 40.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .base import Critic, check_image, load_packaged_npz
from .nss import aggd_fit, mscn

_MODEL_FILE = "brisque_svr.npz"
_MODEL_SHA256 = "e71535c8a1fdc2061a2bb436f5d9f977c2d499cd85ac3a1eafd726a2e5829115"
_GREY = (0.2125, 0.7154, 0.0721)
#: OpenCV's bicubic (A = -0.75) weights for a sample half-way between pixels 2k and 2k+1.
_CV_CUBIC_HALF = (-0.09375, 0.59375, 0.59375, -0.09375)


def gaussian_window(size: int, sigma: float) -> torch.Tensor:
    """``(size, size)`` normalised Gaussian, float64, centred on pixel ``size // 2``."""
    y, x = np.indices((size, size)) - size // 2
    window = np.exp(-(x**2 + y**2) / (2 * sigma**2))
    return torch.from_numpy(window / window.sum())


def opencv_half_bicubic(grey: torch.Tensor) -> torch.Tensor:
    """OpenCV ``resize(fx=0.5, fy=0.5, interpolation=INTER_CUBIC)``, differentiable.

    Output size ``round_half_even(H / 2) x round_half_even(W / 2)`` as OpenCV's ``cvRound``;
    borders replicate; no antialiasing (as OpenCV).

    Args:
        grey: ``(B, 1, H, W)``.

    Returns:
        ``(B, 1, H', W')``.
    """
    h, w = grey.shape[-2:]
    out_h, out_w = round(h / 2), round(w / 2)  # Python rounds half to even, like cvRound
    x = F.pad(grey, (1, 2 * out_w + 1 - w, 1, 2 * out_h + 1 - h), mode="replicate")
    taps = torch.tensor(_CV_CUBIC_HALF, dtype=grey.dtype, device=grey.device)
    x = F.conv2d(x, taps.view(1, 1, 1, 4), stride=(1, 2))
    return F.conv2d(x, taps.view(1, 1, 4, 1), stride=(2, 1))


def brisque_features(grey: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """The 18 BRISQUE features of one scale, in the ``brisque`` package's order.

    Args:
        grey: ``(B, 1, H, W)`` in [0, 1].
        window: the ``(7, 7)`` Gaussian.

    Returns:
        ``(B, 18)``.
    """
    m = mscn(grey, window, c=1 / 255, padding="zeros")[:, 0]
    fit = aggd_fit(m.flatten(1), zero_is_right=True, snap_to_grid=False)
    features = [fit.alpha, (fit.std_left**2 + fit.std_right**2) / 2]
    products = (
        m[:, :, :-1] * m[:, :, 1:],  # horizontal
        m[:, :-1, :] * m[:, 1:, :],  # vertical
        m[:, :-1, :-1] * m[:, 1:, 1:],  # main diagonal
        m[:, 1:, :-1] * m[:, :-1, 1:],  # secondary diagonal
    )
    for product in products:
        fit = aggd_fit(product.flatten(1), zero_is_right=True, snap_to_grid=False)
        features += [fit.alpha, fit.mean, fit.std_left**2, fit.std_right**2]
    return torch.stack(features, dim=1)


class BRISQUE(Critic):
    """Differentiable BRISQUE score, lower is better (about 0..100).

    Matches ``brisque==0.2.0``'s ``BRISQUE().score`` on 8-bit photos to about 1e-6, and to
    about 2e-3 on photos with flat (saturated) areas, where the package's rounding noise
    decides which side of 0 a few coefficients fall (see ``tests/test_critic.py``). Computes in float64 on the image's device.

    :meth:`loss` is ``max(score, 0) / 10``: its magnitude (about 0.5..4 for photos) is
    comparable with NIMA's ``10 - mean score``, and scores below 0, outside the range the SVR
    was trained on (an optimiser reaches them with imperceptible adversarial changes), earn
    nothing.

    Example:
        >>> critic = BRISQUE()
        >>> critic(torch.rand(2, 3, 64, 64)).shape
        torch.Size([2])
    """

    name = "brisque"
    higher_is_better = False
    loss_scale = 0.1
    min_size = 16

    def __init__(self) -> None:
        super().__init__()
        model = load_packaged_npz(_MODEL_FILE, _MODEL_SHA256)
        self.register_buffer("support_vectors", torch.from_numpy(model["support_vectors"]))  # (770, 36)
        self.register_buffer("dual_coef", torch.from_numpy(model["dual_coef"]))  # (770,)
        self.register_buffer("feature_min", torch.from_numpy(model["feature_min"]))  # (36,)
        self.register_buffer("feature_max", torch.from_numpy(model["feature_max"]))  # (36,)
        self.register_buffer("window", gaussian_window(7, 7 / 6))
        self.rho = float(model["rho"])
        self.gamma = float(model["gamma"])

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """The 36 unscaled BRISQUE features, ``(B, 36)`` float64, of ``(B, 3, H, W)`` RGB in [0, 1]."""
        check_image(image, self.min_size, self.name)
        weights = torch.tensor(_GREY, dtype=torch.float64, device=image.device).view(1, 3, 1, 1)
        grey = (image.double() * weights).sum(1, keepdim=True)
        return torch.cat(
            [brisque_features(grey, self.window), brisque_features(opencv_half_bicubic(grey), self.window)], dim=1
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """BRISQUE scores ``(B,)`` of ``(B, 3, H, W)`` RGB in [0, 1], H and W >= 16."""
        scaled = -1 + 2 * (self.features(image) - self.feature_min) / (self.feature_max - self.feature_min)
        distance = ((scaled.unsqueeze(1) - self.support_vectors) ** 2).sum(-1)  # (B, 770)
        score = torch.exp(-self.gamma * distance) @ self.dual_coef - self.rho
        return score.to(image.dtype)

    def loss_from_score(self, score: torch.Tensor) -> torch.Tensor:
        """``max(score, 0) / 10``: lower BRISQUE is better, down to 0."""
        return score.clamp(min=0) * self.loss_scale
