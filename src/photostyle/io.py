"""Read any photo into a ``(1, 3, H, W)`` float tensor in [0, 1] sRGB, and write results atomically.

This is the only module that converts between files and tensors. :func:`load_image` applies the
EXIF orientation, reads 16-bit and float photos at full depth and scales them, converts embedded ICC
profiles (and CMYK) to sRGB, and returns any transparency as a separate alpha plane.
:func:`save_image` picks the format from the file name, writes 8 or 16 bits with the photo's ICC
profile and EXIF where the format holds them, to a temporary file in the destination folder renamed
into place, so a result is either complete or absent.

PIL reads and writes 8-bit data (and greyscale at 16 bits); for deeper photos ``imagecodecs`` decodes
PNG (libpng) and converts colours at 16 bits (Little CMS), ``tifffile`` reads TIFF, and small
encoders here write 16-bit PNG and TIFF.
"""

from __future__ import annotations

import io
import os
import secrets
import struct
import warnings
import zlib
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageCms, ImageOps

from photostyle.errors import InputError, OutputError

__all__ = [
    "LoadedImage", "check_distinct", "check_output_path", "check_writable", "load_image", "output_bit_depth",
    "resize_long_side", "save_image", "srgb_profile", "write_atomically",
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
_FULL_DEPTH_MODES = (*_SIXTEEN_BIT_MODES, "I", "F")  # greyscale that PIL decodes at full depth
# What the full-depth decoders (imagecodecs, tifffile) raise on broken files, besides PIL's errors.
_DEEP_DECODE_ERRORS = (*_DECODE_ERRORS, RuntimeError)
_TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")
# Tags of a TIFF's first IFD that describe the photo (EXIF's IFD0), not the layout of its pixels.
_PHOTO_TAGS = (270, 271, 272, 274, 282, 283, 296, 305, 306, 315, 316, 33432)
_EXIF_IFD, _GPS_IFD, _INTEROP_IFD = 0x8769, 0x8825, 0xA005


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
        mode: PIL's mode of the file before conversion (``"RGB"``, ``"I;16"``, ``"CMYK"``, ...); for
            TIFFs PIL cannot open, channels and sample type such as ``"RGB;32F"`` or ``"LA;16"``.
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
    channels; palette and CMYK images are converted. 16-bit and float photos are read at full
    depth: PIL has no 16-bit RGB mode, so 16-bit RGB(A) and grey+alpha PNGs are decoded by
    ``imagecodecs`` (libpng) and TIFFs of more than 8 bits (integer or float, RGB or grey, with or
    without alpha, any compression) by ``tifffile``; greyscale PIL holds at full depth itself.
    Integer data is divided by the largest value of its type (16-bit by 65535; PIL's 32-bit mode
    ``I`` by 65535 too, as it holds 16-bit data); float data is used as is when its maximum is at
    most 1, else divided by 255 or 65535 (whichever range holds it) or by its maximum, then clipped
    to [0, 1]. Premultiplied TIFF alpha is divided out.

    An embedded ICC profile (RGB, greyscale or CMYK) is converted to sRGB with Little CMS: 8-bit
    data through PIL, deeper data at 16 bits through ``imagecodecs`` (unoptimised transform, exact
    to 1/65535; about half a second per megapixel), so a 16-bit Adobe RGB or ProPhoto master
    keeps its gradations. Converting to sRGB, rather than working in the profile's own encoding,
    keeps content and style comparable (the style photo is sRGB) and follows the library's sRGB
    convention; colours outside sRGB are clipped, and :func:`save_image` converts the result back
    into the content's profile. A profile that cannot be used is ignored with a warning.

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
    deep: _Deep | None = None
    try:
        with warnings.catch_warnings():
            # Our own max_pixels governs; PIL's warning between its two limits would be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                opened = Image.open(path)
            except Image.UnidentifiedImageError:
                if not _is_tiff(path):
                    raise
                fmt = "TIFF"  # float or 32-bit RGB, 16-bit grey+alpha: TIFFs PIL has no mode for
                return _load_tiff_pil_cannot_open(path, max_pixels, colour_manage)
            with opened as im:
                fmt = im.format or fmt
                _check_pixels(path, *im.size, max_pixels)
                mode, bit_depth = im.mode, _bit_depth(im, path)
                icc = im.info.get("icc_profile") or None
                exif = _tiff_exif(im, path) if im.format == "TIFF" else im.info.get("exif") or None
                if bit_depth > 8 and im.mode not in _FULL_DEPTH_MODES and (
                    im.format == "PNG" or (im.format == "TIFF" and im.tag_v2.get(262) in (0, 1, 2))
                ):  # PIL would decode these grey+alpha or RGB(A) photos at 8 bits: decode at full depth instead
                    orientation = _orientation(im, exif, path)
                    deep = _decode_png16(im, path) if im.format == "PNG" else _read_tiff(path)[0]
                else:
                    im.load()
    except Image.UnidentifiedImageError as e:
        raise InputError(
            f"{path}: not an image PIL can read; give a JPEG, PNG, TIFF, WebP or BMP file"
        ) from e
    except Image.DecompressionBombError as e:
        raise InputError(f"{path}: refused as a possible decompression bomb ({e}); downscale it first") from e
    except _DEEP_DECODE_ERRORS as e:
        raise InputError(
            f"{path}: cannot decode the {fmt} data ({e}); the file is truncated or corrupt, re-export it"
        ) from e

    icc_in = icc if colour_manage else None
    if deep is not None:
        rgb, alpha = _deep_to_float_rgb(_orient(deep.pixels, orientation), deep.colour, deep.associated, icc_in, path)
    else:
        try:
            im = ImageOps.exif_transpose(im)
        except _DECODE_ERRORS as e:
            warnings.warn(f"{path}: unreadable EXIF orientation ({e}); the image is used as stored", stacklevel=2)
        if im.mode in _FULL_DEPTH_MODES:
            rgb, alpha = _deep_to_float_rgb(np.asarray(im), 1, False, icc_in, path)
        else:
            rgb, alpha = _to_float_rgb(im, path, icc_in)
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


def _check_pixels(path: Path, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise InputError(
            f"{path}: {width}x{height} is {width * height / 1e6:.0f} megapixels, more than "
            f"the limit of {max_pixels / 1e6:.0f}; downscale it first or raise max_pixels"
        )


class _Deep(NamedTuple):
    """Stored pixels PIL would truncate to 8 bits: ``(H, W, C)`` integers or floats, not yet upright."""

    pixels: np.ndarray
    colour: int  # leading colour channels, 1 (grey) or 3 (RGB); a further channel is alpha
    associated: bool  # the alpha is premultiplied (TIFF ExtraSamples 1)


def _is_tiff(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) in _TIFF_MAGIC


def _decode_png16(im: Image.Image, path: Path) -> _Deep:
    """A 16-bit RGB, RGBA or grey+alpha PNG at full depth (libpng through imagecodecs)."""
    import imagecodecs

    pixels = imagecodecs.png_decode(path.read_bytes())
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    key = im.info.get("transparency")
    if pixels.shape[2] == 3 and isinstance(key, tuple) and len(key) == 3:  # tRNS: one colour is transparent
        alpha = np.where((pixels == np.asarray(key, pixels.dtype)).all(axis=2), 0, 65535).astype(pixels.dtype)
        pixels = np.concatenate([pixels, alpha[..., None]], axis=2)
    return _Deep(pixels, 1 if pixels.shape[2] <= 2 else 3, False)


def _read_tiff(path: Path, max_pixels: int | None = None) -> tuple[_Deep, dict[str, object]]:
    """The first image of a TIFF at full depth (tifffile), and its ``icc``, ``orientation``, ``bits`` and ``mode``.

    Raises:
        InputError: a colour model other than grey or RGB (PIL's 8-bit path handles palette, CMYK and
            YCbCr), or more pixels than ``max_pixels``.
    """
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        photometric = int(page.photometric)
        if photometric not in (0, 1, 2):  # MINISWHITE, MINISBLACK, RGB
            raise InputError(
                f"{path}: {page.bitspersample}-bit TIFF in colour model {page.photometric.name} is not supported; "
                "convert it to RGB first"
            )
        if max_pixels is not None:
            _check_pixels(path, page.imagewidth, page.imagelength, max_pixels)
        pixels = page.asarray()
        if page.axes.startswith("S"):  # planar configuration "separate": samples first
            pixels = np.moveaxis(pixels, 0, -1)
        if pixels.ndim == 2:
            pixels = pixels[..., None]
        colour = 3 if photometric == 2 else 1
        extra = tuple(int(e) for e in page.extrasamples)
        has_alpha = bool(extra) and extra[0] in (1, 2) and pixels.shape[2] > colour  # associated, unassociated
        pixels = pixels[..., : colour + has_alpha]
        if photometric == 0:  # white is zero
            top = np.iinfo(pixels.dtype).max if pixels.dtype.kind in "iu" else 1.0
            pixels = pixels.copy()
            pixels[..., 0] = top - pixels[..., 0]
        kind = "F" if pixels.dtype.kind == "f" else ""
        meta = {
            "icc": page.iccprofile or None,
            "orientation": int(page.tags.valueof(_ORIENTATION, 1)),
            "bits": int(page.bitspersample),
            "mode": f"{'RGB' if colour == 3 else 'L'}{'A' if has_alpha else ''};{page.bitspersample}{kind}",
        }
    return _Deep(pixels, colour, has_alpha and extra[0] == 1), meta


def _load_tiff_pil_cannot_open(path: Path, max_pixels: int, colour_manage: bool) -> LoadedImage:
    """Float, 32-bit or grey+alpha 16-bit TIFFs, for which PIL has no mode. Their EXIF is not read."""
    deep, meta = _read_tiff(path, max_pixels)
    icc = meta["icc"]
    pixels = _orient(deep.pixels, meta["orientation"])
    rgb, alpha = _deep_to_float_rgb(pixels, deep.colour, deep.associated, icc if colour_manage else None, path)
    return LoadedImage(
        tensor=torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).contiguous(),
        alpha=None if alpha is None else torch.from_numpy(alpha)[None, None].contiguous(),
        icc_profile=icc,
        exif=None,
        path=path,
        mode=str(meta["mode"]),
        bit_depth=int(meta["bits"]),
    )


def _orientation(im: Image.Image, exif: bytes | None, path: Path) -> int:
    """The EXIF orientation (1..8) of an opened file, read without decoding its pixels."""
    try:
        if im.format == "TIFF":
            value = im.tag_v2.get(_ORIENTATION, 1)
        elif exif:
            parsed = Image.Exif()
            parsed.load(exif)
            value = parsed.get(_ORIENTATION, 1)
        else:
            return 1
        value = int(value[0] if isinstance(value, tuple) else value)
    except _DECODE_ERRORS as e:
        warnings.warn(f"{path}: unreadable EXIF orientation ({e}); the image is used as stored", stacklevel=3)
        return 1
    return value if 1 <= value <= 8 else 1


def _orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """``(H, W, ...)`` stored pixels turned upright for EXIF ``orientation``, as ``ImageOps.exif_transpose`` does."""
    turn = {
        2: lambda a: a[:, ::-1],  # mirrored
        3: lambda a: a[::-1, ::-1],  # upside down
        4: lambda a: a[::-1],  # upside down, mirrored
        5: lambda a: a.swapaxes(0, 1),  # transposed
        6: lambda a: a.swapaxes(0, 1)[:, ::-1],  # rotated: turn 90 degrees clockwise
        7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],  # transverse
        8: lambda a: a.swapaxes(0, 1)[::-1],  # rotated: turn 90 degrees counter-clockwise
    }.get(orientation)
    return pixels if turn is None else turn(pixels)


