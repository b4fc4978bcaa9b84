"""Plain helpers shared by the test files: random photos and broken image files.

Import them with ``from helpers import ...``: pytest puts this folder on ``sys.path``
(``tests/`` has no ``__init__.py``, and the default ``prepend`` import mode adds the folder of
each test file and conftest.py). Fixtures shared by the test files are in ``conftest.py``.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def random_rgb(height: int, width: int, seed: int | np.random.Generator = 0, channels: int = 3) -> np.ndarray:
    """Uniform random 8-bit pixels ``(height, width, channels)``.

    ``seed`` may be a generator, which is used as it is (``np.random.default_rng`` returns it),
    so that several photos drawn one after the other from one generator stay as they were.
    """
    return np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)


def write_photo(path: Path, width: int, height: int, seed: int | np.random.Generator = 0) -> Path:
    """Saves a random RGB photo of ``width`` x ``height`` (as PIL reports sizes) at ``path``."""
    Image.fromarray(random_rgb(height, width, seed)).save(path)
    return path


def write_pair(folder: Path, content_size: tuple[int, int], style_size: tuple[int, int],
               seed: int = 0) -> tuple[Path, Path]:
    """``content.png`` and ``style.png`` in ``folder``, sizes ``(width, height)``, both drawn from one generator."""
    rng = np.random.default_rng(seed)
    return (write_photo(folder / "content.png", *content_size, seed=rng),
            write_photo(folder / "style.png", *style_size, seed=rng))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` with one tiny compressed block of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def truncated_jpeg(path: Path) -> None:
    """The first half of a 64 x 64 JPEG of random pixels."""
    buffer = io.BytesIO()
    Image.fromarray(random_rgb(64, 64)).save(buffer, format="JPEG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
