"""The look as a 3D LUT: fitted, written as .cube and Hald CLUT, read back, and read by ffmpeg."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from photostyle import cli
from photostyle.errors import InputError
from photostyle.io import load_image, save_image
from photostyle.lut import Lut3D, fit_error, fit_lut, read_lut

from helpers import write_pair

EXAMPLE = Path(__file__).parents[1] / "examples" / "rocket.jpg"
FAST = ["--weights", "none", "--size", "32", "--iterations", "1", "--segmentation", "none", "-q"]


def _photo() -> torch.Tensor:
    """The bundled rocket photo at 160 px: real colours, smooth gradients and edges."""
    return torch.nn.functional.interpolate(load_image(EXAMPLE).tensor, size=(107, 160), mode="area")


def _global_look(x: torch.Tensor) -> torch.Tensor:
    """A colourist's global grade: channel mixing, a gamma and a lift."""
    mix = torch.tensor([[0.85, 0.15, 0.0], [0.05, 0.8, 0.15], [0.1, 0.0, 0.9]])
    return (torch.einsum("ij,bjhw->bihw", mix, x).clamp(0, 1) ** 1.3 * 0.95 + 0.04).clamp(0, 1)


def _identity(size: int) -> Lut3D:
    nodes = torch.linspace(0, 1, size)
    b, g, r = torch.meshgrid(nodes, nodes, nodes, indexing="ij")
    return Lut3D(torch.stack([r, g, b], dim=-1))


def test_identity_lut_returns_the_photo():
    photo = _photo()
    assert torch.allclose(_identity(17).apply(photo), photo, atol=1e-5)


def test_a_global_grade_is_recovered():
    photo = _photo()
    look = fit_lut(photo, _global_look(photo), size=17)
    error = fit_error(look, photo, _global_look(photo))
    assert error["mean"] < 1.0 and error["p95"] < 1.5
    other = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(1))  # colours it did not see
    assert fit_error(look, other, _global_look(other))["mean"] < 3.5


def test_colours_absent_from_the_photo_are_filled_smoothly():
    grey = torch.linspace(0, 1, 64).view(1, 1, 1, 64).expand(1, 3, 8, 64).contiguous()
    look = fit_lut(grey, grey * 0.5 + 0.25, size=9)  # only the grey axis is seen
    assert look.table.isfinite().all() and look.table.min() >= 0 and look.table.max() <= 1
    red = look.apply(torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)).flatten()
    assert red[0] > 0.9 and 0.03 < red[1] < 0.15 and red[2] == red[1]  # keeps its hue, takes the greys' lift


def test_cube_and_hald_round_trip(tmp_path):
    photo = _photo()
    look = fit_lut(photo, _global_look(photo), size=17)
    look.write_cube(tmp_path / "look.cube")
    text = (tmp_path / "look.cube").read_text().splitlines()
    assert "LUT_3D_SIZE 17" in text and len([t for t in text if t[:1].isdigit()]) == 17**3
    assert torch.allclose(read_lut(tmp_path / "look.cube").table, look.table, atol=1e-6)
    look.write_hald(tmp_path / "hald.png", level=4)
    assert Image.open(tmp_path / "hald.png").size == (64, 64)
    hald = read_lut(tmp_path / "hald.png")
    assert hald.size == 16 and (hald.apply(photo) - look.apply(photo)).abs().max() < 2 / 255


@pytest.mark.parametrize("text, fragment", [
    ("LUT_1D_SIZE 2\n0 0 0\n1 1 1\n", "1D LUT"),
    ("LUT_3D_SIZE 2\n0 0 0\n", r"N\^3 rows"),
    ("LUT_3D_SIZE 2\nDOMAIN_MAX 2 2 2\n" + "0 0 0\n" * 8, "domain"),
    ("LUT_3D_SIZE 2\nhello\n", "line 2"),
])
def test_bad_cube_files_are_input_errors(tmp_path, text, fragment):
    (tmp_path / "bad.cube").write_text(text)
    with pytest.raises(InputError, match=fragment):
        read_lut(tmp_path / "bad.cube")


