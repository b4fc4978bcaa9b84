"""The benchmark runner and `photostyle bench` on a tiny synthetic pairs folder."""

import json
from pathlib import Path

import pytest
import torch

from photostyle.bench import (
    GRAM_LAYERS,
    Evaluator,
    discover_pairs,
    find_image,
    gram_key,
    parse_scores,
    run_benchmark,
    select_pairs,
)
from photostyle.cli import main
from photostyle.errors import InputError
from photostyle.io import save_image
from photostyle.pipeline import TransferConfig

H, W = 48, 64


def _photo(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 6, 8, generator=g)
    return (0.1 + 0.8 * torch.nn.functional.interpolate(coarse, size=(H, W), mode="bicubic")).clamp(0, 1)


def _mask(split: int) -> torch.Tensor:
    """Blue above row ``split``, white below (DPST colours)."""
    mask = torch.ones(1, 3, H, W)
    mask[:, :2, :split] = 0
    return mask


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pairs")
    for sub in ("input", "style", "segmentation", "final_results"):
        (root / sub).mkdir()
    for pair_id in (1, 2):
        save_image(_photo(pair_id), root / "input" / f"in{pair_id}.png")
        save_image(_photo(10 + pair_id), root / "style" / f"tar{pair_id}.png")
        save_image(_mask(20), root / "segmentation" / f"in{pair_id}.png")
        save_image(_mask(30), root / "segmentation" / f"tar{pair_id}.png")
    save_image(_photo(1).flip(-1), root / "final_results" / "best1.png")  # pair 2 has no reference
    (root / "input" / "in3.png").write_bytes(b"not an image")  # a broken pair
    save_image(_photo(13), root / "style" / "tar3.png")
    return root


@pytest.fixture(scope="module")
def other_dir(tmp_path_factory) -> Path:
    other = tmp_path_factory.mktemp("other")
    save_image(_photo(1), other / "1.png")  # the content itself: a perfect content score
    save_image(_photo(2), other / "best2.jpg")
    return other


def test_discover_and_select(pairs_dir):
    pairs = discover_pairs(pairs_dir)
    assert [p.id for p in pairs] == ["1", "2", "3"]
    assert pairs[0].reference is not None and pairs[1].reference is None
    assert pairs[1].content_mask == pairs_dir / "segmentation" / "in2.png"
    assert [p.id for p in select_pairs(pairs, ["2", "1"])] == ["2", "1"]
    assert [p.id for p in select_pairs(pairs, limit=1)] == ["1"]
    with pytest.raises(InputError, match="unknown pair"):
        select_pairs(pairs, ["9"])
    with pytest.raises(InputError, match="input/"):
        discover_pairs(pairs_dir / "style")


def test_find_image_and_parse_scores(other_dir):
    assert find_image(other_dir, "1") == other_dir / "1.png"
    assert find_image(other_dir, "2") == other_dir / "best2.jpg"
    assert find_image(other_dir, "3") is None
    assert parse_scores([f"x={other_dir}"]) == {"x": other_dir}
    for bad in ("x", f"photostyle={other_dir}", f"x={other_dir / 'nope'}"):
        with pytest.raises(InputError):
            parse_scores([bad])


@pytest.fixture(scope="module")
def evaluator() -> Evaluator:
    return Evaluator(weights=None, eval_size=64)  # random VGG and heads: fast, no downloads


@pytest.fixture(scope="module")
def bench(pairs_dir, other_dir, evaluator, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("bench")
    # Random shallow network: the transfer's cost is not what is tested here.
    config = TransferConfig(size=64, iterations=2, levels=1, weights=None, device="cpu",
                            content_layer="conv2_1", style_layers=("conv1_1", "conv2_1"))
    return out, run_benchmark(pairs_dir, out, config, scores={"other": other_dir}, evaluator=evaluator)


def test_runner_scores_every_method_and_records_failures(bench):
    out, report = bench
    by_id = {r["id"]: r for r in report["pairs"]}
    assert "error" in by_id["3"] and not by_id["3"]["methods"]  # recorded, and the run went on
    assert set(by_id["1"]["methods"]) == {"photostyle", "reference", "baseline", "other"}
    assert set(by_id["2"]["methods"]) == {"photostyle", "baseline", "other"}
    assert by_id["1"]["methods"]["other"]["metrics"]["lpips"] == pytest.approx(0.0, abs=1e-4)
    assert by_id["1"]["methods"]["other"]["metrics"]["ssim"] == pytest.approx(1.0, abs=1e-3)
    assert by_id["1"]["transfer"]["steps"] == 2 and by_id["1"]["transfer"]["seconds"]["optimise"] > 0
    assert by_id["1"]["transfer"]["segments"] == ["blue", "white"]
    assert report["means"]["photostyle"]["n"] == 2 and report["means"]["reference"]["n"] == 1
    assert report["wins"]["reference"]["pairs"] == 1 and report["wins"]["other"]["pairs"] == 2
    assert report["wins"]["other"]["lpips"] == 0  # nothing beats the content itself on content fidelity


def test_runner_writes_files(bench):
    out, report = bench
    for name in ("report.json", "report.md", "photostyle/1.png", "photostyle/2.json", "sheets/1.jpg", "sheets/2.jpg",
                 "baseline/1.png", "metrics/other/2.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "report.json").read_text())["means"] == report["means"]
    markdown = (out / "report.md").read_text()
    assert "LPIPS ↓" in markdown and "SSIM ↑" in markdown and "| other |" in markdown
    assert "pair 3: InputError" in markdown
    assert "## Gram distance per layer" in markdown and "| conv1_1 | conv2_1 |" in markdown
    layers = [report["means"]["photostyle"][gram_key(layer)] for layer in GRAM_LAYERS]
    assert report["means"]["photostyle"]["gram"] == pytest.approx(sum(layers) / len(layers), rel=1e-5)


def test_no_run_reuses_outputs_and_cached_scores(bench, pairs_dir, other_dir, evaluator):
    out, report = bench
    again = run_benchmark(pairs_dir, out, scores={"other": other_dir}, evaluator=evaluator, run=False, ids=["1", "2"])
    for record in again["pairs"]:
        assert all(m["cached"] for m in record["methods"].values())
        assert record["transfer"]["steps"] == 2  # cost read back from photostyle/N.json
    assert again["means"] == report["means"]


def test_cli_bench_no_run_and_score(bench, pairs_dir, other_dir):
    out, _ = bench
    common = ["bench", "--pairs", str(pairs_dir), "--out", str(out), "--ids", "2", "--eval-size", "64",
              "--eval-weights", "none", "-q"]
    assert main([*common, "--no-run", "--score", f"again={other_dir}"]) == 0
    methods = json.loads((out / "report.json").read_text())["pairs"][0]["methods"]
    assert methods["photostyle"]["cached"] and not methods["again"]["cached"]
    cached_other = json.loads((out / "metrics" / "other" / "2.json").read_text())["metrics"]
    assert methods["again"]["metrics"] == cached_other  # the same image scored alike
    assert main([*common, "--ids", "7"]) == 2  # unknown id: one-line error, exit code of InputError
    assert main([*common, "--score", "bad"]) == 2


