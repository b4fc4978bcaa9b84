"""Memory is bounded by design: segmentation at a bounded size, full resolution in tiles, sizes refused up front.

These tests check the bounding logic on tiny photos; the peak memory itself is measured by hand
(a 50-megapixel photo is designed to stay under 3.6 GB on CPU at default settings).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from photostyle import cli, pipeline, runtime
from photostyle.errors import InputError
from photostyle.io import load_image, save_image
from photostyle.masks import Segmentation
from photostyle.pipeline import TransferConfig, stylise
from photostyle.runtime import check_photo_size, estimate_peak_bytes, fit_sizes
from photostyle.segmentation.auto import segment_pair, segment_shape
from photostyle.segmentation.base import Segmenter
from photostyle.upsample import TILE_PIXELS, local_affine_upsample, tile_rows_for

from helpers import write_photo

TINY = dict(size=32, iterations=1, weights=None, segmentation="none")


class Recording(Segmenter):
    """Left half / right half, recording the shape of every photo it is given."""

    name = "recording"

    def __init__(self) -> None:
        self.shapes: list[tuple[int, int]] = []

    def segment(self, image: torch.Tensor) -> Segmentation:
        self.shapes.append(tuple(image.shape[-2:]))
        h, w = image.shape[-2:]
        left = (torch.arange(w) < w // 2).float().expand(h, w)
        return Segmentation(torch.stack([left, 1 - left])[None], ["left", "right"])


# ---- segmentation runs at a bounded size ------------------------------------------------------------


def test_segmenter_never_sees_more_than_max_side():
    recording = Recording()
    out = segment_pair(torch.rand(1, 3, 300, 200), torch.rand(1, 3, 90, 250), segmenter=recording, max_side=64)
    assert recording.shapes == [(64, 43), (23, 64)]
    assert out.content.size == (64, 43) and out.style.size == (23, 64)


def test_small_photos_are_segmented_at_their_own_size():
    recording = Recording()
    segment_pair(torch.rand(1, 3, 30, 20), torch.rand(1, 3, 9, 25), segmenter=recording, max_side=64)
    assert recording.shapes == [(30, 20), (9, 25)]


def test_segment_shape_matches_resize_long_side():
    from photostyle.io import resize_long_side

    for height, width, side in [(300, 200, 64), (5773, 8660, 1024), (101, 999, 77), (50, 50, 64)]:
        expected = tuple(resize_long_side(torch.rand(1, 1, height, width), side).shape[-2:]) if max(
            height, width) > side else (height, width)
        assert segment_shape(height, width, side) == expected


def test_stylise_segments_at_the_segment_side(monkeypatch):
    recording = Recording()
    monkeypatch.setattr(runtime, "SEGMENT_SIDE", 48)
    monkeypatch.setattr(pipeline, "segment_pair", _with_segmenter(pipeline.segment_pair, recording))
    config = TransferConfig(**{**TINY, "segmentation": "auto"})
    result = stylise(torch.rand(1, 3, 80, 100), torch.rand(1, 3, 60, 40), config=config)
    assert recording.shapes == [(38, 48), (48, 32)]
    assert result.segmentation.content.size == (38, 48)


def test_one_global_segment_is_not_full_size(monkeypatch):
    monkeypatch.setattr(runtime, "SEGMENT_SIDE", 48)
    result = stylise(torch.rand(1, 3, 80, 100), torch.rand(1, 3, 60, 40), config=TransferConfig(**TINY))
    assert result.segmentation.content.size == (38, 48) and result.segmentation.style.size == (48, 32)


def _with_segmenter(segment, segmenter):
    return lambda *args, **kwargs: segment(*args, **{**kwargs, "segmenter": segmenter})


# ---- full resolution in tiles -----------------------------------------------------------------------


def test_tiles_hold_about_tile_pixels_whatever_the_width():
    for width in (100, 4243, 8660, 13_000):
        assert tile_rows_for(width) * width <= TILE_PIXELS
        assert (tile_rows_for(width) + 1) * width > TILE_PIXELS
    assert tile_rows_for(2 * TILE_PIXELS) == 1


def test_tiled_upsample_equals_untiled_with_flat_regions_and_detail():
    torch.manual_seed(0)
    guide, result = torch.rand(1, 3, 16, 20), torch.rand(1, 3, 16, 20)
    guide[..., :10] = 0.4  # a flat region: the wide fit is used there
    big = torch.rand(1, 3, 53, 67)
    options = dict(detail=0.75, flat=0.03, flat_radius=3)
    whole = local_affine_upsample(guide, result, big, **options)  # one tile
    tiled = local_affine_upsample(guide, result, big, tile_rows=2, **options)
    assert torch.equal(whole, tiled)
    assert whole.min() >= 0 and whole.max() <= 1


def test_saved_8bit_pixels_are_the_rounded_values(tmp_path):
    torch.manual_seed(0)
    image = torch.rand(1, 3, 37, 29)
    image[0, 0, 0, 0], image[0, 1, 1, 1], image[0, 2, 2, 2] = float("nan"), 2.0, -1.0
    save_image(image, tmp_path / "out.png")
    expected = np.rint(image[0].nan_to_num(0).clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), expected)


# ---- sizes fitted to the photo: never enlarged -----------------------------------------------------


def test_working_size_above_the_photo_is_lowered_to_it_without_a_warning(recwarn):
    content, style = torch.rand(1, 3, 30, 40), torch.rand(1, 3, 50, 60)
    result = stylise(content, style, config=TransferConfig(**{**TINY, "size": 64}))
    assert not [w for w in recwarn.list if "larger than the content photo" in str(w.message)]
    assert tuple(result.working.shape[-2:]) == (30, 40)
    assert result.config.size == 40


def test_output_size_above_the_photo_is_capped_with_a_warning():
    content, style = torch.rand(1, 3, 30, 40), torch.rand(1, 3, 50, 60)
    with pytest.warns(UserWarning, match="--output-size 100000 is larger than the content photo .* 40 px"):
        result = stylise(content, style, config=TransferConfig(**TINY, output_size=100_000))
    assert result.image.shape == content.shape


def test_a_transparent_photo_keeps_its_alpha_at_a_smaller_output_size(tmp_path):
    rgba = np.random.default_rng(0).integers(0, 256, (40, 60, 4), dtype=np.uint8)
    rgba[:, :30, 3] = 0  # the left half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "content.png")
    write_photo(tmp_path / "style.png", 50, 40)
    pipeline.transfer(tmp_path / "content.png", tmp_path / "style.png", tmp_path / "out.png",
                      TransferConfig(**TINY, output_size=30))
    out = np.asarray(Image.open(tmp_path / "out.png"))
    assert out.shape == (20, 30, 4)
    assert out[:, :13, 3].max() == 0 and out[:, 17:, 3].min() > 0  # the same half, resized


def test_sizes_that_fit_are_kept(recwarn):
    config = TransferConfig(size=320, output_size=1000)
    assert fit_sizes(config, 2000, 3000) is config
    assert fit_sizes(TransferConfig(size=32), 20, 24).size == 32  # the network's floor, above this photo
    assert not recwarn.list


@pytest.mark.parametrize("height, width", [(700, 700), (651, 700), (700, 597), (1000, 1000)])
def test_photos_squarer_than_4_3_work_at_the_pixels_of_a_4_3_frame(height, width, recwarn):
    """The optimisation's time grows with the working pixels: a square photo must not cost a third more."""
    fitted = fit_sizes(TransferConfig(size=320), height, width)
    long, short = fitted.size, round(fitted.size * min(height, width) / max(height, width))
    assert abs(long * short - 320 * 240) / (320 * 240) < 0.01
    assert fitted.size < 320 and not recwarn.list  # by design, not a surprise to warn about
    for wide in ((467, 700), (525, 700), (394, 700), (700, 300)):
        assert fit_sizes(TransferConfig(size=320), *wide).size == 320