def test_an_image_that_is_not_a_hald_clut_is_refused(tmp_path):
    Image.new("RGB", (30, 20)).save(tmp_path / "photo.png")
    with pytest.raises(InputError, match="not a Hald CLUT"):
        read_lut(tmp_path / "photo.png")


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs Debian's ffmpeg (apt-get install ffmpeg)")
def test_ffmpeg_lut3d_reads_our_cube_as_we_apply_it(tmp_path):
    photo = _photo()
    look = fit_lut(photo, _global_look(photo), size=17)
    look.write_cube(tmp_path / "look.cube")
    save_image(photo, tmp_path / "in.png")
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-i", str(tmp_path / "in.png"), "-vf",
                    f"lut3d=file={tmp_path / 'look.cube'}:interp=trilinear", "-pix_fmt", "rgb24",
                    str(tmp_path / "ffmpeg.png")], check=True)
    theirs = np.asarray(Image.open(tmp_path / "ffmpeg.png"), dtype=np.float64)
    ours = np.rint(look.apply(load_image(tmp_path / "in.png").tensor)[0].permute(1, 2, 0).numpy() * 255)
    assert np.abs(theirs - ours).max() <= 1  # within 1/255 on 8 bits


def test_transfer_writes_the_look_and_apply_lut_reuses_it(capsys, tmp_path):
    content, style = write_pair(tmp_path, content_size=(48, 40), style_size=(40, 36))
    out, cube, hald, report = (tmp_path / n for n in ("out.png", "look.cube", "look-hald.png", "r.json"))
    argv = ["transfer", str(content), str(style), "-o", str(out), "--lut", str(cube), "--lut-size", "17",
            "--hald", str(hald), "--report", str(report), *FAST[:-1]]  # not quiet: the fit is reported
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert "CIEDE2000" in err and "local, per-region parts of the look are not in it" in err
    recorded = json.loads(report.read_text())["lut"]
    assert recorded["size"] == 17 and recorded["ciede2000_p95"] >= recorded["ciede2000_mean"] >= 0
    assert read_lut(cube).size == 17 and read_lut(hald).size == 64

    assert cli.main(["apply-lut", str(cube), str(content), "-o", str(tmp_path / "graded.png")]) == 0
    graded = load_image(tmp_path / "graded.png").tensor
    assert (graded - read_lut(cube).apply(load_image(content).tensor)).abs().max() <= 1 / 255 + 1e-6
    assert cli.main(["apply-lut", str(cube), str(content), str(style), "-o", str(tmp_path / "all"), "--format", "jpg"]) == 0
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == ["content.jpg", "style.jpg"]


@pytest.mark.parametrize("argv, code, fragment", [
    (["apply-lut", "{d}/look.cube", "{d}/content.png", "-o", "{d}/content.png", "--overwrite"], 2, "is the input"),
    (["apply-lut", "{d}/look.cube", "{d}/content.png", "-o", "{d}/look.cube", "--overwrite"], 2, "is the input"),
    (["apply-lut", "{d}/look.cube", "{d}/content.png", "-o", "{d}/style.png"], 6, "already exists"),
    (["apply-lut", "{d}/nope.cube", "{d}/content.png", "-o", "{d}/o.png"], 2, "no such LUT file"),
    (["transfer", "{d}/content.png", "{d}/style.png", "-o", "{d}/o.png", "--lut", "{d}/content.png", *FAST], 2, "is the input"),
    (["transfer", "{d}/content.png", "{d}/style.png", "-o", "{d}/o.png", "--lut", "{d}/look.cube", *FAST], 6,
     "already exists"),
])
def test_lut_outputs_follow_the_safety_rules(capsys, tmp_path, argv, code, fragment):
    write_pair(tmp_path, content_size=(48, 40), style_size=(40, 36))
    _identity(2).write_cube(tmp_path / "look.cube")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert cli.main([a.format(d=tmp_path) for a in argv]) == code
    assert fragment in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