def _deep_to_float_rgb(
    pixels: np.ndarray, colour: int, associated: bool, icc: bytes | None, path: Path
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(H, W)`` or ``(H, W, C)`` full-depth data -> ``(H, W, 3)`` float32 sRGB in [0, 1] and alpha or ``None``."""
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    values = _unit_scale(pixels[..., :colour])
    alpha = _unit_scale(pixels[..., colour]) if pixels.shape[2] > colour else None
    if alpha is not None and associated:
        values = np.clip(np.divide(values, alpha[..., None], out=np.zeros_like(values), where=alpha[..., None] > 0), 0, 1)
    if icc is not None:
        values = _to_srgb16(values, icc, path)
    if values.shape[2] == 1:
        values = np.repeat(values, 3, axis=2)
    return np.ascontiguousarray(values, dtype=np.float32), None if alpha is None else np.ascontiguousarray(alpha)


def _unit_scale(x: np.ndarray) -> np.ndarray:
    """Integers divided by their type's largest value (32-bit signed, PIL's mode I, by 65535), floats by the
    smallest of 1, 255, 65535 or their maximum that holds them; float32 clipped to [0, 1]."""
    if x.dtype.kind in "iu":
        scale = 65535.0 if x.dtype.kind == "i" and x.dtype.itemsize >= 4 else float(np.iinfo(x.dtype).max)
        return np.clip(x.astype(np.float32) / np.float32(scale), 0.0, 1.0)
    x = np.nan_to_num(x.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    peak = float(x.max(initial=0.0))
    scale = next((s for s in (1.0, 255.0, 65535.0) if peak <= s), peak)
    return np.clip(x / np.float32(scale), 0.0, 1.0)


def _to_srgb16(values: np.ndarray, icc: bytes, path: Path) -> np.ndarray:
    """``(H, W, 1|3)`` in [0, 1], encoded in ``icc`` -> sRGB ``(H, W, 3)``, converted at 16 bits."""
    if icc == srgb_profile():
        return values
    grey = values.shape[2] == 1
    try:
        converted = _cms16(_quantise16(values[..., 0] if grey else values), icc, srgb_profile(), "gray" if grey else "rgb")
    except (RuntimeError, ValueError, TypeError) as e:
        warnings.warn(f"{path}: embedded ICC profile unusable ({e}); colours treated as sRGB", stacklevel=4)
        return values
    return converted.astype(np.float32) / np.float32(65535.0)


def _quantise16(x: np.ndarray) -> np.ndarray:
    return np.rint(x * np.float32(65535.0)).astype(np.uint16)


def _cms16(data: np.ndarray, source: bytes, target: bytes, colorspace: str) -> np.ndarray:
    """uint16 ``data`` (``(H, W)`` grey or ``(H, W, 3)`` RGB) from profile ``source`` to RGB ``target``, by Little CMS.

    The transform is unoptimised: lcms's optimised 16-bit transforms go through a 3-D table whose
    error near black reaches several hundred 16-bit steps (more than 8-bit rounding); this one is
    exact to a step, at about half a second per megapixel.

    Raises:
        imagecodecs.CmsError (a RuntimeError): a profile is unreadable or does not fit the data.
    """
    import imagecodecs

    return imagecodecs.cms_transform(
        np.ascontiguousarray(data), source, target, colorspace=colorspace, outcolorspace="rgb",
        outdtype=np.uint16, flags=int(imagecodecs.CMS.FLAGS.NOOPTIMIZE),
    )


def _tiff_exif(im: Image.Image, path: Path) -> bytes | None:
    """The EXIF of an opened TIFF, from its tags: descriptive IFD0 tags, Exif and GPS IFDs; ``None`` if none."""
    try:
        exif = Image.Exif()
        for tag, value in _photo_tags(im.getexif()).items():
            exif[tag] = value
        return exif.tobytes() if len(exif) else None
    except _DECODE_ERRORS as e:
        warnings.warn(f"{path}: TIFF EXIF tags unreadable ({e}); they are dropped", stacklevel=3)
        return None


def _photo_tags(stored: Image.Exif) -> dict[int, object]:
    """What EXIF says about the photo: IFD0's descriptive tags (not the layout of any pixels), and the
    Exif (with its Interop) and GPS IFDs as dictionaries."""
    tags: dict[int, object] = {tag: stored[tag] for tag in _PHOTO_TAGS if tag in stored}
    for ifd in (_EXIF_IFD, _GPS_IFD):
        sub = dict(stored.get_ifd(ifd))
        if ifd == _EXIF_IFD and _INTEROP_IFD in sub:
            interop = dict(stored.get_ifd(_INTEROP_IFD))
            if interop:
                sub[_INTEROP_IFD] = interop
            else:
                del sub[_INTEROP_IFD]
        if sub:
            tags[ifd] = sub
    return tags


def _to_float_rgb(im: Image.Image, path: Path, icc: bytes | None) -> tuple[np.ndarray, np.ndarray | None]:
    """8-bit data: ``(H, W, 3)`` float32 in [0, 1] sRGB and the ``(H, W)`` alpha or ``None``."""
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
    photo) the pixels are converted from sRGB into that profile (Little CMS; at 16 bits for
    ``bit_depth=16``) and it is embedded, so the result lives in the same colour space as the
    input. Profiles of other colour spaces (CMYK, grey) cannot be applied: the file is then tagged
    sRGB. BMP carries no profile: it is written sRGB, untagged.

    Alpha is written by PNG, TIFF and WebP; for JPEG and BMP the image is composited on white
    (with a warning). EXIF is written (orientation reset to 1) by JPEG, PNG, TIFF and WebP; in TIFF
    as tags: IFD0's descriptive tags (camera, date, artist, copyright, resolution) and the Exif
    and GPS IFDs. ``bit_depth=16`` is PNG or TIFF (:func:`output_bit_depth` picks it for a deep
    source). PIL has no 16-bit RGB mode, so small encoders here write 16-bit PNG and all TIFFs
    (deflate with the horizontal predictor; PIL's TIFF writer fails on EXIF with an Exif IFD).

    Args:
        image: ``(1, 3, H, W)`` in [0, 1]; values outside are clipped and NaN becomes 0.
        path: destination ending in .jpg, .jpeg, .png, .tif, .tiff, .webp or .bmp (any case).
        alpha: ``(1, 1, H, W)`` in [0, 1], or ``None``.
        icc_profile: see above.
        exif: EXIF block to embed, or ``None``.
        overwrite: replace an existing file.
        quality: JPEG/WebP quality, 1..100.
        bit_depth: 8, or 16 for PNG and TIFF.

    Returns:
        The path written.

    Raises:
        OutputError: unknown suffix, 16 bits asked for a format other than PNG or TIFF, existing
            file without ``overwrite``, missing folder, unreadable ``icc_profile``, or the write
            failed. Nothing is left behind.
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
    if bit_depth == 16 and fmt not in ("PNG", "TIFF"):
        raise OutputError(f"{path}: 16-bit output is written as PNG or TIFF only; use a .png or .tif name or 8 bits")

    exif = _reset_orientation(exif, path)
    if fmt == "BMP":
        icc_profile = None  # BMP embeds no profile here: converting into one would mislabel the colours
    if bit_depth == 16:
        pixels, icc_profile = _apply_profile16(_to_hwc16(image), icc_profile, path)
        if alpha is not None:
            pixels = np.concatenate([pixels, _to_hwc16(alpha)], axis=2)
        data = (_encode_png16 if fmt == "PNG" else _encode_tiff)(pixels, icc_profile, exif)
        write_atomically(path, lambda f: f.write(data))
        return path

    pil = Image.fromarray(_to_hwc8(image))
    pil, icc_profile = _apply_profile(pil, icc_profile, path)
    if alpha is not None:
        a8 = Image.fromarray(_to_hwc8(alpha)[..., 0])
        if fmt in ("JPEG", "BMP"):  # PIL writes no alpha in BMP: composite rather than drop it silently
            warnings.warn(f"{path}: {fmt} keeps no transparency here; composited on white (use PNG, TIFF or WebP "
                          "to keep it)", stacklevel=2)
            pil = Image.composite(pil, Image.new("RGB", pil.size, "white"), a8)
        else:
            pil.putalpha(a8)
    if fmt == "TIFF":
        tiff = _encode_tiff(np.asarray(pil), icc_profile, exif)
        write_atomically(path, lambda f: f.write(tiff))
        return path
    params: dict[str, object] = {}
    if fmt in ("JPEG", "WEBP"):
        params["quality"] = quality
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


def _to_hwc8(x: torch.Tensor, tile_pixels: int = 2**20) -> np.ndarray:
    """``(1, C, H, W)`` in [0, 1] -> ``(H, W, C)`` uint8 (NaN as 0), about ``tile_pixels`` at a time.

    Tile by tile, without full-size float copies: a 50-megapixel photo needs 150 MB here instead of 1.8 GB.
    """
    _, channels, height, width = x.shape
    out = np.empty((height, width, channels), np.uint8)
    rows = max(1, tile_pixels // width)
    for top in range(0, height, rows):
        tile = x[0, :, top : top + rows].detach().to("cpu", torch.float32).nan_to_num(0.0).clamp(0.0, 1.0)
        out[top : top + rows] = (tile.permute(1, 2, 0) * 255.0).round().to(torch.uint8).numpy()
    return out


def _to_hwc16(x: torch.Tensor, tile_pixels: int = 2**20) -> np.ndarray:
    """``(1, C, H, W)`` in [0, 1] -> ``(H, W, C)`` uint16 (NaN as 0), rounded, about ``tile_pixels`` at a time."""
    _, channels, height, width = x.shape
    out = np.empty((height, width, channels), np.uint16)
    rows = max(1, tile_pixels // width)
    for top in range(0, height, rows):
        tile = x[0, :, top : top + rows].detach().to("cpu", torch.float32).nan_to_num(0.0).clamp(0.0, 1.0)
        out[top : top + rows] = (tile.permute(1, 2, 0) * 65535.0).round().to(torch.int32).numpy()
    return out


def _apply_profile16(pixels: np.ndarray, icc: bytes | None, path: Path) -> tuple[np.ndarray, bytes | None]:
    """Convert sRGB uint16 ``pixels`` ``(H, W, 3)`` into an RGB profile at 16 bits; other profiles become sRGB's."""
    if icc is None:
        return pixels, None
    try:
        space = ImageCms.ImageCmsProfile(io.BytesIO(icc)).profile.xcolor_space.strip()
    except (ImageCms.PyCMSError, OSError, ValueError) as e:
        raise OutputError(f"{path}: the ICC profile to embed is unreadable ({e}); pass none to write sRGB") from e
    if space != "RGB":
        return pixels, srgb_profile()
    if icc == srgb_profile():
        return pixels, icc
    try:
        return _cms16(pixels, srgb_profile(), icc, "rgb"), icc
    except (RuntimeError, ValueError, TypeError) as e:
        raise OutputError(f"{path}: cannot convert into the ICC profile to embed ({e}); pass none to write sRGB") from e


