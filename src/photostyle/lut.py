"""A look as a global colour map: fit a 3D LUT to a result, write it as ``.cube`` or Hald CLUT, apply it.

A 3D LUT maps every input RGB colour to an output RGB colour through a lattice of ``N x N x N``
nodes and trilinear interpolation between them. :func:`fit_lut` finds the lattice that best
reproduces a result from its content photo: regularised least squares over the photo's
(content colour, result colour) pairs, with a penalty on the lattice's second differences, so the
map is smooth, and colours the photo does not contain continue the nearest data, pulled gently
toward the best global affine colour map (so a hue the photo lacks keeps its hue and takes the
change of level of its neighbours). The table is clipped to [0, 1]. On a synthetic global grade
(channel mixing, gamma, lift) of the bundled rocket photo a 17-node fit reproduces the graded
photo to CIEDE2000 0.06 on average, and random colours the photo does not contain to about 2.4
(``tests/test_lut.py``).

What a global LUT cannot hold: photostyle's look is local (per segment, and an affine map per
window of the photo), so two pixels of the same colour in different places may have been given
different colours. :func:`fit_error` measures how much of the result the LUT reproduces (CIEDE2000).

Layout: ``Lut3D.table`` is ``(N, N, N, 3)`` indexed ``[b, g, r]``, which is the order of the
``.cube`` format (red changes fastest) and of a Hald CLUT image, and the ``(D, H, W)`` order of
:func:`torch.nn.functional.grid_sample`.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
import torch.nn.functional as F

from .errors import InputError
from .io import save_image, write_atomically

__all__ = ["Lut3D", "fit_error", "fit_lut", "read_lut"]

_TILE_PIXELS = 1 << 21  # pixels per tile when applying (about 100 MB of intermediates)


@dataclass(frozen=True)
class Lut3D:
    """A 3D colour lookup table.

    Attributes:
        table: ``(N, N, N, 3)`` float32 output RGB in [0, 1], indexed ``[b, g, r]`` of the input
            colour's lattice node (node ``i`` is the value ``i / (N - 1)``).
        title: a name written into the ``.cube`` file.
    """

    table: torch.Tensor
    title: str = "photostyle look"

    def __post_init__(self) -> None:
        n = self.table.shape[0]
        if self.table.ndim != 4 or self.table.shape != (n, n, n, 3) or n < 2:
            raise ValueError(f"expected a table of shape (N, N, N, 3) with N >= 2 but received {tuple(self.table.shape)}")

    @property
    def size(self) -> int:
        """``N``, the number of nodes along each axis."""
        return self.table.shape[0]

    def apply(self, image: torch.Tensor) -> torch.Tensor:
        """Map ``image`` ``(B, 3, H, W)`` RGB in [0, 1] through the table (trilinear), in row tiles.

        Returns:
            ``(B, 3, H, W)`` in [0, 1], on ``image``'s device and dtype.
        """
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"expected an image of shape (B, 3, H, W) but received {tuple(image.shape)}")
        volume = self.table.to(image.device, torch.float32).permute(3, 0, 1, 2).unsqueeze(0)  # (1, 3, B, G, R)
        rows = max(1, _TILE_PIXELS // max(1, image.shape[-1]))
        out = torch.empty_like(image)
        for b in range(image.shape[0]):
            for top in range(0, image.shape[-2], rows):
                tile = image[b : b + 1, :, top : top + rows].float().clamp(0, 1)
                grid = (tile.permute(0, 2, 3, 1) * 2 - 1).unsqueeze(1)  # (1, 1, h, W, 3) as (x=r, y=g, z=b)
                mapped = F.grid_sample(volume, grid, mode="bilinear", padding_mode="border", align_corners=True)
                out[b : b + 1, :, top : top + rows] = mapped[:, :, 0].to(image.dtype)
        return out

    def resized(self, size: int) -> Lut3D:
        """The same map sampled on an ``size``-node lattice (trilinear)."""
        nodes = torch.linspace(0, 1, size)
        b, g, r = torch.meshgrid(nodes, nodes, nodes, indexing="ij")
        lattice = torch.stack([r, g, b]).reshape(1, 3, size, size * size)
        mapped = self.apply(lattice).reshape(3, size, size, size).permute(1, 2, 3, 0)
        return Lut3D(mapped.contiguous(), self.title)

    def write_cube(self, path: str | os.PathLike[str]) -> Path:
        """Write an Adobe/Resolve ``.cube`` file (atomically): ``LUT_3D_SIZE N``, red fastest, 6 decimals."""
        title = self.title.replace('"', "'")
        header = f'TITLE "{title}"\n# written by photostyle\nLUT_3D_SIZE {self.size}\nDOMAIN_MIN 0 0 0\nDOMAIN_MAX 1 1 1\n'
        rows = self.table.reshape(-1, 3).double().numpy()
        body = "\n".join(f"{r:.6f} {g:.6f} {b:.6f}" for r, g, b in rows)
        return write_atomically(path, header + body + "\n")

    def write_hald(self, path: str | os.PathLike[str], level: int = 8, *, overwrite: bool = False) -> Path:
        """Write a Hald CLUT image of ``level`` (cube size ``level**2``, image ``level**3`` square) as 16-bit PNG.

        Raises:
            ValueError: ``level`` outside 2..16.
        """
        if not 2 <= level <= 16:
            raise ValueError(f"expected a Hald level in 2..16 but received {level}")
        table = self.resized(level * level).table  # [b, g, r]: red fastest, as Hald images are laid out
        side = level**3
        image = table.reshape(side, side, 3).permute(2, 0, 1).unsqueeze(0)
        return save_image(image, path, overwrite=overwrite, bit_depth=16)


def read_lut(path: str | os.PathLike[str]) -> Lut3D:
    """Read a 3D LUT from a ``.cube`` file or a Hald CLUT image (any image format PIL reads).

    Raises:
        InputError: the file is missing, not a 3D ``.cube`` (1D LUTs are refused), has the wrong
            number of rows or a domain other than [0, 1], or is an image that is not a Hald CLUT.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such LUT file; give a .cube file or a Hald CLUT image")
    if path.suffix.lower() != ".cube":
        return _read_hald(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read the .cube file ({err})") from err
    size, values = None, []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("TITLE"):
            continue
        word = line.split()[0].upper()
        if word == "LUT_1D_SIZE":
            raise InputError(f"{path}: a 1D LUT; photostyle reads 3D LUTs (LUT_3D_SIZE)")
        if word == "LUT_3D_SIZE":
            size = int(line.split()[1])
        elif word in ("DOMAIN_MIN", "DOMAIN_MAX"):
            bound = [float(v) for v in line.split()[1:4]]
            if bound != [0.0 if word == "DOMAIN_MIN" else 1.0] * 3:
                raise InputError(f"{path}: {word} {bound}; photostyle reads LUTs over the domain [0, 1]")
        elif re.fullmatch(r"[-+0-9.eE]+\s+[-+0-9.eE]+\s+[-+0-9.eE]+", line):
            values.append([float(v) for v in line.split()])
        else:
            raise InputError(f"{path}: line {number} ({line[:40]!r}) is not part of a 3D .cube LUT")
    if size is None or size < 2 or len(values) != size**3:
        raise InputError(f"{path}: expected LUT_3D_SIZE N and N^3 rows but found size {size} and {len(values)} rows")
    table = torch.tensor(values, dtype=torch.float32).reshape(size, size, size, 3)
    return Lut3D(table, title=path.stem)


def _read_hald(path: Path) -> Lut3D:
    from .io import load_image

    image = load_image(path, colour_manage=False).tensor[0]  # (3, side, side)
    side = image.shape[-1]
    level = round(side ** (1 / 3))
    if image.shape[-2] != side or level**3 != side or level < 2:
        raise InputError(f"{path}: a {side}x{image.shape[-2]} image is not a Hald CLUT (a square of side level^3)")
    n = level * level
    return Lut3D(image.permute(1, 2, 0).reshape(n, n, n, 3).contiguous(), title=path.stem)


def fit_lut(
    source: torch.Tensor,
    target: torch.Tensor,
    size: int = 33,
    *,
    smoothness: float = 1.0,
    prior: float = 1e-4,
) -> Lut3D:
    """The ``size``-node LUT that best maps ``source`` onto ``target`` (regularised least squares).

    Args:
        source: ``(1, 3, H, W)`` RGB in [0, 1], e.g. the content photo.
        target: ``(1, 3, H, W)`` RGB in [0, 1], e.g. the result (same size as ``source``).
        size: nodes per axis (17, 33 and 65 are the usual sizes).
        smoothness: weight of the squared second differences of the lattice (per node, in units of
            the mean squared data error); larger is smoother.
        prior: weight pulling each node toward the best global affine colour map (itself pulled
            toward the identity); it decides what the data leaves open far from the photo's colours.

    Returns:
        The fitted :class:`Lut3D`, clipped to [0, 1].
    """
    if source.shape != target.shape or source.ndim != 4 or source.shape[:2] != (1, 3):
        raise ValueError(f"expected source and target of one shape (1, 3, H, W) but received "
                         f"{tuple(source.shape)} and {tuple(target.shape)}")
    if size < 2:
        raise ValueError(f"expected a LUT size >= 2 but received {size}")
    colours, means, counts = _distinct_colours(source, target)
    weights = counts / counts.sum()
    affine = _affine_fit(colours, means, weights)
    solution = None
    for level in _coarse_to_fine(size):  # each level starts from the previous one: conjugate gradients converge fast
        data = _interpolation_matrix(colours, level)  # (K, N^3)
        nodes = _lattice_colours(level)
        regular = prior / level**3
        system = (data.T @ sp.diags(weights) @ data + smoothness / level**3 * _second_differences(level)
                  + regular * sp.eye(level**3)).tocsr()
        rhs = data.T @ (weights[:, None] * means) + regular * (np.c_[nodes, np.ones(len(nodes))] @ affine)
        start = nodes @ affine[:3] + affine[3] if solution is None else _resample(solution, level)
        solution = _solve(system, rhs, start)
    table = torch.from_numpy(solution.astype(np.float32)).clamp(0, 1).reshape(size, size, size, 3)
    return Lut3D(table.contiguous())


def _coarse_to_fine(size: int) -> list[int]:
    """Lattice sizes from 5 nodes up to ``size``, each about twice as fine as the last."""
    levels = [size]
    while levels[-1] > 9:
        levels.append((levels[-1] + 1) // 2)
    return levels[::-1]


def _resample(values: np.ndarray, size: int) -> np.ndarray:
    """A lattice's ``(n^3, 3)`` node values sampled on an ``size``-node lattice (trilinear)."""
    n = round(len(values) ** (1 / 3))
    coarse = torch.from_numpy(values).float().reshape(n, n, n, 3)
    return Lut3D(coarse).resized(size).table.reshape(-1, 3).double().numpy()


def _solve(system: sp.csr_matrix, rhs: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Solve the symmetric positive definite ``system @ x = rhs`` per colour channel (Jacobi-preconditioned CG)."""
    inverse_diagonal = sp.diags(1.0 / system.diagonal())
    columns = [spla.cg(system, rhs[:, c], x0=start[:, c], rtol=1e-5, maxiter=1000, M=inverse_diagonal)[0]
               for c in range(3)]
    return np.stack(columns, axis=1)


def _distinct_colours(
    source: torch.Tensor, target: torch.Tensor, samples: int = 1 << 22
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct 8-bit source colours ``(K, 3)``, the mean target of each ``(K, 3)`` and their counts ``(K,)``.

    Photos of more than ``samples`` pixels are represented by a seeded random subset of that many.
    """
    src, tgt = source[0].flatten(1).T, target[0].flatten(1).T
    if src.shape[0] > samples:
        pick = torch.randperm(src.shape[0], generator=torch.Generator().manual_seed(0))[:samples]
        src, tgt = src[pick], tgt[pick]
    src, tgt = src.double().cpu().numpy(), tgt.double().cpu().numpy()
    code = np.rint(np.clip(src, 0, 1) * 255).astype(np.int64) @ np.array([65536, 256, 1])
    keys, inverse, counts = np.unique(code, return_inverse=True, return_counts=True)
    sums = np.stack([np.bincount(inverse, weights=tgt[:, c], minlength=len(keys)) for c in range(3)], axis=1)
    colours = np.stack([keys // 65536, keys // 256 % 256, keys % 256], axis=1) / 255.0
    return colours, sums / counts[:, None], counts.astype(np.float64)


def _interpolation_matrix(colours: np.ndarray, size: int) -> sp.csr_matrix:
    """``(K, N^3)`` trilinear weights of each colour on the lattice nodes (node index ``(b*N + g)*N + r``)."""
    position = colours * (size - 1)
    low = np.clip(np.floor(position), 0, size - 2).astype(np.int64)
    frac = position - low
    rows, cols, vals = [], [], []
    for corner in range(8):
        step = np.array([(corner >> 0) & 1, (corner >> 1) & 1, (corner >> 2) & 1])  # r, g, b
        weight = np.prod(np.where(step == 1, frac, 1 - frac), axis=1)
        r, g, b = (low + step).T
        rows.append(np.arange(len(colours)))
        cols.append((b * size + g) * size + r)
        vals.append(weight)
    shape = (len(colours), size**3)
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=shape)


def _second_differences(size: int) -> sp.csr_matrix:
    """``D^T D`` summed over the three axes, ``D`` the second difference along an axis, ``(N^3, N^3)``."""
    second = sp.diags([1.0, -2.0, 1.0], [0, 1, 2], shape=(size - 2, size))
    eye = sp.eye(size)
    total = None
    for axis in range(3):
        factors = [eye, eye, eye]
        factors[axis] = second
        d = sp.kron(sp.kron(factors[0], factors[1]), factors[2])
        total = d.T @ d if total is None else total + d.T @ d
    return total.tocsr()


def _lattice_colours(size: int) -> np.ndarray:
    """``(N^3, 3)`` RGB of the nodes in table order (``[b, g, r]``, red fastest)."""
    nodes = np.linspace(0, 1, size)
    b, g, r = np.meshgrid(nodes, nodes, nodes, indexing="ij")
    return np.stack([r.ravel(), g.ravel(), b.ravel()], axis=1)


def _affine_fit(colours: np.ndarray, means: np.ndarray, weights: np.ndarray, ridge: float = 1e-3) -> np.ndarray:
    """The ``(4, 3)`` weighted least-squares affine map ``[rgb, 1] @ A ≈ target``, pulled toward the identity.

    The pull decides what the photo's colours cannot: a photo of greys says nothing about what
    happens to red, which then keeps its hue and takes the greys' change of level.
    """
    x = np.c_[colours, np.ones(len(colours))]
    xw = x * weights[:, None]
    identity = np.eye(4, 3)
    return np.linalg.solve(x.T @ xw + ridge * np.eye(4), xw.T @ means + ridge * identity)


def fit_error(lut: Lut3D, source: torch.Tensor, target: torch.Tensor, *, samples: int = 1_000_000,
              seed: int = 0) -> dict[str, float]:
    """How well ``lut`` applied to ``source`` reproduces ``target``: CIEDE2000 mean and 95th percentile.

    Args:
        lut: the map.
        source, target: ``(1, 3, H, W)`` RGB in [0, 1] of one size.
        samples: at most this many pixels are compared (a seeded random subset).

    Returns:
        ``{"mean": ..., "p95": ..., "max": ...}`` in CIEDE2000 units (1 is about a just noticeable difference).
    """
    from skimage.color import deltaE_ciede2000, rgb2lab

    src, tgt = source[0].flatten(1).T, target[0].flatten(1).T
    if src.shape[0] > samples:
        pick = torch.randperm(src.shape[0], generator=torch.Generator().manual_seed(seed))[:samples]
        src, tgt = src[pick], tgt[pick]
    side = math.isqrt(src.shape[0])
    src, tgt = src[: side * side], tgt[: side * side]
    mapped = lut.apply(src.T.reshape(1, 3, side, side))[0].permute(1, 2, 0).double().numpy()
    wanted = tgt.reshape(side, side, 3).double().clamp(0, 1).numpy()
    error = deltaE_ciede2000(rgb2lab(mapped), rgb2lab(wanted))
    return {"mean": float(error.mean()), "p95": float(np.percentile(error, 95)), "max": float(error.max())}
