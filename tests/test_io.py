import os
import struct
import warnings
import zlib

import imagecodecs
import numpy as np
import pytest
import tifffile
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageCms

from photostyle.errors import InputError, OutputError
from photostyle import cli
from photostyle.io import LoadedImage, _encode_png16, load_image, output_bit_depth, resize_long_side, save_image, srgb_profile

from helpers import png_header_only, random_rgb, truncated_jpeg


def _swapped_srgb_profile() -> bytes:
    """sRGB with the red and green primaries swapped: a valid RGB profile that is not sRGB."""
    data = bytearray(srgb_profile())
    (count,) = struct.unpack(">I", data[128:132])
    table = {bytes(data[132 + 12 * i : 136 + 12 * i]): 132 + 12 * i for i in range(count)}
    r, g = table[b"rXYZ"], table[b"gXYZ"]
    data[r + 4 : r + 12], data[g + 4 : g + 12] = data[g + 4 : g + 12], data[r + 4 : r + 12]
    return bytes(data)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# ---- reading: formats and modes -------------------------------------------------------------


@pytest.mark.parametrize("suffix, fmt", [(".png", "PNG"), (".bmp", "BMP"), (".tif", "TIFF")])
def test_lossless_formats_load_exactly(tmp_path, suffix, fmt):
    pixels = random_rgb(12, 16)
    path = tmp_path / f"photo{suffix}"
    Image.fromarray(pixels).save(path, format=fmt)
    loaded = load_image(path)
    assert isinstance(loaded, LoadedImage)
    assert loaded.tensor.shape == (1, 3, 12, 16) and loaded.tensor.dtype == torch.float32
    assert torch.equal(loaded.tensor, torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255)
    assert loaded.alpha is None and loaded.mode == "RGB" and loaded.bit_depth == 8


def test_jpeg_and_webp_load_close(tmp_path):
    pixels = np.full((16, 16, 3), (200, 60, 30), np.uint8)
    for fmt, suffix in (("JPEG", ".jpg"), ("WEBP", ".webp")):
        path = tmp_path / f"photo{suffix}"
        Image.fromarray(pixels).save(path, format=fmt, quality=95)
        loaded = load_image(path)
        expected = torch.tensor([200, 60, 30]).view(1, 3, 1, 1) / 255
        assert (loaded.tensor - expected).abs().max() < 0.03, fmt


def test_png_named_jpg_is_sniffed(tmp_path):
    path = tmp_path / "actually_png.jpg"
    Image.fromarray(random_rgb(12, 16)).save(path, format="PNG")
    assert load_image(path).tensor.shape == (1, 3, 12, 16)


def test_sixteen_bit_greyscale_png_keeps_precision(tmp_path):
    values = np.array([[0, 1, 32768, 65535]], dtype=np.uint16)
    path = tmp_path / "grey16.png"
    Image.fromarray(values).save(path)
    loaded = load_image(path)
    assert loaded.bit_depth == 16 and loaded.mode.startswith("I;16")
    expected = torch.from_numpy(values.astype(np.float32) / 65535)
    for c in range(3):
        assert torch.allclose(loaded.tensor[0, c], expected, atol=1e-7)


def _fine_steps(channels: int = 3) -> np.ndarray:
    """uint16 ``(4, 6, channels)`` whose values mostly differ by less than 1/255: 8 bits would merge them."""
    values = (30000 + np.arange(4 * 6 * channels) * 7).astype(np.uint16)
    return values.reshape(4, 6, channels)


def _as_uint16(x: torch.Tensor) -> np.ndarray:
    return np.rint(x[0].permute(1, 2, 0).double().numpy() * 65535).astype(np.int64)


def test_sixteen_bit_rgb_png_loads_with_its_depth_reported(tmp_path):
    image = torch.rand(1, 3, 5, 7, generator=torch.Generator().manual_seed(1))
    path = save_image(image, tmp_path / "rgb48.png", bit_depth=16)
    loaded = load_image(path)
    assert loaded.bit_depth == 16
    assert (loaded.tensor - image).abs().max() <= 0.5 / 65535 + 1e-7