def output_bit_depth(path: str | os.PathLike[str], source_bit_depth: int) -> int:
    """The ``bit_depth`` for :func:`save_image` that keeps a source's depth in ``path``'s format.

    16 when the source has more than 8 bits per sample (``LoadedImage.bit_depth``) and ``path``
    is a PNG or TIFF; else 8 (JPEG, WebP and BMP are written at 8 bits).

    >>> output_bit_depth("out.tif", 16), output_bit_depth("out.jpg", 16), output_bit_depth("out.png", 8)
    (16, 8, 8)
    """
    fmt = _SAVE_FORMATS.get(Path(path).suffix.lower())
    return 16 if source_bit_depth > 8 and fmt in ("PNG", "TIFF") else 8


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


def _encode_png16(pixels: np.ndarray, icc: bytes | None, exif: bytes | None) -> bytes:
    """A 48-bit RGB (64-bit RGBA) PNG of uint16 ``pixels`` ``(H, W, 3|4)``, filter 'Up' on every row."""
    height, width, channels = pixels.shape
    rows = pixels.astype(">u2").view(np.uint8).reshape(height, width * channels * 2)
    filtered = rows.copy()
    filtered[1:] -= rows[:-1]  # wraps modulo 256, as PNG's Up filter requires
    raw = np.concatenate([np.full((height, 1), 2, np.uint8), filtered], axis=1)
    chunks = [(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2 if channels == 3 else 6, 0, 0, 0))]
    if icc is not None:
        chunks.append((b"iCCP", b"ICC Profile\0\0" + zlib.compress(icc)))
    if exif is not None:
        chunks.append((b"eXIf", exif.removeprefix(b"Exif\0\0")))
    chunks += [(b"IDAT", _deflate(raw)), (b"IEND", b"")]
    body = b"".join(struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d)) for t, d in chunks)
    return b"\x89PNG\r\n\x1a\n" + body


