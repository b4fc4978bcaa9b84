"""Read any photo into a ``(1, 3, H, W)`` float tensor in [0, 1] sRGB, and write results atomically.

This is the only module that converts between files and tensors. :func:`load_image` applies the
EXIF orientation, scales 16-bit and float data, converts embedded ICC profiles (and CMYK) to sRGB,
and returns any transparency as a separate alpha plane. :func:`save_image` picks the format from
the file name, writes to a temporary file in the destination folder and renames it into place, so
a result is either complete or absent.
"""

from __future__ import annotations

import io
import os
import secrets
import struct
import warnings
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageCms, ImageOps

from photostyle.errors import InputError, OutputError

__all__ = [
    "LoadedImage", "check_distinct", "check_output_path", "check_writable", "load_image", "resize_long_side",
    "save_image", "srgb_profile", "write_atomically",
]

# What PIL raises on corrupt or truncated data; fuzzing shows the decoders use all of these.
_DECODE_ERRORS = (
    OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error,
    IndexError, KeyError, TypeError, ZeroDivisionError, Image.DecompressionBombError,
)
_SAVE_FORMATS = {
    ".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF",
    ".webp": "WEBP", ".bmp": "BMP",
}
_ORIENTATION = 0x0112
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


@dataclass(frozen=True)
class LoadedImage:
    """A photo as read from disk.

    Attributes:
        tensor: ``(1, 3, H, W)`` float32 in [0, 1], sRGB, upright (EXIF orientation applied).
            For transparent images the colour is *not* flattened: it is the stored RGB.
        alpha: ``(1, 1, H, W)`` float32 in [0, 1] when the file has transparency, else ``None``.
        icc_profile: the ICC profile embedded in the file, unchanged (the tensor is already sRGB).
        exif: the EXIF block with orientation reset to 1 (the tensor is upright), or ``None``.
        path: the file read.
        mode: PIL's mode of the file before conversion (``"RGB"``, ``"I;16"``, ``"CMYK"``, ...).
        bit_depth: bits per sample stored in the file (8, 16, 32, or 1/2/4 for small palettes).
    """

    tensor: torch.Tensor
    alpha: torch.Tensor | None
    icc_profile: bytes | None
    exif: bytes | None
    path: Path
    mode: str
    bit_depth: int


@lru_cache(maxsize=1)
def _srgb() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def srgb_profile() -> bytes:
    """The ICC profile of sRGB (lcms built-in), to tag files whose pixels are sRGB."""
    return _srgb().tobytes()


