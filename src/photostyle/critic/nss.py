"""Natural-scene-statistics building blocks shared by BRISQUE and NIQE, differentiable.

Both critics normalise a grey image into MSCN coefficients (mean-subtracted, contrast-normalised;
Mittal et al. 2012) and fit asymmetric generalised Gaussians (AGGD, Lasmar et al. 2009) to them
and to products of neighbouring coefficients. The fits are moment matching; the shape parameter
solves ``rho(alpha) = R`` where ``rho`` is the GGD moment ratio below. The reference packages
solve it with a lookup table (basicsr's NIQE) or a root finder (the ``brisque`` package); here
the root is found without gradients and one Newton step with gradients is added, so the value
is the reference's and the gradient is that of the exact inverse (implicit function theorem).

All functions work in the dtype they are given; the critics use float64.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

#: basicsr's NIQE lookup table of shapes, ``np.arange(0.2, 10.001, 0.001)`` (9801 values).
SHAPE_GRID = np.arange(0.2, 10.001, 0.001)
_TINY = 1e-20
#: MSCN magnitudes below this are rounding noise (an 8-bit step moves them by >= 1e-7).
_ROUNDING = 1e-10


def ggd_ratio(alpha: torch.Tensor) -> torch.Tensor:
    """``Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a))``: ``E|x|^2 / E[x^2]`` of a GGD of shape ``a``.

    Increasing from 0 (``a -> 0``) to 3/4 (``a -> inf``); ``2/pi`` for a Gaussian (``a = 2``).
    """
    a = alpha.reciprocal()
    return torch.exp(2 * torch.lgamma(2 * a) - torch.lgamma(a) - torch.lgamma(3 * a))


def _ggd_ratio_slope(alpha: torch.Tensor) -> torch.Tensor:
    """``d ggd_ratio / d alpha`` (closed form with digamma)."""
    a = alpha.reciprocal()
    dlog = -(a * a) * (4 * torch.digamma(2 * a) - torch.digamma(a) - 3 * torch.digamma(3 * a))
    return ggd_ratio(alpha) * dlog


@lru_cache(maxsize=8)
def _shape_table(dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """:data:`SHAPE_GRID` and its ratios, computed once per dtype and device."""
    grid = torch.as_tensor(SHAPE_GRID, dtype=dtype, device=device)
    return grid, ggd_ratio(grid)


def invert_ggd_ratio(ratio: torch.Tensor, *, snap_to_grid: bool) -> torch.Tensor:
    """The shape ``alpha`` in [0.2, 10] with ``ggd_ratio(alpha) = ratio``, differentiable.

    Args:
        ratio: any shape, values in (0, 3/4); values outside ``ggd_ratio([0.2, 10])`` are clamped
            (their gradient is then zero).
        snap_to_grid: ``True`` returns the nearest entry of :data:`SHAPE_GRID` in ratio space, as
            basicsr's NIQE does (value exactly basicsr's); ``False`` the exact root, as the
            ``brisque`` package's ``scipy.optimize.root``. The gradient is the exact inverse's
            ``1 / rho'(alpha)`` in both cases.

    Returns:
        ``alpha``, same shape and dtype as ``ratio``.
    """
    grid, table = _shape_table(ratio.dtype, ratio.device)
    ratio = ratio.clamp(table[0].item(), table[-1].item())
    with torch.no_grad():
        alpha = grid[torch.argmin((table - ratio.unsqueeze(-1)) ** 2, dim=-1)]
        if not snap_to_grid:
            for _ in range(6):  # Newton from within 0.0005 of the root: quadratic convergence
                alpha = (alpha - (ggd_ratio(alpha) - ratio) / _ggd_ratio_slope(alpha)).clamp(grid[0], grid[-1])
    step = (ratio - ggd_ratio(alpha)) / _ggd_ratio_slope(alpha)
    return alpha + (step - step.detach() if snap_to_grid else step)


class AGGDFit(NamedTuple):
    """Moment fit of an asymmetric generalised Gaussian, one value per fitted sample set."""

    alpha: torch.Tensor  # shape
    std_left: torch.Tensor  # sqrt of the mean square of the negative values
    std_right: torch.Tensor  # sqrt of the mean square of the positive values
    valid: torch.Tensor  # bool: both sides had values (the reference gives NaN otherwise)

    @property
    def scale(self) -> torch.Tensor:
        """``sqrt(Gamma(1/alpha) / Gamma(3/alpha))``: multiplies a std into the AGGD's beta."""
        a = self.alpha.reciprocal()
        return torch.exp(0.5 * (torch.lgamma(a) - torch.lgamma(3 * a)))

    @property
    def mean(self) -> torch.Tensor:
        """``(beta_r - beta_l) Gamma(2/alpha) / Gamma(1/alpha)``, the AGGD's mean (Mittal eq. 8)."""
        a = self.alpha.reciprocal()
        return (self.std_right - self.std_left) * self.scale * torch.exp(torch.lgamma(2 * a) - torch.lgamma(a))