def test_a_square_photo_is_optimised_at_the_frame_size_and_returned_at_its_own():
    content, style = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 48, 64)
    result = stylise(content, style, config=TransferConfig(**{**TINY, "size": 64}))
    assert tuple(result.working.shape[-2:]) == (55, 55) and result.config.size == 55
    assert result.image.shape == content.shape


# ---- sizes that cannot fit in memory are refused up front ------------------------------------------


def test_fifty_megapixels_at_default_settings_is_designed_under_3_6_gb():
    assert estimate_peak_bytes(5773, 8660, TransferConfig().size) <= 3.6 * 2**30


def test_estimate_grows_with_the_photo_and_the_working_size():
    assert estimate_peak_bytes(4000, 6000, 320) < estimate_peak_bytes(5773, 8660, 320)
    assert estimate_peak_bytes(4000, 6000, 320) < estimate_peak_bytes(4000, 6000, 640)


def test_absurd_working_size_is_refused_naming_a_size_that_fits(monkeypatch):
    budget = 2 * 2**30
    monkeypatch.setattr(runtime, "memory_budget", lambda device: budget)
    with pytest.raises(InputError, match=r"big.png: at working size 6000 px the transfer needs about .* GB of memory "
                                         r"but 2.0 GB is free; use --size \d+ or less") as caught:
        check_photo_size("big.png", 4000, 6000, TransferConfig(size=100_000))
    size = int(re.search(r"--size (\d+)", str(caught.value)).group(1))
    assert estimate_peak_bytes(4000, 6000, size) <= budget < estimate_peak_bytes(4000, 6000, size + 32)
    check_photo_size("big.png", 4000, 6000, TransferConfig(size=size))  # the named size is accepted


