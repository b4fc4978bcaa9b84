"""The top-level Python API: photos in any form, any setting as a keyword, a result that saves itself."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import photostyle
from photostyle.api import as_image
from photostyle.errors import InputError

from helpers import random_rgb, write_pair

ROOT = Path(__file__).parents[1]
TINY = dict(weights=None, size=32, iterations=1, segmentation="none")


def test_photos_in_any_form_become_the_same_tensor(tmp_path):
    pixels = random_rgb(20, 24, seed=3)
    Image.fromarray(pixels).save(tmp_path / "p.png")
    expected = torch.from_numpy(pixels).permute(2, 0, 1).float().unsqueeze(0) / 255
    for photo in (tmp_path / "p.png", str(tmp_path / "p.png"), Image.fromarray(pixels), pixels,
                  pixels.astype(np.uint16) * 257, pixels / 255.0, expected[0], expected):
        assert torch.allclose(as_image(photo), expected, atol=1e-6), type(photo)


@pytest.mark.parametrize("photo, fragment", [
    (np.zeros((4, 4)), "shape (H, W, 3)"), (torch.zeros(2, 3, 4, 4), "(1, 3, H, W)"), (42, "received int"),
])
def test_what_is_not_a_photo_is_refused(photo, fragment):
    with pytest.raises(InputError, match=re.escape(fragment)):
        as_image(photo)


def test_transfer_returns_a_result_that_saves_itself(tmp_path):
    content, style = write_pair(tmp_path, content_size=(48, 40), style_size=(40, 36))
    result = photostyle.transfer(Image.open(content), np.asarray(Image.open(style)), preset="fast", **TINY)
    assert result.image.shape == (1, 3, 40, 48) and result.to_pil().size == (48, 40)
    assert result.save(tmp_path / "out.png") == tmp_path / "out.png" and Image.open(tmp_path / "out.png").size == (48, 40)
    assert '"segments"' in result.to_json()
    with pytest.raises(InputError, match=r"detail \(--detail\) must be a number in \[0, 1\]"):
        photostyle.transfer(content, style, detail=3)


def test_a_stylist_keeps_its_settings_for_many_photos(tmp_path):
    content, style = write_pair(tmp_path, content_size=(48, 40), style_size=(40, 36))
    stylist = photostyle.Stylist(preset="fast", strength=0.0, **TINY)
    for _ in range(2):
        out = stylist(content, style)
        assert (out.image - as_image(content)).abs().max() < 2 / 255  # strength 0 keeps the content


def test_import_is_cheap():
    code = "import sys, photostyle; photostyle.TransferConfig; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_the_readme_example_runs(tmp_path, monkeypatch):
    from photostyle import weights
    from photostyle.errors import WeightsError

    try:
        weights.ensure("vgg16-imagenet")
    except WeightsError as err:
        pytest.skip(f"VGG16 weights not fetched: {err}")
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"\*\*From Python\*\*.*?```python\n(.*?)```", readme, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace('"examples/', f'"{ROOT}/examples/'), "README.md", "exec"), {})
    assert Image.open(tmp_path / "rocket-coffee.jpg").size == Image.open(ROOT / "examples" / "rocket.jpg").size