@pytest.mark.parametrize("channels", [3, 4, 2], ids=["rgb", "rgba", "grey-alpha"])
def test_sixteen_bit_png_read_at_full_depth(tmp_path, channels):
    stored = _fine_steps(channels)
    path = tmp_path / "deep.png"
    path.write_bytes(imagecodecs.png_encode(stored))  # libpng's encoder, not ours
    loaded = load_image(path)
    assert loaded.bit_depth == 16
    colour = 3 if channels >= 3 else 1
    expected = np.broadcast_to(stored[..., :colour], (4, 6, 3))
    assert np.array_equal(_as_uint16(loaded.tensor), expected)
    assert len(np.unique(_as_uint16(loaded.tensor))) == stored[..., :colour].size  # 8 bits would merge them
    if channels in (2, 4):
        assert np.array_equal(_as_uint16(loaded.alpha)[..., 0], stored[..., -1])


@pytest.mark.parametrize(
    "options",
    [{}, {"compression": "zlib", "predictor": True}, {"compression": "lzw"}, {"planarconfig": "separate"}],
    ids=["raw", "deflate-predictor", "lzw", "planar"],
)
def test_sixteen_bit_rgb_tiff_read_at_full_depth(tmp_path, options):
    stored = _fine_steps()
    path = tmp_path / "deep.tif"
    tifffile.imwrite(path, np.moveaxis(stored, 2, 0) if options.get("planarconfig") else stored, photometric="rgb", **options)
    loaded = load_image(path)
    assert loaded.bit_depth == 16 and loaded.mode == "RGB"
    assert np.array_equal(_as_uint16(loaded.tensor), stored)


def test_sixteen_bit_tiff_alpha_premultiplied_is_divided_out(tmp_path):
    colour = np.full((2, 3, 3), 40000, np.uint16)
    alpha = np.full((2, 3, 1), 32768, np.uint16)
    for extrasamples, stored in (("unassalpha", colour), ("assocalpha", (colour * (alpha / 65535)).round().astype(np.uint16))):
        path = tmp_path / f"{extrasamples}.tif"
        tifffile.imwrite(path, np.concatenate([stored, alpha], axis=2), photometric="rgb", extrasamples=[extrasamples])
        loaded = load_image(path)
        assert torch.allclose(loaded.tensor, torch.full_like(loaded.tensor, 40000 / 65535), atol=2 / 65535), extrasamples
        assert torch.allclose(loaded.alpha, torch.full_like(loaded.alpha, 32768 / 65535))


@pytest.mark.parametrize("scale", [1.0, 255.0])
def test_float_rgb_tiff_read(tmp_path, scale):
    values = np.random.default_rng(4).random((3, 5, 3), dtype=np.float32)
    path = tmp_path / "float-rgb.tif"
    tifffile.imwrite(path, values * np.float32(scale), photometric="rgb")  # PIL cannot open these
    loaded = load_image(path)
    assert loaded.mode == "RGB;32F" and loaded.bit_depth == 32 and loaded.alpha is None
    assert torch.allclose(loaded.tensor[0].permute(1, 2, 0), torch.from_numpy(values), atol=1e-6)


def test_sixteen_bit_grey_alpha_tiff_read(tmp_path):
    stored = _fine_steps(2)
    path = tmp_path / "grey-alpha.tif"
    tifffile.imwrite(path, stored, photometric="minisblack", extrasamples=["unassalpha"])  # PIL cannot open it
    loaded = load_image(path)
    assert loaded.mode == "LA;16" and loaded.bit_depth == 16
    assert np.array_equal(_as_uint16(loaded.tensor), np.repeat(stored[..., :1], 3, axis=2))
    assert np.array_equal(_as_uint16(loaded.alpha)[..., 0], stored[..., 1])


