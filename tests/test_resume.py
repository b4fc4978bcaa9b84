"""Resuming an interrupted transfer, and loading files from outside without running their code.

Interruptions are simulated in this process by a step callback that raises KeyboardInterrupt
(what Ctrl-C does); ``tests/test_interrupt.py`` sends a real SIGINT to a real process.
"""

from __future__ import annotations

import ast
import json
import os
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from photostyle import cli, pipeline, weights
from photostyle.errors import OutputError, WeightsError
from photostyle.optimise import Checkpoint, optimise
from photostyle.pipeline import TransferConfig, transfer
from photostyle.progress import ProgressCallback
from photostyle.state import StateFile, fingerprint, state_path

from helpers import write_pair

SRC = Path(__file__).resolve().parents[1] / "src" / "photostyle"


@pytest.fixture
def pair(tmp_path) -> tuple[Path, Path]:
    return write_pair(tmp_path, content_size=(32, 24), style_size=(28, 30))


def _config(**overrides) -> TransferConfig:
    return TransferConfig(**{"size": 32, "iterations": 6, "levels": 1, "weights": None, "lr": 0.05, "segmentation": "none", **overrides})


def _stop_after(step: int):
    def callback(i: int, image: torch.Tensor, terms: dict[str, float]) -> None:
        if i == step:
            raise KeyboardInterrupt

    return callback


# ---- the optimiser ---------------------------------------------------------------------------------


def _quadratic(target: torch.Tensor):
    def objective(image: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"total": ((image - target) ** 2).sum()}

    return objective


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_interrupted_and_resumed_optimisation_finishes_the_count(optimizer):
    target, init = torch.full((1, 3, 4, 5), 0.8), torch.full((1, 3, 4, 5), 0.2)
    saved: list[Checkpoint] = []
    first = optimise(_quadratic(target), init, 10, optimizer, 0.05, _stop_after(4), checkpoint=saved.append)
    assert first.interrupted and first.steps == 4 and [c.step for c in saved] == [4]
    second = optimise(_quadratic(target), init, 10, optimizer, 0.05, resume=saved[0])
    assert not second.interrupted and second.steps == 10 and len(second.history) == 6
    if optimizer == "adam":  # Adam's moments come back, so the path is the uninterrupted one
        straight = optimise(_quadratic(target), init, 10, optimizer, 0.05)
        assert torch.allclose(second.image, straight.image, atol=1e-6)
        assert second.terms["total"] == pytest.approx(straight.terms["total"], rel=1e-5)
        assert set(saved[0].optimiser) == {"step", "exp_avg", "exp_avg_sq"}


def test_checkpoints_every_n_steps():
    saved: list[Checkpoint] = []
    optimise(_quadratic(torch.ones(1, 3, 2, 2)), torch.zeros(1, 3, 2, 2), 7, checkpoint=saved.append, checkpoint_every=3)
    assert [c.step for c in saved] == [3, 6]
    assert saved[1].best_terms["total"] <= saved[0].best_terms["total"]


def test_checkpoint_of_another_shape_is_refused():
    other = Checkpoint(step=1, image=torch.zeros(1, 3, 2, 2), best_image=torch.zeros(1, 3, 2, 2), best_terms={"total": 1.0})
    with pytest.raises(ValueError, match="checkpoint of shape"):
        optimise(_quadratic(torch.ones(1, 3, 4, 4)), torch.zeros(1, 3, 4, 4), 3, resume=other)


# ---- the pipeline and the state file -----------------------------------------------------------------


@pytest.mark.parametrize("levels, fine, stop", [(1, None, 3), (2, None, 9), (2, 3, 8)],
                         ids=["one-level", "second-level", "shorter-second-level"])