def _deflate(data: np.ndarray) -> bytes:
    """A zlib stream of the C-contiguous array ``data`` at level 6, by libdeflate (imagecodecs): twice as fast as
    Python's zlib, as small."""
    import imagecodecs

    return imagecodecs.deflate_encode(data, 6)


def _encode_tiff(pixels: np.ndarray, icc: bytes | None, exif: bytes | None) -> bytes:
    """A baseline RGB (RGBA, unassociated alpha) TIFF of uint8 or uint16 ``pixels`` ``(H, W, 3|4)``.

    Little-endian, deflate with the horizontal predictor, strips of about 1 MB compressed on
    several threads. The ICC profile and the EXIF (:func:`_photo_tags`: descriptive IFD0 tags,
    Exif and GPS IFDs) are tags of the image's IFD, which PIL's TIFF directory class serialises.
    """
    from PIL import TiffImagePlugin

    height, width, channels = pixels.shape
    samples = pixels.astype(pixels.dtype.newbyteorder("<"))  # a copy in file byte order
    samples[:, 1:] -= pixels[:, :-1]  # predictor 2: each sample minus its left neighbour, modulo 2**bits
    raw = samples.reshape(height, -1).view(np.uint8)
    rows = max(1, (1 << 20) // raw.shape[1])
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        strips = list(pool.map(lambda top: _deflate(raw[top : top + rows]), range(0, height, rows)))

    ifd = TiffImagePlugin.ImageFileDirectory_v2(prefix=b"II")
    if exif is not None:
        try:
            parsed = Image.Exif()
            parsed.load(exif)
            for tag, value in _photo_tags(parsed).items():
                ifd[tag] = value
        except _DECODE_ERRORS as e:
            warnings.warn(f"EXIF block unreadable ({e}); the TIFF is written without it", stacklevel=3)
            ifd = TiffImagePlugin.ImageFileDirectory_v2(prefix=b"II")
    for tag, default in ((282, TiffImagePlugin.IFDRational(72)), (283, TiffImagePlugin.IFDRational(72)), (296, 2)):
        if tag not in ifd:  # X/YResolution, ResolutionUnit (inch): required by baseline TIFF
            ifd[tag] = default
    layout: dict[int, object] = {
        256: width, 257: height, 258: (8 * pixels.itemsize,) * channels, 259: 8, 262: 2,  # deflate, RGB
        273: tuple(accumulate((len(s) for s in strips[:-1]), initial=0)),  # made absolute by tobytes
        277: channels, 278: rows, 279: tuple(len(s) for s in strips), 284: 1, 317: 2,  # chunky, predictor
    }
    if channels == 4:
        layout[338] = (2,)  # ExtraSamples: unassociated alpha
    if icc is not None:
        layout[34675] = icc
    for tag, value in layout.items():
        ifd[tag] = value
    # The IFD follows the 8-byte header; PIL places the strips after the IFD and its data.
    return b"II*\0" + struct.pack("<I", 8) + ifd.tobytes(8) + b"".join(strips)


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