def test_sixteen_bit_png_with_broken_profile_warns_and_loads(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(_encode_png16(_fine_steps(), b"not a profile" * 20, None))
    with pytest.warns(UserWarning, match="ICC profile unusable"):
        loaded = load_image(path)
    assert np.array_equal(_as_uint16(loaded.tensor), _fine_steps())


def test_sixteen_bit_png_profile_converted_at_full_depth(tmp_path):
    icc = _swapped_srgb_profile()
    stored = np.zeros((3, 3, 3), np.uint16)
    stored[..., 0] = 65535  # red as stored: green once the swapped profile is applied
    stored[1, 1, 2] = 3  # below 1/255: survives the 16-bit conversion
    path = tmp_path / "tagged.png"
    path.write_bytes(_encode_png16(stored, icc, None))
    loaded = load_image(path)
    assert loaded.icc_profile == icc
    assert torch.allclose(loaded.tensor[0, :, 0, 0], torch.tensor([0.0, 1.0, 0.0]), atol=2 / 65535)
    assert 0 < loaded.tensor[0, 2, 1, 1] * 65535 < 6


@pytest.mark.parametrize("scale", [1.0, 255.0, 65535.0])
def test_float_tiff_is_scaled(tmp_path, scale):
    values = np.array([[0.0, 0.25], [0.5, 1.0]], dtype=np.float32)
    path = tmp_path / "float.tif"
    Image.fromarray(values * scale).save(path)
    loaded = load_image(path)
    assert loaded.mode == "F" and loaded.bit_depth == 32
    assert torch.allclose(loaded.tensor[0, 1], torch.from_numpy(values), atol=1e-6)


def test_cmyk_jpeg_converted(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(path, quality=100)
    loaded = load_image(path)
    assert loaded.mode == "CMYK"
    red = loaded.tensor[0, :, 4, 4]
    assert red[0] > 0.9 and red[1] < 0.1 and red[2] < 0.1


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied_to_sixteen_bit_data_as_pil_does(tmp_path, orientation):
    stored8 = np.minimum(random_rgb(3, 5, seed=orientation), 254)  # room for the +1 below
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "Camera maker"
    eight, deep = tmp_path / "eight.png", tmp_path / "deep.png"
    Image.fromarray(stored8).save(eight, exif=exif.tobytes())  # PIL turns it upright itself
    deep.write_bytes(_encode_png16(stored8.astype(np.uint16) * 257 + 1, None, exif.tobytes()))  # +1: not 8-bit data
    expected, loaded = load_image(eight), load_image(deep)
    assert loaded.bit_depth == 16
    assert loaded.tensor.shape == expected.tensor.shape
    assert np.array_equal(_as_uint16(loaded.tensor), _as_uint16(expected.tensor) + 1)
    reread = Image.Exif()
    reread.load(loaded.exif)
    assert reread[0x0112] == 1 and reread[0x010F] == "Camera maker"


def test_tiff_orientation_applied_to_sixteen_bit_data(tmp_path):
    stored = _fine_steps()  # 4 high, 6 wide; shown turned 90 degrees clockwise
    path = tmp_path / "rotated.tif"
    tifffile.imwrite(path, stored, photometric="rgb", extratags=[(0x0112, "H", 1, 6, True)])
    loaded = load_image(path)
    assert np.array_equal(_as_uint16(loaded.tensor), np.rot90(stored, k=-1))


def test_exif_orientation_applied_and_reset(tmp_path):
    stored = np.zeros((10, 20, 3), np.uint8)
    stored[:2, :2] = 255  # white corner at top-left as stored
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    for suffix in (".jpg", ".png"):
        path = tmp_path / f"rotated{suffix}"
        image.save(path, exif=exif.tobytes())
        loaded = load_image(path)
        assert loaded.tensor.shape == (1, 3, 20, 10), suffix
        assert loaded.tensor[0, :, 0, 9].min() > 0.8 and loaded.tensor[0, :, 0, 0].max() < 0.2  # corner now top-right
        reread = Image.Exif()
        reread.load(loaded.exif)
        assert reread[0x0112] == 1


def test_greyscale_replicated(tmp_path):
    path = tmp_path / "grey.png"
    Image.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4) * 20).save(path)
    t = load_image(path).tensor
    assert torch.equal(t[:, 0], t[:, 1]) and torch.equal(t[:, 1], t[:, 2])
    assert t[0, 0, 2, 3] == pytest.approx(220 / 255)


def test_palette_with_transparency(tmp_path):
    image = Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.putpixel((0, 0), 0)
    path = tmp_path / "palette.png"
    image.save(path, transparency=0)
    loaded = load_image(path)
    assert loaded.alpha is not None and loaded.alpha.shape == (1, 1, 4, 4)
    assert loaded.alpha[0, 0, 0, 0] == 0 and loaded.alpha[0, 0, 1:, :].min() == 1
    assert torch.allclose(loaded.tensor[0, :, 2, 2], torch.tensor([1.0, 0.0, 0.0]))


