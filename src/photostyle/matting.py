"""Matrix-free Matting Laplacian of a content photo (Levin et al. 2008, as used by DPST).

The Matting Laplacian ``L`` of an image ``I`` (``N = H * W`` pixels, windows ``w_k`` of
``(2r+1) x (2r+1)`` pixels lying fully inside the image, ``|w| = (2r+1)^2``) is::

    L_ij = sum_{k : i, j in w_k} [ delta_ij - (1 + (I_i - mu_k)^T (Sigma_k + eps/|w| I_3)^-1
                                                   (I_j - mu_k)) / |w| ]

with ``mu_k`` and ``Sigma_k`` the mean and (biased) covariance of the colours in ``w_k``.
``v^T L v`` is small when ``v`` is locally an affine function of the content's colours, which
is the photorealism term of Deep Photo Style Transfer (Luan et al. 2017).

Applying ``L`` is the guided filter: per window ``a_k = Delta_k cov_k(I, v)`` with
``Delta_k = (Sigma_k + eps/|w| I_3)^-1`` and ``(L v)_i = sum_{k ni i} [v_i - mean_k(v)
- a_k . (I_i - mu_k)]``. Here it is evaluated in whitened coordinates: with the Cholesky
factor ``C_k C_k^T = Sigma_k + eps/|w| I_3`` and ``G_kj = C_k^-1 (I_j - mu_k) / sqrt|w|``
(one 3-vector per window pixel, all entries in [-1, 1]),

    (L v)_i = sum_{k ni i} r_ki,   r_kj = (v_j - mean_k v) - G_kj . g_k,   g_k = sum_j G_kj v_j,

and, with ``K_k = eps/|w| C_k^-1 C_k^-T = I_3 - sum_j G_kj G_kj^T``,

    v^T L v = sum_k ( sum_j r_kj^2 + g_k^T K_k g_k ),

a sum of non-negative terms. ``G`` and ``K`` are computed once in float64 and stored in the
working dtype. Nothing ever multiplies by ``Delta_k`` (up to ``|w| / eps = 9e7`` in flat
windows): on the DPST photographs float32 gives the energy to ~3e-7 and ``L v`` to ~1e-5
relative to float64, where the textbook ``a_k . I_i + b_k`` form in float32 is off by ~5e-3 in
``L v`` and loses everything in flat and saturated regions.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse
import torch
from numpy.lib.stride_tricks import sliding_window_view
from torch import Tensor

from photostyle.errors import InputError

__all__ = ["MattingLaplacian", "affine_energy_per_pixel", "matting_laplacian_sparse"]


def _check_params(height: int, width: int, eps: float, radius: int) -> None:
    if not (isinstance(radius, int) and radius >= 1):
        raise InputError(f"radius must be an integer >= 1, but received {radius!r}.")
    if not eps > 0:
        raise InputError(f"eps must be > 0, but received {eps!r}.")
    side = 2 * radius + 1
    if height < side or width < side:
        raise InputError(
            f"The Matting Laplacian needs an image of at least {side}x{side} pixels for "
            f"radius {radius}, but received {height}x{width}; use a larger image."
        )


def _check_batch(name: str, x: Tensor, channels: int | None = None) -> None:
    if x.ndim != 4 or (channels is not None and x.shape[1] != channels):
        expected = f"(B, {channels}, H, W)" if channels else "(B, C, H, W)"
        raise InputError(f"{name} must have shape {expected}, but received {tuple(x.shape)}.")


def _offsets(radius: int) -> list[tuple[int, int]]:
    side = 2 * radius + 1
    return [(dy, dx) for dy in range(side) for dx in range(side)]


def _whitened_windows(image: Tensor, eps: float, radius: int) -> tuple[Tensor, Tensor]:
    """Per-window factors ``G`` ``(|w|, 3, h, w)`` and ``K`` ``(3, 3, h, w)`` in float64.

    ``image`` is ``(3, H, W)``; ``h = H - 2r`` and ``w = W - 2r`` index the window centres.
    """
    size = (2 * radius + 1) ** 2
    height, width = image.shape[-2] - 2 * radius, image.shape[-1] - 2 * radius
    image = image.double()
    patches = [image[:, dy : dy + height, dx : dx + width] for dy, dx in _offsets(radius)]
    mean = sum(patches) / size
    centred = [patch - mean for patch in patches]
    cov = [[sum(x[a] * x[b] for x in centred) / size for b in range(3)] for a in range(3)]
    for a in range(3):
        cov[a][a] = cov[a][a] + eps / size
    # Closed-form Cholesky factor C (lower triangular) of Sigma + eps/|w| I, then C^-1.
    l11 = cov[0][0].sqrt()
    l21, l31 = cov[1][0] / l11, cov[2][0] / l11
    l22 = (cov[1][1] - l21 * l21).sqrt()
    l32 = (cov[2][1] - l31 * l21) / l22
    l33 = (cov[2][2] - l31 * l31 - l32 * l32).sqrt()
    zero = torch.zeros_like(l11)
    inv = [
        [1 / l11, zero, zero],
        [-l21 / (l11 * l22), 1 / l22, zero],
        [(l21 * l32 - l22 * l31) / (l11 * l22 * l33), -l32 / (l22 * l33), 1 / l33],
    ]
    scale = 1 / math.sqrt(size)
    g = torch.stack(
        [
            torch.stack([sum(inv[a][b] * x[b] for b in range(a + 1)) * scale for a in range(3)])
            for x in centred
        ]
    )
    k = torch.stack(
        [
            torch.stack([sum(inv[a][c] * inv[b][c] for c in range(3)) * (eps / size) for b in range(3)])
            for a in range(3)
        ]
    )
    return g, k


class MattingLaplacian(torch.nn.Module):
    r"""The Matting Laplacian of a content photo as a matrix-free operator.

    The per-window factors are computed once, in float64, and kept as buffers in the dtype of
    ``content``; each product then costs a few dozen element-wise passes over the image.

    Args:
        content: the content photo, ``(1, 3, H, W)``, RGB in [0, 1] (``eps`` assumes that
            range). Its dtype (float32 or float64) is the working dtype, its device the device.
        eps: regulariser of the window covariances (DPST and Levin use ``1e-7``).
        radius: window radius ``r``; windows are ``(2r+1) x (2r+1)`` and lie fully inside the
            image (as in Levin's ``getLaplacian``), so ``H, W >= 2r + 1``.

    Example:
        >>> lap = MattingLaplacian(torch.rand(1, 3, 8, 9))
        >>> lap.matvec(torch.rand(1, 3, 8, 9)).shape
        torch.Size([1, 3, 8, 9])
    """

    g: Tensor
    k: Tensor

    def __init__(self, content: Tensor, eps: float = 1e-7, radius: int = 1) -> None:
        super().__init__()
        _check_batch("content", content, channels=3)
        if content.shape[0] != 1:
            raise InputError(f"content must be one photo (1, 3, H, W), but received {tuple(content.shape)}.")
        _check_params(content.shape[-2], content.shape[-1], eps, radius)
        self.eps, self.radius = eps, radius
        self.size = tuple(content.shape[-2:])
        g, k = _whitened_windows(content[0], eps, radius)
        self.register_buffer("g", g.to(content.dtype))
        self.register_buffer("k", k.to(content.dtype))

    def extra_repr(self) -> str:
        return f"size={self.size}, eps={self.eps}, radius={self.radius}"

    def _check(self, v: Tensor) -> None:
        _check_batch("v", v)
        if tuple(v.shape[-2:]) != self.size:
            raise InputError(
                f"v must have the content's size {self.size}, but received {tuple(v.shape[-2:])}."
            )
        if (v.dtype, v.device) != (self.g.dtype, self.g.device):
            raise InputError(
                f"v must be {self.g.dtype} on {self.g.device} like the Laplacian, but received "
                f"{v.dtype} on {v.device}; move one of them with .to()."
            )

    def matvec(self, v: Tensor) -> Tensor:
        """``L`` applied to each channel of ``v``: ``(B, C, H, W)`` -> ``(B, C, H, W)``.

        Differentiable; the gradient of ``<u, L v>`` with respect to ``v`` is ``L u``.
        """
        self._check(v)
        return _Matvec.apply(v, self.g, self.radius)

    def energy(self, v: Tensor) -> Tensor:
        """``sum_c v_c^T L v_c`` over all images and channels of ``v`` ``(B, C, H, W)``: a scalar >= 0.

        Differentiable; the gradient is ``2 L v``, computed in the same pass as the energy.
        """
        self._check(v)
        return _Energy.apply(v, self.g, self.k, self.radius)

    def forward(self, v: Tensor) -> Tensor:
        """Same as :meth:`energy`."""
        return self.energy(v)


def _residuals(v: Tensor, g: Tensor, radius: int) -> tuple[list[Tensor], list[Tensor]]:
    """Per-window residuals ``r_kj`` (one ``(N, h, w)`` tensor per window offset j) and ``g_k``.

    ``v`` is ``(N, H, W)``, one channel per row.
    """
    height, width = g.shape[-2:]
    patches = [v[:, dy : dy + height, dx : dx + width] for dy, dx in _offsets(radius)]
    mean = sum(patches) / len(patches)
    res = [patch - mean for patch in patches]
    proj = [torch.zeros_like(mean) for _ in range(3)]
    for gj, rj in zip(g, res):
        for a in range(3):
            proj[a].addcmul_(gj[a], rj)
    for gj, rj in zip(g, res):
        for a in range(3):
            rj.addcmul_(gj[a], proj[a], value=-1)
    return res, proj


def _scatter(res: list[Tensor], shape: torch.Size, radius: int) -> Tensor:
    """Sum the window residuals back onto the pixels: ``(L v)_i = sum_{k ni i} r_ki``."""
    height, width = res[0].shape[-2:]
    out = res[0].new_zeros(shape)
    for (dy, dx), rj in zip(_offsets(radius), res):
        out[:, dy : dy + height, dx : dx + width] += rj
    return out


def _apply(v: Tensor, g: Tensor, radius: int) -> Tensor:
    flat = v.reshape(-1, *v.shape[-2:])
    res, _ = _residuals(flat, g, radius)
    return _scatter(res, flat.shape, radius).reshape(v.shape)


class _Matvec(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v: Tensor, g: Tensor, radius: int) -> Tensor:
        ctx.save_for_backward(g)
        ctx.radius = radius
        return _apply(v, g, radius)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        (g,) = ctx.saved_tensors  # L is symmetric: the vector-Jacobian product is L grad.
        return _Matvec.apply(grad, g, ctx.radius), None, None


class _Energy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v: Tensor, g: Tensor, k: Tensor, radius: int) -> Tensor:
        flat = v.reshape(-1, *v.shape[-2:])
        res, proj = _residuals(flat, g, radius)
        quad = sum(k[a, b] * proj[a] * proj[b] for a in range(3) for b in range(3))
        energy = sum(rj.square().sum() for rj in res) + quad.sum()
        ctx.save_for_backward(_scatter(res, flat.shape, radius).reshape(v.shape))
        return energy

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None]:
        (lv,) = ctx.saved_tensors
        return 2 * grad * lv, None, None, None


def matting_laplacian_sparse(image: np.ndarray, eps: float = 1e-7, radius: int = 1) -> scipy.sparse.csr_matrix:
    """The Matting Laplacian assembled entry by entry, as in Levin's ``getLaplacian``.

    A reference for tests and small crops: it stores ``|w|^2`` entries per window.

    Args:
        image: ``(H, W, 3)`` float array, RGB in [0, 1].
        eps: regulariser of the window covariances.
        radius: window radius; windows lie fully inside the image.

    Returns:
        ``(H*W, H*W)`` symmetric positive semi-definite matrix; pixel ``(y, x)`` is row ``y*W + x``.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"image must have shape (H, W, 3), but received {image.shape}.")
    height, width = image.shape[:2]
    _check_params(height, width, eps, radius)
    side = 2 * radius + 1
    size = side * side
    windows = sliding_window_view(np.arange(height * width).reshape(height, width), (side, side))
    windows = windows.reshape(-1, size)
    colours = np.asarray(image, dtype=np.float64).reshape(-1, 3)[windows]
    centred = colours - colours.mean(axis=1, keepdims=True)
    cov = np.einsum("kja,kjb->kab", centred, centred) / size + eps / size * np.eye(3)
    inv = np.linalg.inv(cov)
    values = (1 + np.einsum("kia,kab,kjb->kij", centred, inv, centred)) / size
    rows = np.repeat(windows, size, axis=1).ravel()
    cols = np.tile(windows, (1, size)).ravel()
    affinity = scipy.sparse.coo_matrix((values.ravel(), (rows, cols)), shape=(height * width,) * 2)
    counts = np.bincount(windows.ravel(), minlength=height * width).astype(np.float64)
    return (scipy.sparse.diags(counts) - affinity).tocsr()


def affine_energy_per_pixel(output: Tensor, content: Tensor, eps: float = 1e-7) -> float:
    """The photorealism metric: ``sum_c o_c^T L o_c / (H * W)`` with ``L`` the content's Laplacian.

    Computed in float64 (radius 1). Zero means ``output`` is locally an affine recolouring of
    ``content``; larger means less photo-like.

    Args:
        output: the stylised photo, ``(1, 3, H, W)`` in [0, 1].
        content: the content photo, ``(1, 3, H, W)`` in [0, 1], same size as ``output``.
        eps: regulariser of the window covariances.
    """
    _check_batch("output", output, channels=3)
    if output.shape != content.shape:
        raise InputError(
            f"output and content must have the same shape, but received {tuple(output.shape)} "
            f"and {tuple(content.shape)}; resize the output to the content first."
        )
    with torch.no_grad():
        lap = MattingLaplacian(content.double(), eps=eps)
        return lap.energy(output.double()).item() / (output.shape[-2] * output.shape[-1])
