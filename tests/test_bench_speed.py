"""The speed table (photostyle bench --speed): real runs in fresh processes, on tiny photos."""

import json

import pytest

from photostyle.bench.speed import parse_megapixels, run_speed, synthetic_photo
from photostyle.cli import main
from photostyle.errors import InputError
from photostyle.io import load_image
from photostyle.runtime import cpu_has_native_bf16
from photostyle.settings import TransferConfig


def test_megapixels_are_parsed_and_bounded():
    assert parse_megapixels("0.3, 2,12") == [0.3, 2.0, 12.0]
    for bad in ("", "a,b", "0", "-1", "121"):
        with pytest.raises(InputError, match="--megapixels"):
            parse_megapixels(bad)


def test_synthetic_photo_has_the_asked_size_and_the_examples_shape(tmp_path):
    height, width = synthetic_photo(0.05, tmp_path / "p.jpg")
    assert abs(height * width - 50_000) < 1_000
    photo = load_image(tmp_path / "p.jpg").tensor
    assert tuple(photo.shape[-2:]) == (height, width) and photo.std() > 0.05


def test_speed_runs_each_preset_in_its_own_process_and_writes_table_and_plot(tmp_path):
    config = TransferConfig(weights=None, segmentation="none")  # random weights: no download, same code path
    record = run_speed(tmp_path / "out", config, megapixels=[0.01, 0.02], presets=["fast"])
    runs = record["runs"]
    assert [r["preset"] for r in runs] == ["fast", "fast"] and not any("error" in r for r in runs)
    precision = "bfloat16" if cpu_has_native_bf16() else "float32"  # what --precision auto picks on this CPU
    for run in runs:
        assert run["wall_s"] > sum(run["stages"].values()) > 0  # the process start is in the wall time
        assert run["peak_rss_mb"] > 50 and run["precision"] == precision and "optimise" in run["stages"]
    assert runs[1]["megapixels"] > runs[0]["megapixels"]
    saved = json.loads((tmp_path / "out" / "speed.json").read_text())
    assert saved["runs"] == runs and saved["machine"].startswith("cpu")
    table = (tmp_path / "out" / "speed.md").read_text()
    assert "## fast" in table and "| 0.01 |" in table and "peak RSS GB" in table
    svg = (tmp_path / "out" / "speed.svg").read_text()
    assert svg.startswith("<svg") and svg.count("<polyline") == 2  # time and memory, one line each


def test_bench_speed_refuses_a_folder_of_other_files_and_bench_needs_pairs_otherwise(tmp_path):
    (tmp_path / "mine.txt").write_text("keep")
    assert main(["bench", "--speed", "--out", str(tmp_path), "--megapixels", "0.01", "-q"]) == 6  # OutputError
    assert (tmp_path / "mine.txt").read_text() == "keep"
    assert main(["bench", "--out", str(tmp_path / "new"), "-q"]) == 2