def test_rgba_alpha_separate_and_colour_unflattened(tmp_path):
    pixels = np.zeros((2, 2, 4), np.uint8)
    pixels[..., :3] = (10, 200, 30)
    pixels[..., 3] = [[0, 128], [255, 255]]
    path = tmp_path / "rgba.png"
    Image.fromarray(pixels).save(path)
    loaded = load_image(path)
    assert torch.allclose(loaded.alpha[0, 0], torch.tensor([[0, 128], [255, 255]]) / 255)
    assert torch.allclose(loaded.tensor[0, :, 0, 0], torch.tensor([10, 200, 30]) / 255)  # colour kept


def test_one_pixel_image(tmp_path):
    path = tmp_path / "tiny.png"
    Image.new("RGB", (1, 1), (255, 0, 0)).save(path)
    assert torch.equal(load_image(path).tensor, torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1))


def test_icc_profile_converted_to_srgb(tmp_path):
    icc = _swapped_srgb_profile()
    path = tmp_path / "tagged.png"
    Image.new("RGB", (3, 3), (255, 0, 0)).save(path, icc_profile=icc)
    loaded = load_image(path)
    assert loaded.icc_profile == icc
    assert torch.allclose(loaded.tensor[0, :, 1, 1], torch.tensor([0.0, 1.0, 0.0]), atol=0.02)
    raw = load_image(path, colour_manage=False)
    assert torch.allclose(raw.tensor[0, :, 1, 1], torch.tensor([1.0, 0.0, 0.0]))


def test_broken_icc_profile_warns_and_loads(tmp_path):
    path = tmp_path / "badicc.png"
    Image.new("RGB", (3, 3), (0, 0, 255)).save(path, icc_profile=b"not a profile at all")
    with pytest.warns(UserWarning, match="ICC profile unusable"):
        loaded = load_image(path)
    assert torch.allclose(loaded.tensor[0, :, 0, 0], torch.tensor([0.0, 0.0, 1.0]))


