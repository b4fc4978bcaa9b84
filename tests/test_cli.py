"""The command line answers every bad input with one line, the file, the problem and an exit code.

Each case runs ``photostyle transfer`` in this process on tiny generated photos with a random
network (``--weights none``), one step at 32 px, so the whole file takes a few seconds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from photostyle import cli, pipeline, runtime
from photostyle.errors import DeviceError, InputError
from photostyle.io import save_image

from helpers import png_header_only, random_rgb, truncated_jpeg, write_photo

FAST = ["--weights", "none", "--size", "32", "--iterations", "1", "--segmentation", "none", "-q"]
MASKS = ["--segmentation", "masks"]
CONTENT_SIZE = (48, 40)  # width x height, as PIL reports it


def _two_colour_mask(path: Path, width: int, height: int, colours: tuple) -> Path:
    mask = np.zeros((height, width, 3), np.uint8)
    mask[:, : width // 2] = colours[0]
    mask[:, width // 2 :] = colours[-1]
    Image.fromarray(mask).save(path)
    return path


@pytest.fixture
def photos(tmp_path) -> dict[str, Path]:
    """A content and a style photo, and a folder for outputs."""
    content, style = tmp_path / "content.png", tmp_path / "style.png"
    write_photo(content, *CONTENT_SIZE, seed=1)
    write_photo(style, 40, 36, seed=2)
    return {"content": content, "style": style, "dir": tmp_path}


def run(capsys, *args: str | Path) -> tuple[int, str]:
    code = cli.main(["transfer", *map(str, args)])
    return code, capsys.readouterr().err


def assert_one_error_line(err: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.startswith("photostyle: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# ---- photos that cannot be used: exit 2, the file named ----------------------------------------


BAD_PHOTOS = {
    "truncated-jpeg": ("bad.jpg", truncated_jpeg, "truncated or corrupt"),
    "zero-byte": ("bad.png", lambda p: p.write_bytes(b""), "empty (0 bytes)"),
    "not-an-image": ("bad.png", lambda p: p.write_text("name,age\nann,3\n"), "not an image"),
    "missing": ("bad.png", lambda p: None, "no such file"),
    "directory": ("bad.png", lambda p: p.mkdir(), "is a directory"),
    "huge-header": ("bad.png", lambda p: p.write_bytes(png_header_only(100_000, 100_000)), "decompression bomb"),
    "over-max-pixels": ("bad.png", lambda p: p.write_bytes(png_header_only(12_000, 12_000)),
                        "144 megapixels, more than the limit of 120; downscale it first"),
    "one-pixel": ("bad.png", lambda p: Image.new("RGB", (1, 1)).save(p),
                  "the photo is 1x1; photostyle needs at least 16 px on the short side"),
    "too-thin-at-working-size": ("bad.png", lambda p: write_photo(p, 200, 20),
                                 "only 3 px on the short side at working size 32; photostyle needs at least 16: use --size 160"),
}


@pytest.mark.parametrize("role", ["content", "style"])
@pytest.mark.parametrize("case", list(BAD_PHOTOS))
def test_bad_photo_is_one_line_and_exit_2(capsys, photos, case, role):
    name, make, fragment = BAD_PHOTOS[case]
    bad = photos["dir"] / name
    make(bad)
    others = {**photos, role: bad}
    code, err = run(capsys, others["content"], others["style"], "-o", photos["dir"] / "out.png", *FAST)
    assert code == 2
    assert_one_error_line(err, str(bad), fragment)
    assert not (photos["dir"] / "out.png").exists()


def test_suggested_size_works(capsys, photos):
    thin = photos["dir"] / "thin.png"
    write_photo(thin, 200, 20)
    code, err = run(capsys, thin, photos["style"], "-o", photos["dir"] / "out.png", *FAST, "--size", "160", "--levels", "1")
    assert code == 0, err
    assert Image.open(photos["dir"] / "out.png").size == (200, 20)


# ---- unusual photos that work ------------------------------------------------------------------


def _png_named_jpg(path: Path) -> Path:
    path = path.with_suffix(".jpg")
    Image.fromarray(random_rgb(*CONTENT_SIZE[::-1])).save(path, format="PNG")
    return path


def _grey16(path: Path) -> Path:
    ramp = np.linspace(0, 65535, CONTENT_SIZE[0] * CONTENT_SIZE[1]).reshape(CONTENT_SIZE[::-1]).astype(np.uint16)
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode == "I;16"
    return path


def _rgb16(path: Path) -> Path:
    save_image(torch.rand(1, 3, CONTENT_SIZE[1], CONTENT_SIZE[0]), path, bit_depth=16)
    return path


def _cmyk(path: Path) -> Path:
    path = path.with_suffix(".jpg")
    Image.fromarray(random_rgb(*CONTENT_SIZE[::-1])).convert("CMYK").save(path)
    return path


@pytest.mark.parametrize("make", [_png_named_jpg, _grey16, _rgb16, _cmyk], ids=["png-named-jpg", "grey16", "rgb16", "cmyk"])
def test_unusual_photos_work(capsys, photos, make):
    content = make(photos["dir"] / "odd.png")
    out = photos["dir"] / "out.png"
    code, err = run(capsys, content, photos["style"], "-o", out, *FAST)
    assert code == 0, err
    assert Image.open(out).size == CONTENT_SIZE


def test_exif_rotated_photo_is_used_upright(capsys, photos):
    content = photos["dir"] / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40 wide and 48 high, shown rotated by 90 degrees: 48 x 40
    Image.fromarray(random_rgb(48, 40)).save(content, exif=exif)
    out = photos["dir"] / "out.jpg"
    code, err = run(capsys, content, photos["style"], "-o", out, *FAST)
    assert code == 0, err
    with Image.open(out) as written:
        assert written.size == (48, 40)
        assert written.getexif().get(0x0112, 1) == 1


# ---- masks ---------------------------------------------------------------------------------------

RED, BLUE, ODD = (255, 0, 0), (0, 0, 255), (123, 77, 200)


def _masks(photos, content_mask_size=CONTENT_SIZE, content_colours=(RED, BLUE), style_colours=(RED, BLUE)):
    d = photos["dir"]
    return (
        _two_colour_mask(d / "content_mask.png", *content_mask_size, content_colours),
        _two_colour_mask(d / "style_mask.png", 40, 36, style_colours),
    )


def test_mask_of_another_size_is_resized_with_a_warning(capsys, photos):
    content_mask, style_mask = _masks(photos, content_mask_size=(24, 20))
    code, err = run(capsys, photos["content"], photos["style"], "-o", photos["dir"] / "out.png",
                    "--content-mask", content_mask, "--style-mask", style_mask, *FAST, *MASKS)
    assert code == 0, err
    assert "photostyle: warning:" in err and "mask is 24x20" in err and "resized" in err
    assert "Traceback" not in err and "UserWarning" not in err


def test_mask_without_known_colour_exit_2(capsys, photos):
    content_mask, style_mask = _masks(photos, content_colours=(ODD,))
    code, err = run(capsys, photos["content"], photos["style"], "-o", photos["dir"] / "out.png",
                    "--content-mask", content_mask, "--style-mask", style_mask, *FAST, *MASKS)
    assert code == 2
    assert_one_error_line(err, str(content_mask), "no pixel has a DPST mask colour")


def test_mask_of_another_photo_exit_2(capsys, photos):
    content_mask, style_mask = _masks(photos, content_mask_size=(40, 48))
    code, err = run(capsys, photos["content"], photos["style"], "-o", photos["dir"] / "out.png",
                    "--content-mask", content_mask, "--style-mask", style_mask, *FAST, *MASKS)
    assert code == 2
    assert_one_error_line(err, str(content_mask), "this mask is 40x48 but the photo is 48x40",
                          "is it the mask of another photo?")


def test_only_one_mask_exit_2(capsys, photos):
    content_mask, _ = _masks(photos)
    code, err = run(capsys, photos["content"], photos["style"], "-o", photos["dir"] / "out.png",
                    "--content-mask", content_mask, *FAST)
    assert code == 2
    assert_one_error_line(err, "--content-mask and --style-mask")


def test_segment_in_one_mask_only_is_noted(capsys, photos):
    content_mask, style_mask = _masks(photos, style_colours=(RED,))
    report = photos["dir"] / "report.json"
    code, err = run(capsys, photos["content"], photos["style"], "-o", photos["dir"] / "out.png",
                    "--content-mask", content_mask, "--style-mask", style_mask, "--report", report, *FAST[:-1], *MASKS)
    assert code == 0, err
    notes = json.loads(report.read_text())["segment_notes"]
    assert notes == ["content segment 'blue' has no counterpart in the style photo: it is matched to the whole style photo"]
    assert f"photostyle: note: {notes[0]}" in err


# ---- output: checked before any work, exit 6 ------------------------------------------------------


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("out.xyz", "unknown image type '.xyz'; use one of .jpg"),
        ("missing/out.png", "the folder"),
        ("exists.png", "already exists; use --overwrite"),
    ],
    ids=["unknown-suffix", "missing-folder", "existing-file"],
)
def test_output_problems_exit_6_before_loading(capsys, photos, name, fragment):
    out = photos["dir"] / name
    if name == "exists.png":
        out.write_bytes(b"precious")
    # The content does not exist: exit 6 rather than 2 shows the output is checked first.
    code, err = run(capsys, photos["dir"] / "absent.png", photos["style"], "-o", out, *FAST)
    assert code == 6
    assert_one_error_line(err, str(out), fragment)
    assert not out.exists() or out.read_bytes() == b"precious"


def test_overwrite_replaces_existing_output(capsys, photos):
    out = photos["dir"] / "out.png"
    out.write_bytes(b"old")
    code, err = run(capsys, photos["content"], photos["style"], "-o", out, "--overwrite", *FAST)
    assert code == 0, err
    assert Image.open(out).size == CONTENT_SIZE


def _can_create_in(folder: Path) -> bool:
    probe = folder / "photostyle-probe"
    try:
        probe.touch(exist_ok=False)
    except OSError:
        return False
    probe.unlink()
    return True


@pytest.fixture
def unwritable_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if _can_create_in(folder):  # root ignores permissions; /sys refuses new files even to root
            folder = Path("/sys")
            if not folder.is_dir() or _can_create_in(folder):
                pytest.skip("no unwritable folder on this machine")
        yield folder
    finally:
        (tmp_path / "ro").chmod(0o700)


def test_unwritable_folder_exit_6_leaves_nothing(capsys, photos, unwritable_folder):
    before = sorted(os.listdir(unwritable_folder))
    out = unwritable_folder / "photostyle-test-out.png"
    code, err = run(capsys, photos["content"], photos["style"], "-o", out, *FAST)
    assert code == 6
    assert_one_error_line(err, str(out), "cannot write in the folder")
    assert sorted(os.listdir(unwritable_folder)) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_gpu_exit_4(capsys, photos):
    code, err = run(capsys, photos["content"], photos["style"], "-o", photos["dir"] / "out.png", *FAST, "--device", "cuda")
    assert code == 4
    assert_one_error_line(err, "no CUDA GPU is visible; use --device cpu")


# ---- running out of memory: exit 4 with a size that may fit ----------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: not enough memory: you tried to allocate 8 GB"),
        MemoryError(),
    ],
    ids=["cuda-oom", "cpu-allocator", "memory-error"],
)
def test_out_of_memory_names_a_smaller_size(capsys, photos, monkeypatch, error):
    def optimise(*args, **kwargs):
        raise error

    monkeypatch.setattr(pipeline, "optimise", optimise)
    out = photos["dir"] / "out.png"
    code, err = run(capsys, photos["content"], photos["style"], "-o", out, *FAST, "--size", "48")
    assert code == 4
    # --size 48 asked: this squarish photo works at a 4:3 frame's pixel count, 46 px
    assert_one_error_line(err, "ran out of memory at working size 46 px; try --size 32")
    assert not out.exists()


def test_other_runtime_errors_are_not_disguised(capsys, photos, monkeypatch):
    def optimise(*args, **kwargs):
        raise RuntimeError("shape mismatch in conv2d")

    monkeypatch.setattr(pipeline, "optimise", optimise)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        run(capsys, photos["content"], photos["style"], "-o", photos["dir"] / "out.png", *FAST)


def test_gpu_out_of_memory_suggests_cpu():
    with pytest.raises(DeviceError, match=r"ran out of GPU memory at working size 1024 px; try --size 768 or --device cpu"):
        with runtime.memory_hint(torch.device("cuda"), 1024):
            raise torch.OutOfMemoryError("CUDA out of memory")


# ---- tracebacks only with --debug ---------------------------------------------------------------------


def test_traceback_only_with_debug(capsys, photos):
    missing = photos["dir"] / "absent.png"
    code, err = run(capsys, missing, photos["style"], "-o", photos["dir"] / "out.png", *FAST)
    assert code == 2 and err.count("\n") == 1
    assert_one_error_line(err, str(missing), "no such file")
    with pytest.raises(InputError, match="no such file"):
        cli.main(["--debug", "transfer", str(missing), str(photos["style"]), "-o", str(photos["dir"] / "out.png"), *FAST])


# ---- options and weights ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "option, value, fragment",
    [
        ("--iterations", "-1", "expected an integer >= 0 but received -1"),
        ("--size", "0", "expected an integer >= 32 but received 0"),
        ("--levels", "0", "expected an integer in [1, 6] but received 0"),
        ("--output-size", "8", "expected an integer >= 16"),
        ("--lr", "nan", "expected a number in (0, 1] but received nan"),
        ("--style-weight", "-3", "expected a number >= 0"),
        ("--save-every", "1.5", "expected an integer >= 0 but received '1.5'"),
        ("--detail", "2", "expected a number in [0, 1] but received 2"),
        ("--strength", "1.5", "expected a number in [0, 1] but received 1.5"),
        ("--chroma", "-0.1", "expected a number in [0, 1] but received -0.1"),
        ("--flat-threshold", "nan", "expected a number in [0, 1] but received nan"),
    ],
)
def test_bad_numbers_are_usage_errors(capsys, photos, option, value, fragment):
    with pytest.raises(SystemExit) as info:
        run(capsys, photos["content"], photos["style"], "-o", photos["dir"] / "out.png", *FAST, option, value)
    err = capsys.readouterr().err
    assert info.value.code == 2 and f"argument {option}: {fragment}" in err and "Traceback" not in err


@pytest.mark.parametrize("name, fragment", [("vgg.pth", "as a PyTorch state dict"), ("vgg.safetensors", "as safetensors")])
def test_corrupt_weights_file_exit_3(capsys, photos, name, fragment):
    weights = photos["dir"] / name
    weights.write_bytes(b"\x80\x02}q\x00(X\x01" + bytes(range(256)))
    code, err = run(capsys, photos["content"], photos["style"], "-o", photos["dir"] / "out.png", *FAST, "--weights", weights)
    assert code == 3
    assert_one_error_line(err, str(weights), fragment)