def test_resumed_transfer_equals_the_uninterrupted_one(tmp_path, pair, levels, fine, stop):
    config = _config(levels=levels, fine_iterations=fine)
    straight = transfer(*pair, tmp_path / "straight.png", config)

    out = tmp_path / "out.png"
    first = transfer(*pair, out, config, callback=_stop_after(stop), keep_state=0)
    assert first.interrupted and first.steps == stop
    assert first.resume_state == str(state_path(out)) and state_path(out).is_file()
    assert Image.open(out).size == (32, 24)  # the best result so far is written

    second = transfer(*pair, out, config, keep_state=0, resume=True)
    assert not second.interrupted and second.steps == config.total_steps
    assert not state_path(out).exists() and second.resume_state is None
    assert torch.allclose(second.working, straight.working, atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["content.png", "out.png", "straight.png", "style.png"]


def test_state_of_other_settings_is_ignored_and_the_output_kept(tmp_path, pair):
    out = tmp_path / "out.png"
    transfer(*pair, out, _config(), callback=_stop_after(2), keep_state=0)
    before = out.read_bytes()
    with pytest.warns(UserWarning, match="belongs to other input files or settings; it is ignored"):
        with pytest.raises(OutputError, match="already exists; use --overwrite"):
            transfer(*pair, out, _config(style_weight=3.0), keep_state=0, resume=True)
    assert out.read_bytes() == before
    with pytest.warns(UserWarning, match="belongs to other input files or settings"):
        result = transfer(*pair, out, _config(style_weight=3.0), keep_state=0, resume=True, overwrite=True)
    assert result.steps == 6 and not state_path(out).exists()


def test_state_of_other_inputs_is_ignored(tmp_path, pair):
    out = tmp_path / "out.png"
    transfer(*pair, out, _config(), callback=_stop_after(2), keep_state=0)
    with pytest.warns(UserWarning, match="belongs to other input files"):
        result = transfer(pair[1], pair[0], out, _config(), keep_state=0, resume=True, overwrite=True)
    assert result.steps == 6


def test_resume_never_replaces_an_unrelated_file(tmp_path, pair):
    out = tmp_path / "out.png"
    out.write_bytes(b"someone else's file")
    with pytest.warns(UserWarning, match="no saved state"), pytest.raises(OutputError, match="already exists"):
        transfer(*pair, out, _config(), resume=True)
    assert out.read_bytes() == b"someone else's file"


def test_more_iterations_and_another_device_may_resume(pair):
    key = fingerprint([*pair, None, None], vars(_config()))
    assert key == fingerprint([*pair, None, None], vars(_config(iterations=60, device="cpu")))
    assert key != fingerprint([*pair, None, None], vars(_config(seed=1)))
    assert key != fingerprint([pair[0], pair[0], None, None], vars(_config()))


def test_resume_without_state_starts_afresh(tmp_path, pair):
    with pytest.warns(UserWarning, match="no saved state to resume from"):
        result = transfer(*pair, tmp_path / "out.png", _config(), resume=True)
    assert result.steps == 6


def test_unreadable_state_is_ignored(tmp_path, pair):
    out = tmp_path / "out.png"
    state_path(out).write_bytes(b"PK\x03\x04 not a torch file")
    with pytest.warns(UserWarning, match="unreadable saved state"), pytest.raises(OutputError, match="--overwrite"):
        transfer(*pair, out, _config(), keep_state=0, resume=True)  # not this run's file: kept
    assert state_path(out).read_bytes().startswith(b"PK")
    with pytest.warns(UserWarning, match="unreadable saved state"):
        result = transfer(*pair, out, _config(), keep_state=0, resume=True, overwrite=True)
    assert result.steps == 6 and not state_path(out).exists()


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_state_file_runs_no_code(tmp_path, pair):
    out = tmp_path / "out.png"
    payload = _Payload()
    payload.marker = tmp_path / "pwned"
    torch.save({"image": payload, "meta": "{}"}, state_path(out))
    with pytest.warns(UserWarning, match="unreadable saved state"):
        transfer(*pair, out, _config(iterations=1), resume=True, overwrite=True)
    assert not payload.marker.exists()


def test_state_file_is_plain_tensors_and_json(tmp_path, pair):
    out = tmp_path / "out.png"
    transfer(*pair, out, _config(), callback=_stop_after(2), keep_state=0)
    data = torch.load(state_path(out), weights_only=True)
    assert set(data) == {"image", "best_image", "meta", "optimiser.step", "optimiser.exp_avg", "optimiser.exp_avg_sq"}
    meta = json.loads(data["meta"])
    assert meta["step"] == 2 and meta["level"] == 0 and len(meta["fingerprint"]) == 64
    assert data["image"].shape == (1, 3, 24, 32)
    loaded = StateFile(out, meta["fingerprint"]).load()
    assert loaded is not None and loaded.step == 2 and torch.equal(loaded.image, data["image"])


def test_cli_resume_message_and_finish(tmp_path, pair, capsys, monkeypatch):
    out = tmp_path / "out.png"
    args = ["transfer", *map(str, pair), "-o", str(out), "--weights", "none", "--size", "32", "--levels", "1", "--iterations", "5",
            "--segmentation", "none", "-q"]
    real = pipeline.optimise

    def interrupted_optimise(*a, **k):
        return real(*a[:5], _stop_after(2), **k)

    monkeypatch.setattr(pipeline, "optimise", interrupted_optimise)
    assert cli.main(args) == 130
    err = capsys.readouterr().err
    assert f"interrupted after 2 steps; the best result so far was written to {out}" in err
    assert "add --resume to the same command to continue" in err
    monkeypatch.setattr(pipeline, "optimise", real)
    assert cli.main(args) == 6  # without --resume the partial output is not replaced
    report = tmp_path / "report.json"
    assert cli.main([*args, "--resume", "--report", str(report)]) == 0
    assert json.loads(report.read_text())["steps"] == 5 and not state_path(out).exists()


def test_cli_resume_replaces_only_its_own_step_images(tmp_path, pair, capsys, monkeypatch):
    out = tmp_path / "out.png"
    args = ["transfer", *map(str, pair), "-o", str(out), "--weights", "none", "--size", "32", "--levels", "1", "--iterations", "4",
            "--segmentation", "none", "-q", "--save-every", "1"]
    real = ProgressCallback.__call__

    def stop_at_two(self, step, image, terms):
        real(self, step, image, terms)
        if step == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(ProgressCallback, "__call__", stop_at_two)
    assert cli.main(args) == 130
    steps = sorted(p.name for p in tmp_path.glob("out.step*"))
    assert steps == ["out.step0001.png", "out.step0002.png"] and state_path(out).is_file()
    monkeypatch.setattr(ProgressCallback, "__call__", real)
    out.unlink()  # even without the partial result, a fresh run keeps the interrupted run's files
    capsys.readouterr()
    assert cli.main(args) == 6 and "out.step0001.png already exists" in capsys.readouterr().err
    kept = {p.name: p.read_bytes() for p in tmp_path.glob("out.step*")}
    assert cli.main([*args, "--resume"]) == 0  # its own run: the later steps are added
    assert sorted(p.name for p in tmp_path.glob("out.step*")) == [f"out.step000{i}.png" for i in range(1, 5)]
    assert all((tmp_path / name).read_bytes() == data for name, data in kept.items())
    assert not state_path(out).exists()


# ---- files from outside ------------------------------------------------------------------------------


def _calls(tree: ast.AST, names: set[str]):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in names:
                yield node, {k.arg: k.value for k in node.keywords}


def test_every_torch_load_is_weights_only():
    """A pickle can run code when loaded: every load in the package must refuse that."""
    checked = 0
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node, keywords in _calls(tree, {"load", "load_state_dict_from_url"}):
            if ast.unparse(node.func) not in ("torch.load", "torch.hub.load_state_dict_from_url"):
                continue
            checked += 1
            value = keywords.get("weights_only")
            assert isinstance(value, ast.Constant) and value.value is True, f"{path}:{node.lineno}: {ast.unparse(node)}"
        for node, keywords in _calls(tree, {"load"}):
            if ast.unparse(node.func) == "np.load":
                value = keywords.get("allow_pickle")
                assert isinstance(value, ast.Constant) and value.value is False, f"{path}:{node.lineno}"
        for node, _ in _calls(tree, {"loads", "load", "Unpickler"}):
            if ast.unparse(node.func) in ("pickle.loads", "pickle.load", "pickle.Unpickler"):
                pytest.fail(f"{path}:{node.lineno}: unrestricted unpickling: {ast.unparse(node)}")
    assert checked >= 4  # weights (2), critic (2), state (1): the guard sees the real calls


def _damage(data: bytes, cut: int, flips: list[tuple[int, int]], tail: bytes) -> bytes:
    damaged = bytearray(data[: len(data) - cut % (len(data) + 1)])
    for position, value in flips:
        if damaged:
            damaged[position % len(damaged)] = value
    return bytes(damaged) + tail


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    cut=st.integers(0, 4000),
    flips=st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), max_size=6),
    tail=st.binary(max_size=64),
    legacy=st.booleans(),
)
def test_damaged_state_and_weights_files_never_crash(tmp_path, cut, flips, tail, legacy):
    state = StateFile(tmp_path / "out.png", "f" * 64)
    image = torch.rand(1, 3, 4, 4)
    state.save(Checkpoint(step=3, image=image, best_image=image, best_terms={"total": 1.0},
                          optimiser={"step": torch.tensor(3.0), "exp_avg": image, "exp_avg_sq": image}))
    state.path.write_bytes(_damage(state.path.read_bytes(), cut, flips, tail))
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        loaded = state.load()
    assert loaded is None or isinstance(loaded.image, torch.Tensor)

    pth = tmp_path / "vgg.pth"
    torch.save({"features.0.weight": torch.rand(2, 3)}, pth, _use_new_zipfile_serialization=not legacy)
    pth.write_bytes(_damage(pth.read_bytes(), cut, flips, tail))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            loaded_weights = weights.load_state_dict(pth)
        except WeightsError:
            return
    assert all(isinstance(v, torch.Tensor) for v in loaded_weights.values())


def test_zero_steps_score_the_start_point_and_count_none():
    result = optimise(_quadratic(torch.ones(1, 3, 2, 2)), torch.zeros(1, 3, 2, 2), 0)
    assert result.steps == 0 and result.terms["total"] == pytest.approx(12.0)
    assert torch.equal(result.image, torch.zeros(1, 3, 2, 2))