def aggd_fit(x: torch.Tensor, *, zero_is_right: bool, snap_to_grid: bool) -> AGGDFit:
    """Fit an AGGD to the values along the last dimension of ``x``.

    Args:
        x: ``(..., N)`` samples.
        zero_is_right: count exact zeros on the right side (``brisque`` package) or on neither
            (basicsr).
        snap_to_grid: see :func:`invert_ggd_ratio`.

    Returns:
        :class:`AGGDFit` of tensors of shape ``x.shape[:-1]``.
    """
    left = x < 0
    right = x >= 0 if zero_is_right else x > 0
    square = x * x
    n_left, n_right = left.sum(-1), right.sum(-1)
    std_left = torch.sqrt(((square * left).sum(-1) / n_left.clamp(min=1)).clamp(min=_TINY))
    std_right = torch.sqrt(((square * right).sum(-1) / n_right.clamp(min=1)).clamp(min=_TINY))
    gamma = std_left / std_right
    r_hat = x.abs().mean(-1) ** 2 / square.mean(-1).clamp(min=_TINY)
    ratio = r_hat * (gamma**3 + 1) * (gamma + 1) / (gamma**2 + 1) ** 2
    alpha = invert_ggd_ratio(ratio, snap_to_grid=snap_to_grid)
    return AGGDFit(alpha, std_left, std_right, (n_left > 0) & (n_right > 0))


def mscn(grey: torch.Tensor, window: torch.Tensor, *, c: float, padding: str) -> torch.Tensor:
    """Mean-subtracted contrast-normalised coefficients ``(I - mu) / (sigma + c)``.

    ``mu`` and ``sigma`` are the local mean and standard deviation under ``window``, with
    ``sigma = sqrt(|E[I^2] - mu^2|)`` as both reference packages compute it. Coefficients
    smaller than 1e-10 in magnitude (rounding noise in flat areas) are set to exactly 0.

    Args:
        grey: ``(B, 1, H, W)``.
        window: ``(k, k)`` weights summing to 1, k odd, symmetric.
        c: stabilising constant in the units of ``grey`` (1/255 for [0, 1], 1 for [0, 255]).
        padding: ``"zeros"`` (scipy ``convolve2d`` 'same') or ``"replicate"`` (ndimage 'nearest').

    Returns:
        ``(B, 1, H, W)``.
    """
    pad = window.shape[-1] // 2
    mode = {"zeros": "constant", "replicate": "replicate"}[padding]
    weight = window.to(grey)[None, None]
    padded = F.pad(grey, (pad, pad, pad, pad), mode=mode)
    mu = F.conv2d(padded, weight)
    variance = (F.conv2d(padded * padded, weight) - mu * mu).abs()
    coefficients = (grey - mu) / (torch.sqrt(variance.clamp(min=_TINY)) + c)
    # In flat areas I - mu is rounding noise whose sign depends on the summation order; zero
    # it, so that the left/right split of the AGGD fits does not depend on the backend.
    return coefficients * (coefficients.abs() > _ROUNDING)