def test_photo_too_large_for_any_working_size_is_refused_naming_megapixels(monkeypatch):
    budget = 2**30
    monkeypatch.setattr(runtime, "memory_budget", lambda device: budget)
    with pytest.raises(InputError, match=r"huge.png: the photo is 8660x5773 \(50 megapixels\) and needs .* "
                                         r"downscale it to [\d.]+ megapixels or less") as caught:
        check_photo_size("huge.png", 5773, 8660, TransferConfig())
    megapixels = float(re.search(r"to ([\d.]+) megapixels", str(caught.value)).group(1))
    named = re.search(r"--size (\d+)", str(caught.value))  # the default size leaves no room: a smaller one named
    size = int(named.group(1)) if named else TransferConfig().size
    side = int((megapixels * 1e6 * 1.5) ** 0.5)  # the same 3:2 photo, downscaled to that size
    assert estimate_peak_bytes(round(side / 1.5), side, size) <= budget


def test_unknown_budget_checks_nothing(monkeypatch):
    monkeypatch.setattr(runtime, "memory_budget", lambda device: None)
    check_photo_size("huge.png", 11_000, 11_000, TransferConfig(size=11_000))


def test_memory_budget_is_known_on_this_cpu():
    budget = runtime.memory_budget(torch.device("cpu"))
    assert budget is None or budget > 0


def test_cli_refuses_before_any_work_with_exit_2(capsys, tmp_path, monkeypatch):
    content, style = write_photo(tmp_path / "content.png", 48, 40), write_photo(tmp_path / "style.png", 40, 36, seed=2)
    monkeypatch.setattr(runtime, "memory_budget", lambda device: estimate_peak_bytes(40, 48, 32))
    monkeypatch.setattr(pipeline, "segment_pair", _never)
    monkeypatch.setattr(pipeline, "optimise", _never)
    out = tmp_path / "out.png"
    code = cli.main(["transfer", str(content), str(style), "-o", str(out), "--size", "100000", "--weights", "none"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"{content}: at working size 48 px" in err and "use --size 32 or less" in err
    assert not out.exists()


def _never(*args, **kwargs):
    raise AssertionError("work started before the sizes were checked")


def test_cli_output_size_above_the_photo_writes_the_photo_size(capsys, tmp_path):
    content, style = write_photo(tmp_path / "content.png", 48, 40), write_photo(tmp_path / "style.png", 40, 36, seed=2)
    out = tmp_path / "out.png"
    code = cli.main(["transfer", str(content), str(style), "-o", str(out), "--output-size", "100000",
                     "--weights", "none", "--segmentation", "none", "--iterations", "1", "--size", "32", "-q"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "warning: --output-size 100000 is larger than the content photo (48x40)" in err
    assert load_image(out).tensor.shape[-2:] == (40, 48)