# ---- reading: refusals ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, match",
    [
        (truncated_jpeg, "truncated or corrupt"),
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_text("hello, this is not a picture\n"), "not an image"),
        (lambda p: p.mkdir(), "directory"),
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(png_header_only(100_000, 100_000)), "decompression bomb|megapixels"),
        (lambda p: p.write_bytes(png_header_only(12_000, 12_000)), "144 megapixels, more than the limit"),
    ],
    ids=["truncated", "zero-byte", "text", "directory", "missing", "bomb", "over-max-pixels"],
)
def test_unusable_files_raise_input_error(tmp_path, make, match):
    path = tmp_path / "input.jpg"
    make(path)
    with pytest.raises(InputError, match=match) as info:
        load_image(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message


def test_max_pixels_checked_before_decoding(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (100, 100)).save(path)
    with pytest.raises(InputError, match="raise max_pixels"):
        load_image(path, max_pixels=9_999)
    assert load_image(path, max_pixels=10_000).tensor.shape == (1, 3, 100, 100)


def test_no_file_handles_leak(tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (4, 4)).save(good)
    bad = tmp_path / "bad.jpg"
    truncated_jpeg(bad)
    load_image(good)
    before = _open_fds()
    for _ in range(20):
        load_image(good)
        with pytest.raises(InputError):
            load_image(bad)
    assert _open_fds() == before


_SIGNATURES = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*", b"RIFF"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prefix=st.sampled_from(_SIGNATURES), body=st.binary(max_size=400))
def test_random_bytes_load_or_raise_input_error(tmp_path, prefix, body):
    path = tmp_path / "fuzz.img"
    path.write_bytes(prefix + body)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            loaded = load_image(path, max_pixels=1_000_000)
        except InputError:
            return
    assert loaded.tensor.ndim == 4 and loaded.tensor.shape[1] == 3
    assert float(loaded.tensor.min()) >= 0 and float(loaded.tensor.max()) <= 1


_VALID_KINDS = [  # (PIL mode, format) pairs PIL writes
    *[(mode, "PNG") for mode in ("1", "L", "LA", "P", "RGB", "RGBA", "I;16")],
    *[(mode, "JPEG") for mode in ("L", "RGB", "CMYK")],
    *[(mode, "TIFF") for mode in ("1", "L", "P", "RGB", "RGBA", "CMYK", "I;16", "F")],
    *[(mode, "WEBP") for mode in ("RGB", "RGBA")],
    *[(mode, "BMP") for mode in ("1", "L", "P", "RGB")],
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(_VALID_KINDS), width=st.integers(1, 24), height=st.integers(1, 24), seed=st.integers(0, 2**16))
def test_random_valid_images_load_in_range(tmp_path, kind, width, height, seed):
    mode, fmt = kind
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    elif mode == "F":
        image = Image.fromarray(rng.random((height, width), dtype=np.float32) * 300)
    else:
        image = Image.fromarray(rng.integers(0, 256, (height, width, 4), dtype=np.uint8), "RGBA")
        image = image.convert(mode) if "A" in mode else image.convert("RGB").convert(mode)
    path = tmp_path / "valid.img"
    image.save(path, format=fmt)
    loaded = load_image(path)
    assert loaded.tensor.shape == (1, 3, height, width) and loaded.tensor.dtype == torch.float32
    assert float(loaded.tensor.min()) >= 0 and float(loaded.tensor.max()) <= 1
    assert (loaded.alpha is not None) == ("A" in mode)


# ---- writing --------------------------------------------------------------------------------


def test_png_round_trip_is_exact(tmp_path):
    pixels = random_rgb(9, 11, seed=3)
    source = tmp_path / "in.png"
    Image.fromarray(pixels).save(source)
    loaded = load_image(source)
    out = save_image(loaded.tensor, tmp_path / "out.png")
    assert np.array_equal(np.asarray(Image.open(out)), pixels)


@pytest.mark.parametrize("suffix", [".jpg", ".JPEG", ".png", ".tif", ".tiff", ".webp", ".bmp"])
def test_every_format_writes_a_readable_file(tmp_path, suffix):
    image = torch.full((1, 3, 6, 8), 0.5)
    out = save_image(image, tmp_path / f"out{suffix}")
    assert (load_image(out).tensor - 0.5).abs().max() < 0.03
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary file left


def test_refuses_to_overwrite_without_flag(tmp_path):
    target = tmp_path / "result.png"
    target.write_bytes(b"precious")
    with pytest.raises(OutputError, match="--overwrite"):
        save_image(torch.zeros(1, 3, 2, 2), target)
    assert target.read_bytes() == b"precious"
    save_image(torch.zeros(1, 3, 2, 2), target, overwrite=True)
    assert load_image(target).tensor.shape == (1, 3, 2, 2)
    assert len(list(tmp_path.iterdir())) == 1


def test_unknown_suffix_lists_valid_ones(tmp_path):
    with pytest.raises(OutputError, match=r"\.png.*\.webp"):
        save_image(torch.zeros(1, 3, 2, 2), tmp_path / "out.gif")
    assert list(tmp_path.iterdir()) == []


def test_missing_folder_is_reported(tmp_path):
    with pytest.raises(OutputError, match="does not exist; create it first"):
        save_image(torch.zeros(1, 3, 2, 2), tmp_path / "missing" / "out.png")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_folder_leaves_nothing(tmp_path):
    readonly = tmp_path / "ro"
    readonly.mkdir()
    readonly.chmod(0o500)
    try:
        if os.access(readonly, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        with pytest.raises(OutputError, match="cannot write"):
            save_image(torch.zeros(1, 3, 2, 2), readonly / "out.png")
        assert list(readonly.iterdir()) == []
    finally:
        readonly.chmod(0o700)


def test_encoder_failure_cleans_up(tmp_path, monkeypatch):
    def fail_halfway(self, fp, format=None, **params):
        fp.write(b"partial data")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", fail_halfway)
    with pytest.raises(OutputError, match="cannot write the file .disk full"):
        save_image(torch.zeros(1, 3, 2, 2), tmp_path / "out.jpg")
    assert list(tmp_path.iterdir()) == []


def test_sixteen_bit_png_is_exact(tmp_path):
    values = torch.tensor([0, 1, 257, 32768, 65534, 65535], dtype=torch.float64) / 65535
    image = torch.stack([values, values.flip(0), values]).view(1, 3, 1, 6).repeat(1, 1, 3, 1).float()
    alpha = torch.linspace(0, 1, 18).view(1, 1, 3, 6)
    out = save_image(image, tmp_path / "deep.png", alpha=alpha, bit_depth=16)
    data = out.read_bytes()
    assert Image.open(out).size == (6, 3)  # a valid PNG (PIL checks the CRCs)
    idat = data.index(b"IDAT")
    (length,) = struct.unpack(">I", data[idat - 4 : idat])
    raw = np.frombuffer(zlib.decompress(data[idat + 4 : idat + 4 + length]), np.uint8).reshape(3, -1)
    assert (raw[:, 0] == 2).all()  # 'Up' filter
    rows = np.cumsum(raw[:, 1:], axis=0, dtype=np.uint8)  # undo Up: running sum modulo 256
    decoded = rows.view(">u2").reshape(3, 6, 4).astype(np.int64)
    expected = np.rint(torch.cat([image, alpha], 1)[0].permute(1, 2, 0).double().numpy() * 65535)
    assert np.array_equal(decoded, expected)


def test_sixteen_bit_only_png_and_tiff(tmp_path):
    with pytest.raises(OutputError, match="PNG or TIFF only"):
        save_image(torch.zeros(1, 3, 2, 2), tmp_path / "deep.jpg", bit_depth=16)
    assert output_bit_depth(tmp_path / "out.TIF", 16) == 16 and output_bit_depth(tmp_path / "out.png", 32) == 16
    assert output_bit_depth(tmp_path / "out.webp", 16) == 8 and output_bit_depth(tmp_path / "out.tif", 8) == 8


def _camera_exif(orientation: int = 6) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "Camera maker"
    exif[0x0112] = orientation
    exif[0x8769] = {0x829A: 0.004, 0x9003: "2024:01:02 03:04:05"}  # Exif IFD: exposure time, date taken
    return exif.tobytes()


@pytest.mark.parametrize("icc", [srgb_profile(), _swapped_srgb_profile()], ids=["srgb", "swapped"])
def test_sixteen_bit_tiff_written_with_profile_round_trips(tmp_path, icc):
    values = torch.tensor([0, 1, 2, 257, 30000, 30001, 65534, 65535], dtype=torch.float64) / 65535
    image = torch.stack([values, values.flip(0), values.roll(3)]).view(1, 3, 2, 4).float()
    alpha = torch.linspace(0, 1, 8).view(1, 1, 2, 4)
    out = save_image(image, tmp_path / "deep.tif", alpha=alpha, icc_profile=icc, exif=_camera_exif(), bit_depth=16)
    with tifffile.TiffFile(out) as tif:  # an independent reader
        page = tif.pages.first
        stored = page.asarray()
        assert stored.dtype == np.uint16 and stored.shape == (2, 4, 4)
        assert page.iccprofile == icc
        assert page.tags.valueof(271) == "Camera maker" and page.tags.valueof(0x0112, 1) == 1
        assert page.tags.valueof("ExifTag")["ExposureTime"] == pytest.approx(0.004)
    assert np.array_equal(stored[..., 3], _as_uint16(alpha)[..., 0])
    if icc == srgb_profile():
        assert np.array_equal(stored[..., :3], _as_uint16(image))  # the identity: stored as given
    else:
        assert np.abs(stored[..., 1].astype(int) - _as_uint16(image)[..., 0]).max() <= 2  # red stored as green
    loaded = load_image(out)
    assert loaded.bit_depth == 16 and loaded.icc_profile == icc
    assert (loaded.tensor - image).abs().max() <= 1 / 65535 + 1e-7
    assert torch.equal(loaded.alpha, (torch.from_numpy(stored[..., 3]).double() / 65535).float()[None, None])
    reread = Image.Exif()
    reread.load(loaded.exif)
    assert reread[0x010F] == "Camera maker" and reread[0x0112] == 1
    assert reread.get_ifd(0x8769)[0x9003] == "2024:01:02 03:04:05"


def test_eight_bit_tiff_keeps_exif_ifd_and_profile(tmp_path):
    image = torch.rand(1, 3, 4, 5, generator=torch.Generator().manual_seed(2))
    out = save_image(image, tmp_path / "out.tif", icc_profile=srgb_profile(), exif=_camera_exif())  # PIL's writer fails here
    with Image.open(out) as written:
        assert written.mode == "RGB" and written.info["icc_profile"] == srgb_profile()
        assert np.array_equal(np.asarray(written), np.rint(image[0].permute(1, 2, 0).numpy() * 255))
        assert written.getexif()[0x010F] == "Camera maker"
        assert written.getexif().get_ifd(0x8769)[0x829A] == pytest.approx(0.004)


def test_bmp_stays_srgb_whatever_the_profile(tmp_path):
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1).expand(1, 3, 3, 3)
    out = save_image(red, tmp_path / "out.bmp", icc_profile=_swapped_srgb_profile())
    assert tuple(np.asarray(Image.open(out))[1, 1]) == (255, 0, 0)


def test_transfer_of_sixteen_bit_tiff_writes_sixteen_bit_tiff_with_its_profile(tmp_path, capsys):
    icc = _swapped_srgb_profile()
    rng = np.random.default_rng(5)
    content, style, out = tmp_path / "content.tif", tmp_path / "style.png", tmp_path / "out.tif"
    tifffile.imwrite(  # a retoucher's master: 16 bits, its own profile, camera EXIF tags
        content, rng.integers(0, 65536, (40, 48, 3), dtype=np.uint16), photometric="rgb", iccprofile=icc,
        compression="zlib", predictor=True, extratags=[(0x010F, "s", 0, "Camera maker", True)],
    )
    Image.fromarray(random_rgb(36, 40, seed=6)).save(style)
    code = cli.main(["transfer", str(content), str(style), "-o", str(out), "--weights", "none", "--size", "32",
                     "--iterations", "1", "--segmentation", "none", "-q"])
    assert code == 0, capsys.readouterr().err
    with tifffile.TiffFile(out) as tif:
        page = tif.pages.first
        stored = page.asarray()
        assert stored.dtype == np.uint16 and stored.shape == (40, 48, 3)
        assert page.iccprofile == icc
        assert page.tags.valueof(0x010F) == "Camera maker"
    inner = stored[(stored > 0) & (stored < 65535)]
    assert (inner % 257 != 0).mean() > 0.9  # 16-bit values, not 8-bit ones scaled up


def test_alpha_and_metadata_written(tmp_path):
    image = torch.rand(1, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    alpha = torch.zeros(1, 1, 4, 5)
    alpha[..., :2, :] = 1
    exif = Image.Exif()
    exif[0x0112] = 8
    exif[0x010F] = "Camera maker"
    out = save_image(image, tmp_path / "out.png", alpha=alpha, exif=exif.tobytes(), icc_profile=srgb_profile())
    loaded = load_image(out)
    assert torch.equal(loaded.alpha, alpha)
    assert loaded.tensor.shape == (1, 3, 4, 5)  # orientation was reset, so no rotation on reload
    reread = Image.Exif()
    reread.load(loaded.exif)
    assert reread[0x0112] == 1 and reread[0x010F] == "Camera maker"
    assert loaded.icc_profile == srgb_profile()


def test_jpeg_with_alpha_composited_on_white(tmp_path):
    with pytest.warns(UserWarning, match="composited on white"):
        out = save_image(torch.zeros(1, 3, 8, 8), tmp_path / "out.jpg", alpha=torch.zeros(1, 1, 8, 8))
    assert load_image(out).tensor.min() > 0.95


def test_save_converts_into_given_rgb_profile(tmp_path):
    icc = _swapped_srgb_profile()
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1).expand(1, 3, 3, 3)
    out = save_image(red, tmp_path / "out.png", icc_profile=icc)
    stored = np.asarray(Image.open(out))[1, 1]
    assert stored[1] > 240 and stored[0] < 15  # stored as green in the swapped space ...
    loaded = load_image(out)
    assert loaded.icc_profile == icc
    assert torch.allclose(loaded.tensor[0, :, 1, 1], torch.tensor([1.0, 0.0, 0.0]), atol=0.02)  # ... read as red


def test_save_rejects_bad_shapes(tmp_path):
    with pytest.raises(ValueError, match=r"\(1, 3, H, W\)"):
        save_image(torch.zeros(3, 4, 4), tmp_path / "x.png")
    with pytest.raises(ValueError, match="alpha"):
        save_image(torch.zeros(1, 3, 4, 4), tmp_path / "x.png", alpha=torch.zeros(1, 1, 2, 2))


# ---- resizing -------------------------------------------------------------------------------


def test_resize_long_side():
    image = torch.rand(1, 3, 394, 700, generator=torch.Generator().manual_seed(0))
    small = resize_long_side(image, 350)
    assert small.shape == (1, 3, 197, 350)
    assert small.min() >= 0 and small.max() <= 1
    assert resize_long_side(image, 700) is image
    tall = resize_long_side(torch.full((1, 3, 40, 10), 0.3), 8)
    assert tall.shape == (1, 3, 8, 2) and torch.allclose(tall, torch.full_like(tall, 0.3), atol=1e-5)