def load_image(
    path: str | os.PathLike[str], *, max_pixels: int = 120_000_000, colour_manage: bool = True
) -> LoadedImage:
    """Read a JPEG, PNG, TIFF, WebP, BMP (or any format PIL opens) as an sRGB tensor.

    The format is sniffed from the content, not the name. Greyscale is replicated to three
    channels; palette and CMYK images are converted; 16-bit integer data is divided by 65535;
    float data (mode ``F``) is used as is when its maximum is at most 1, else divided by 255 or
    65535 (whichever range holds it) or by its maximum, then clipped to [0, 1]. An embedded ICC
    profile (RGB, greyscale or CMYK) is converted to sRGB with lcms; a profile that cannot be used
    is ignored with a warning. PIL decodes 48/64-bit RGB(A) PNG and TIFF at 8 bits per channel
    (it has no 16-bit RGB mode); ``bit_depth`` still reports 16, and profiles on 16-bit or float
    greyscale data are not applied (PIL's lcms bindings take 8-bit data only).

    Args:
        path: the image file.
        max_pixels: images with more pixels are refused from the header, before any decoding.
            PIL's own limit (twice ``PIL.Image.MAX_IMAGE_PIXELS``) applies too.
        colour_manage: convert an embedded ICC profile to sRGB. Turn off for label images
            (segmentation masks), whose colours are codes.

    Returns:
        :class:`LoadedImage` with ``tensor`` of shape ``(1, 3, H, W)`` in [0, 1].

    Raises:
        InputError: the file is missing, not a file, empty, not an image, corrupt or truncated,
            in an unsupported colour mode, or larger than ``max_pixels``.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file; check the path")
    if not path.is_file():
        raise InputError(f"{path}: is a directory or special file, not an image; give an image file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty (0 bytes); re-export or re-download it")

    fmt = "image"
    try:
        with warnings.catch_warnings():
            # Our own max_pixels governs; PIL's warning between its two limits would be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                fmt = im.format or fmt
                width, height = im.size
                if width * height > max_pixels:
                    raise InputError(
                        f"{path}: {width}x{height} is {width * height / 1e6:.0f} megapixels, more than "
                        f"the limit of {max_pixels / 1e6:.0f}; downscale it first or raise max_pixels"
                    )
                mode, bit_depth = im.mode, _bit_depth(im, path)
                icc = im.info.get("icc_profile") or None
                exif = im.info.get("exif") or None
                im.load()
    except Image.UnidentifiedImageError as e:
        raise InputError(
            f"{path}: not an image PIL can read; give a JPEG, PNG, TIFF, WebP or BMP file"
        ) from e
    except Image.DecompressionBombError as e:
        raise InputError(f"{path}: refused as a possible decompression bomb ({e}); downscale it first") from e
    except _DECODE_ERRORS as e:
        raise InputError(
            f"{path}: cannot decode the {fmt} data ({e}); the file is truncated or corrupt, re-export it"
        ) from e

    try:
        im = ImageOps.exif_transpose(im)
    except _DECODE_ERRORS as e:
        warnings.warn(f"{path}: unreadable EXIF orientation ({e}); the image is used as stored", stacklevel=2)
    rgb, alpha = _to_float_rgb(im, path, icc if colour_manage else None)
    return LoadedImage(
        tensor=torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).contiguous(),
        alpha=None if alpha is None else torch.from_numpy(alpha)[None, None].contiguous(),
        icc_profile=icc,
        exif=_reset_orientation(exif, path),
        path=path,
        mode=mode,
        bit_depth=bit_depth,
    )


def _bit_depth(im: Image.Image, path: Path) -> int:
    if im.format == "PNG":
        with open(path, "rb") as f:
            return f.read(25)[24]  # IHDR bit depth; PIL hides 16-bit RGB behind mode "RGB"
    if im.format == "TIFF" and 258 in im.tag_v2:  # BitsPerSample
        bits = im.tag_v2[258]
        return int(max(bits) if isinstance(bits, tuple) else bits)
    if im.mode in _SIXTEEN_BIT_MODES:
        return 16
    return {"1": 1, "I": 32, "F": 32}.get(im.mode, 8)


def _to_float_rgb(im: Image.Image, path: Path, icc: bytes | None) -> tuple[np.ndarray, np.ndarray | None]:
    """``(H, W, 3)`` float32 in [0, 1] sRGB and the ``(H, W)`` alpha or ``None``."""
    if im.mode in _SIXTEEN_BIT_MODES or im.mode in ("I", "F"):
        if icc is not None:
            warnings.warn(f"{path}: ICC profile not applied to {im.mode} data; treated as sRGB", stacklevel=3)
        grey = np.asarray(im).astype(np.float32)
        grey = np.nan_to_num(grey, nan=0.0, posinf=0.0, neginf=0.0)
        if im.mode != "F":
            scale = 65535.0
        else:
            peak = float(grey.max(initial=0.0))
            scale = next((s for s in (1.0, 255.0, 65535.0) if peak <= s), peak)
        grey = np.clip(grey / scale, 0.0, 1.0)
        return np.repeat(grey[..., None], 3, axis=2), None

    alpha = None
    try:
        if im.has_transparency_data:
            alpha = np.asarray(im.convert("RGBA").getchannel("A"), dtype=np.float32) / 255.0
        base = {"1": "L", "L": "L", "LA": "L", "CMYK": "CMYK"}.get(im.mode, "RGB")
        if im.mode != base:
            im = im.convert(base)
    except ValueError as e:
        raise InputError(f"{path}: unsupported colour mode {im.mode} ({e}); convert it to RGB first") from e
    if icc is not None:
        try:
            im = ImageCms.profileToProfile(im, ImageCms.ImageCmsProfile(io.BytesIO(icc)), _srgb(), outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError) as e:
            warnings.warn(f"{path}: embedded ICC profile unusable ({e}); colours treated as sRGB", stacklevel=3)
    rgb = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return rgb, alpha


def _reset_orientation(exif: bytes | None, path: Path) -> bytes | None:
    """The EXIF block with orientation 1, or ``None`` if absent or unreadable (with a warning)."""
    if not exif:
        return None
    try:
        parsed = Image.Exif()
        parsed.load(exif)
        if _ORIENTATION in parsed:
            parsed[_ORIENTATION] = 1
        return parsed.tobytes()
    except _DECODE_ERRORS as e:
        warnings.warn(f"{path}: EXIF block unreadable ({e}); it is dropped", stacklevel=3)
        return None


def save_image(
    image: torch.Tensor,
    path: str | os.PathLike[str],
    *,
    alpha: torch.Tensor | None = None,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
    overwrite: bool = False,
    quality: int = 95,
    bit_depth: int = 8,
) -> Path:
    """Write an sRGB image atomically; the format comes from the suffix.

    Colour: the pixels are sRGB. With ``icc_profile=None`` the file is untagged (read as sRGB by
    every viewer). With an RGB ``icc_profile`` (e.g. ``LoadedImage.icc_profile`` of the content
    photo) the pixels are converted from sRGB into that profile and it is embedded, so the result
    lives in the same colour space as the input. Profiles of other colour spaces (CMYK, grey), and
    any profile with ``bit_depth=16``, cannot be applied: the file is then tagged sRGB.

    Alpha is written by PNG, TIFF and WebP; for JPEG and BMP the image is composited on white
    (with a warning). EXIF is written (orientation reset to 1) by JPEG, PNG, TIFF and WebP.
    ``bit_depth=16`` is PNG only (PIL has no 16-bit RGB mode; a small PNG encoder here writes it).

    Args:
        image: ``(1, 3, H, W)`` in [0, 1]; values outside are clipped and NaN becomes 0.
        path: destination ending in .jpg, .jpeg, .png, .tif, .tiff, .webp or .bmp (any case).
        alpha: ``(1, 1, H, W)`` in [0, 1], or ``None``.
        icc_profile: see above.
        exif: EXIF block to embed, or ``None``.
        overwrite: replace an existing file.
        quality: JPEG/WebP quality, 1..100.
        bit_depth: 8, or 16 for PNG.

    Returns:
        The path written.

    Raises:
        OutputError: unknown suffix, 16 bits asked for a format other than PNG, existing file
            without ``overwrite``, missing folder, or the write failed. Nothing is left behind.
        ValueError: ``image`` or ``alpha`` has the wrong shape, ``quality`` or ``bit_depth`` is out of range.
    """
    path = Path(path)
    fmt = check_output_path(path, overwrite=overwrite)
    if image.ndim != 4 or image.shape[:2] != (1, 3):
        raise ValueError(f"expected image of shape (1, 3, H, W) but received {tuple(image.shape)}")
    if alpha is not None and tuple(alpha.shape) != (1, 1, *image.shape[2:]):
        raise ValueError(f"expected alpha of shape {(1, 1, *image.shape[2:])} but received {tuple(alpha.shape)}")
    if not 1 <= quality <= 100:
        raise ValueError(f"expected quality in 1..100 but received {quality}")
    if bit_depth not in (8, 16):
        raise ValueError(f"expected bit_depth 8 or 16 but received {bit_depth}")
    if bit_depth == 16 and fmt != "PNG":
        raise OutputError(f"{path}: 16-bit output is written as PNG only; use a .png name or 8 bits")

    rgb = _to_hwc(image)
    a = None if alpha is None else _to_hwc(alpha)[..., 0]
    exif = _reset_orientation(exif, path)
    if bit_depth == 16:
        data = _encode_png16(rgb, a, None if icc_profile is None else srgb_profile(), exif)
        if icc_profile is not None:
            warnings.warn(f"{path}: 16-bit output is written in sRGB, not in the given ICC profile", stacklevel=2)
        write_atomically(path, lambda f: f.write(data))
        return path

    pil = Image.fromarray(np.rint(rgb * 255.0).astype(np.uint8))
    pil, icc_profile = _apply_profile(pil, icc_profile, path)
    if a is not None:
        a8 = Image.fromarray(np.rint(a * 255.0).astype(np.uint8))
        if fmt in ("JPEG", "BMP"):  # PIL writes no alpha in BMP: composite rather than drop it silently
            warnings.warn(f"{path}: {fmt} keeps no transparency here; composited on white (use PNG, TIFF or WebP "
                          "to keep it)", stacklevel=2)
            pil = Image.composite(pil, Image.new("RGB", pil.size, "white"), a8)
        else:
            pil.putalpha(a8)
    params: dict[str, object] = {}
    if fmt in ("JPEG", "WEBP"):
        params["quality"] = quality
    if fmt == "TIFF":
        params["compression"] = "tiff_deflate"
    if fmt != "BMP":
        if icc_profile is not None:
            params["icc_profile"] = icc_profile
        if exif is not None:
            params["exif"] = exif
    write_atomically(path, lambda f: pil.save(f, format=fmt, **params))
    return path


def check_output_path(path: str | os.PathLike[str], *, overwrite: bool = False) -> str:
    """Check, before any work, that :func:`save_image` can write ``path``.

    Args:
        path: destination image file.
        overwrite: whether an existing file may be replaced.

    Returns:
        PIL's format name for the suffix (``"JPEG"``, ``"PNG"``, ...).

    Raises:
        OutputError: unknown suffix, or any reason of :func:`check_writable`.
    """
    path = Path(path)
    fmt = _SAVE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise OutputError(
            f"{path}: unknown image type '{path.suffix}'; use one of {', '.join(_SAVE_FORMATS)}"
        )
    check_writable(path, overwrite=overwrite)
    return fmt


def check_writable(path: str | os.PathLike[str], *, overwrite: bool = False, option: str = "--overwrite") -> Path:
    """Check, before any work, that :func:`write_atomically` can create (or replace) the file ``path``.

    Args:
        path: destination file.
        overwrite: whether an existing file may be replaced.
        option: the option that allows replacing, named in the message.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OutputError: ``path`` is a folder or special file, exists without ``overwrite``, its folder is
            missing, or the folder refuses new files (probed by creating and removing an empty one).
    """
    path = Path(path)
    if path.exists() and not path.is_file():
        raise OutputError(f"{path} is a folder or special file; give a file name")
    if path.exists() and not overwrite:
        raise OutputError(f"{path} already exists; use {option} to replace it")
    if not path.parent.is_dir():
        raise OutputError(f"{path}: the folder {path.parent} does not exist; create it first")
    probe = _temporary_name(path)
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        probe.unlink()
    except OSError as e:
        raise OutputError(
            f"{path}: cannot write in the folder {path.parent} ({e.strerror}); choose another folder or fix its permissions"
        ) from e
    return path


def check_distinct(outputs: Mapping[str, str | os.PathLike[str] | None], inputs: Iterable[str | os.PathLike[str] | None]) -> None:
    """Refuse outputs that are one of the inputs, or one another, whatever ``--overwrite`` says.

    Paths are compared after resolving links and ``..``; existing files are also compared by
    identity (hard links, case-insensitive file systems).

    Args:
        outputs: what each output is (``"--report"``) -> its path, or ``None`` when not written.
        inputs: the files read; ``None`` entries are skipped.

    Raises:
        InputError: naming the output and the file it would replace.
    """
    given = [Path(p) for p in inputs if p is not None]
    seen: list[tuple[str, Path]] = []
    for what, path in outputs.items():
        if path is None:
            continue
        path = Path(path)
        for other in given:
            if _same_file(path, other):
                raise InputError(f"{what} {path} is the input photo or mask {other}; give another output name so it stays intact")
        for other_what, other in seen:
            if _same_file(path, other):
                raise InputError(f"{what} and {other_what} are both {path}; give each its own file name")
        seen.append((what, path))


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def write_atomically(path: str | os.PathLike[str], data: bytes | str | Callable[[BinaryIO], object]) -> Path:
    """Write ``data`` (bytes, UTF-8 text, or a function writing to a binary file) to ``path`` atomically.

    The data goes to a temporary file in the same folder, is flushed to disk and renamed onto
    ``path``: the file is either complete or untouched. On failure the temporary file is removed.

    Raises:
        OutputError: the write failed (permissions, full disk, folder gone), naming ``path``.
    """
    path = Path(path)
    if isinstance(data, str):
        data = data.encode()
    write = data if callable(data) else (lambda f, payload=data: f.write(payload))
    tmp = _temporary_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0o666 & ~umask, like open()
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, ValueError, RuntimeError) as e:
        raise OutputError(f"{path}: cannot write the file ({e}); check permissions and free disk space") from e
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")


def _to_hwc(x: torch.Tensor) -> np.ndarray:
    hwc = x[0].detach().to("cpu", torch.float32).nan_to_num(0.0).clamp(0.0, 1.0).permute(1, 2, 0)
    return np.ascontiguousarray(hwc.numpy())


def _apply_profile(pil: Image.Image, icc: bytes | None, path: Path) -> tuple[Image.Image, bytes | None]:
    """Convert sRGB ``pil`` into an RGB profile; other profiles are replaced by sRGB's."""
    if icc is None:
        return pil, None
    try:
        target = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if target.profile.xcolor_space.strip() != "RGB":
            return pil, srgb_profile()
        return ImageCms.profileToProfile(pil, _srgb(), target, outputMode="RGB"), icc
    except (ImageCms.PyCMSError, OSError, ValueError) as e:
        raise OutputError(f"{path}: the ICC profile to embed is unreadable ({e}); pass none to write sRGB") from e


def _encode_png16(rgb: np.ndarray, alpha: np.ndarray | None, icc: bytes | None, exif: bytes | None) -> bytes:
    """A 48-bit RGB (64-bit RGBA with ``alpha``) PNG, filter 'Up' on every row."""
    pixels = rgb if alpha is None else np.concatenate([rgb, alpha[..., None]], axis=2)
    height, width, channels = pixels.shape
    rows = np.rint(pixels * 65535.0).astype(">u2").view(np.uint8).reshape(height, width * channels * 2)
    filtered = rows.copy()
    filtered[1:] -= rows[:-1]  # wraps modulo 256, as PNG's Up filter requires
    raw = np.concatenate([np.full((height, 1), 2, np.uint8), filtered], axis=1).tobytes()
    chunks = [(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2 if alpha is None else 6, 0, 0, 0))]
    if icc is not None:
        chunks.append((b"iCCP", b"sRGB\0\0" + zlib.compress(icc)))
    if exif is not None:
        chunks.append((b"eXIf", exif.removeprefix(b"Exif\0\0")))
    chunks += [(b"IDAT", zlib.compress(raw, 6)), (b"IEND", b"")]
    body = b"".join(struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d)) for t, d in chunks)
    return b"\x89PNG\r\n\x1a\n" + body


def resize_long_side(image: torch.Tensor, long_side: int) -> torch.Tensor:
    """Resize so that ``max(H, W) == long_side``, keeping the aspect ratio.

    Bicubic with antialiasing (area-like when shrinking), clipped back to [0, 1].

    Args:
        image: ``(B, C, H, W)`` float in [0, 1].
        long_side: target length of the longer side, >= 1.

    Returns:
        ``(B, C, H', W')`` in [0, 1]; ``image`` itself when it already has that size.
    """
    if long_side < 1:
        raise ValueError(f"expected long_side >= 1 but received {long_side}")
    height, width = image.shape[-2:]
    if max(height, width) == long_side:
        return image
    scale = long_side / max(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    resized = F.interpolate(image, size=size, mode="bicubic", align_corners=False, antialias=True)
    return resized.clamp(0.0, 1.0)
