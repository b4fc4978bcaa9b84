"""No command replaces or deletes a file it did not create, and every refusal is one line.

Each case of :data:`CASES` lays out a folder (two photos, masks, an earlier result, a report, ...),
runs one command line in this process, and checks the exit code, the one line that names the
problem (no traceback), that every file that was there before is byte-identical afterwards, and
that nothing new was left behind. The photos are tiny and the network random (``--weights none``),
so the whole table runs in seconds.
"""

from __future__ import annotations

import json
import os
import signal
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from photostyle import cli
from photostyle.state import state_path

from helpers import write_pair

FAST = ["--weights", "none", "--size", "32", "--iterations", "1", "--segmentation", "none", "-q"]


@dataclass(frozen=True)
class Case:
    """One command line in a prepared folder.

    Attributes:
        argv: the arguments; ``{d}`` is replaced by the folder.
        code: the expected exit code.
        says: a fragment of the one error line.
        setup: lays out extra files in the folder (the pair ``content.png``/``style.png`` is always there).
    """

    argv: str
    code: int
    says: str
    setup: Callable[[Path], object] = lambda d: None


def _file(name: str, data: bytes = b"precious") -> Callable[[Path], object]:
    return lambda d: (d / name).parent.mkdir(parents=True, exist_ok=True) or (d / name).write_bytes(data)


def _folder(name: str) -> Callable[[Path], object]:
    return lambda d: (d / name).mkdir(parents=True)


def _masks(d: Path) -> None:
    for name, size in (("cmask.png", (48, 40)), ("smask.png", (40, 36))):
        Image.new("RGB", size, (0, 0, 255)).save(d / name)


def _links(d: Path) -> None:
    (d / "link.png").symlink_to(d / "content.png")
    os.link(d / "style.png", d / "hard.png")


def _interrupted_state(d: Path) -> None:
    """An earlier result and the resume state of a run on other inputs (the photos swapped)."""
    (d / "out.png").write_bytes(b"an earlier result")
    _state_only(d)


def _state_only(d: Path) -> None:
    """The resume state of a run on other inputs, its partial result deleted."""
    torch.save({"image": torch.zeros(1), "best_image": torch.zeros(1),
                "meta": json.dumps({"version": 1, "fingerprint": "other inputs", "step": 1, "level": 0,
                                    "best_terms": {}})}, state_path(d / "out.png"))


def _csv(output: str) -> Callable[[Path], object]:
    return lambda d: (d / "pairs.csv").write_text(f"content.png,style.png,{output}\n")


def _corrupt_weights(d: Path) -> None:
    torch.save({"model": torch.nn.Linear(2, 2)}, d / "vgg.pth")


T = "transfer {d}/content.png {d}/style.png " + " ".join(FAST)
CASES: dict[str, Case] = {
    # an output that is an input: refused whatever the flags (exit 2)
    "output-is-content": Case(T + " -o {d}/content.png", 2, "is the input photo or mask"),
    "output-is-content-overwrite": Case(T + " -o {d}/content.png --overwrite", 2, "is the input photo or mask"),
    "output-is-style-overwrite": Case(T + " -o {d}/style.png --overwrite", 2, "is the input photo or mask"),
    "output-is-content-via-dotdot": Case(T + " -o {d}/sub/../content.png --overwrite", 2, "is the input", _folder("sub")),
    "output-is-symlink-to-content": Case(T + " -o {d}/link.png --overwrite", 2, "is the input", _links),
    "output-is-hard-link-to-style": Case(T + " -o {d}/hard.png --overwrite", 2, "is the input", _links),
    "output-is-content-resume": Case(T + " -o {d}/content.png --resume", 2, "is the input photo or mask"),
    "step-image-is-content": Case("transfer {d}/out.step0001.png {d}/style.png " + " ".join(FAST) +
                                  " -o {d}/out.png --save-every 1 --overwrite", 2, "the intermediate image",
                                  lambda d: (d / "out.step0001.png").write_bytes((d / "content.png").read_bytes())),
    "output-is-mask": Case(T + " -o {d}/cmask.png --overwrite --content-mask {d}/cmask.png --style-mask {d}/smask.png",
                           2, "is the input photo or mask", _masks),
    "report-is-content": Case(T + " -o {d}/out.png --report {d}/content.png", 2, "the report"),
    "report-is-style-overwrite": Case(T + " -o {d}/out.png --report {d}/style.png --overwrite", 2, "is the input"),
    "report-is-output": Case(T + " -o {d}/out.png --report {d}/out.png --overwrite", 2, "are both"),
    # outputs that exist or cannot be written: refused before any work (exit 6)
    "output-exists": Case(T + " -o {d}/out.png", 6, "already exists; use --overwrite", _file("out.png")),
    "output-exists-resume-without-state": Case(T + " -o {d}/out.png --resume", 6, "already exists", _file("out.png")),
    "output-exists-resume-other-inputs": Case(T + " -o {d}/out.png --resume", 6, "already exists", _interrupted_state),
    "report-exists": Case(T + " -o {d}/out.png --report {d}/r.json", 6, "r.json already exists", _file("r.json")),
    "report-folder-missing": Case(T + " -o {d}/out.png --report {d}/nope/r.json", 6, "does not exist"),
    "report-is-a-folder": Case(T + " -o {d}/out.png --report {d}/r.json --overwrite", 6, "is a folder", _folder("r.json")),
    "output-is-a-folder": Case(T + " -o {d}/out.png --overwrite", 6, "is a folder", _folder("out.png")),
    "output-folder-missing": Case(T + " -o {d}/nope/out.png", 6, "does not exist"),
    "output-unknown-type": Case(T + " -o {d}/out.xyz", 6, "unknown image type"),
    "state-of-an-earlier-run": Case(T + " -o {d}/out.png", 6, "add --resume to continue it", _state_only),
    "state-of-other-inputs-resume": Case(T + " -o {d}/out.png --resume", 6, "does not continue with these files",
                                         _state_only),
    "step-image-exists": Case(T + " -o {d}/out.png --save-every 1", 6, "out.step0001.png already exists",
                              _file("out.step0001.png")),
    "step-image-exists-resume-without-state": Case(T + " -o {d}/out.png --save-every 1 --resume", 6,
                                               "out.step0001.png already exists", _file("out.step0001.png")),
    "state-path-is-a-folder": Case(T + " -o {d}/out.png --save-every 1", 6, "is a folder",
                                   _folder("out.png.photostyle-state.pt")),
    # options out of range: usage errors (exit 2)
    "seed-huge": Case(T + " -o {d}/out.png --seed 99999999999999999999999", 2, "--seed"),
    "seed-negative": Case(T + " -o {d}/out.png --seed -1", 2, "--seed"),
    "lr-too-big": Case(T + " -o {d}/out.png --lr 5", 2, "a number in (0, 1]"),
    "levels-too-many": Case(T + " -o {d}/out.png --levels 40", 2, "an integer in [1, 6]"),
    "semantic-threshold-nan": Case(T + " -o {d}/out.png --semantic-threshold nan", 2, "--semantic-threshold"),
    # devices
    "device-mps": Case(T + " -o {d}/out.png --device mps", 4, "not supported; use auto, cpu or cuda"),
    "device-meta": Case(T + " -o {d}/out.png --device meta", 4, "not supported"),
    "device-nonsense": Case(T + " -o {d}/out.png --device quantum", 4, "unknown device"),
    # weights: one line, no advice to load unsafely, the file kept
    "weights-corrupt": Case(T.replace("--weights none", "--weights {d}/vgg.pth") + " -o {d}/out.png", 3,
                            "Unsupported global", _corrupt_weights),
    "fetch-unknown": Case("weights --fetch vgg17", 2, "invalid choice"),
    # segment
    "segment-output-is-a-file": Case("segment {d}/content.png -o {d}/seg", 6, "is a file", _file("seg")),
    "segment-grouping-exists": Case("segment {d}/content.png {d}/style.png -o {d}/seg --segmenter coseg", 6,
                                    "grouping.json already exists", _file("seg/grouping.json")),
    "segment-mask-exists": Case("segment {d}/content.png -o {d}/seg", 6, "image_mask.png already exists",
                                _file("seg/image_mask.png")),
    "segment-output-is-input": Case("segment {d}/seg/image_mask.png -o {d}/seg --overwrite", 2, "is the input",
                                    lambda d: _folder("seg")(d) or Image.new("RGB", (32, 32)).save(d / "seg/image_mask.png")),
    "segment-min-fraction-negative": Case("segment {d}/content.png -o {d}/seg --min-fraction -1", 2, "--min-fraction"),
    "segment-threshold-nan": Case("segment {d}/content.png -o {d}/seg --semantic-threshold nan", 2, "--semantic-threshold"),
    # bench
    "bench-out-is-a-file": Case("bench --pairs {d}/pairs --out {d}/report.txt --weights none", 6, "is a file",
                                lambda d: _folder("pairs")(d) or _file("report.txt")(d)),
    "bench-out-holds-other-files": Case("bench --pairs {d}/pairs --out {d}/mine --weights none", 6,
                                        "did not make", lambda d: _folder("pairs")(d) or _file("mine/thesis.tex")(d)),
    "bench-limit-negative": Case("bench --pairs {d} --out {d}/b --limit -1", 2, "--limit"),
    "bench-limit-zero": Case("bench --pairs {d} --out {d}/b --limit 0", 2, "--limit"),
    # batch
    "batch-csv-absolute-output": Case("batch --pairs {d}/pairs.csv --output {d}/out " + " ".join(FAST), 2,
                                      "outside --output", _csv("/tmp/elsewhere.jpg")),
    "batch-csv-dotdot-output": Case("batch --pairs {d}/pairs.csv --output {d}/out " + " ".join(FAST), 2,
                                    "outside --output", _csv("../content.png")),
    "batch-output-is-input-folder": Case("batch --input {d} --style {d}/style.png --output {d} " + " ".join(FAST), 2,
                                         "is the input folder"),
}


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder``: file bytes, or ``None`` for folders and links' targets' kind."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() and not p.is_symlink() else None)
            for p in sorted(folder.rglob("*"))}


def run_cli(capsys, argv: list[str]) -> tuple[int, str]:
    """``photostyle ARGV`` in this process: the exit code (usage errors included) and stderr."""
    try:
        code = cli.main(argv)
    except SystemExit as stop:  # argparse's usage errors
        code = stop.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("name", list(CASES))
def test_refused_in_one_line_and_every_file_kept(capsys, tmp_path, monkeypatch, name):
    case = CASES[name]
    write_pair(tmp_path, content_size=(48, 40), style_size=(40, 36))
    case.setup(tmp_path)
    before = _snapshot(tmp_path)
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(capsys, case.argv.format(d=tmp_path).split())
    errors = [line for line in err.splitlines() if "error:" in line]
    assert code == case.code, err
    assert len(errors) == 1 and case.says in errors[0], err
    assert "Traceback" not in err and "weights_only=False" not in err
    assert _snapshot(tmp_path) == before  # nothing replaced, removed or left behind


def test_there_are_at_least_forty_cases():
    assert len(CASES) >= 40


def test_resume_of_a_matching_state_may_replace_its_own_output(capsys, tmp_path):
    content, style = write_pair(tmp_path, content_size=(48, 40), style_size=(40, 36))
    out, report = tmp_path / "out.png", tmp_path / "r.json"
    argv = ["transfer", str(content), str(style), "-o", str(out), "--report", str(report), *FAST, "--save-every", "1"]
    assert run_cli(capsys, argv)[0] == 0 and not state_path(out).exists()
    code, err = run_cli(capsys, [*argv, "--resume"])  # finished: no state, so the result is not replaced
    assert code == 6 and "already exists" in err


def test_report_is_written_atomically_with_the_run(capsys, tmp_path):
    content, style = write_pair(tmp_path, content_size=(48, 40), style_size=(40, 36))
    report = tmp_path / "r.json"
    code, err = run_cli(capsys, ["transfer", str(content), str(style), "-o", str(tmp_path / "o.png"),
                                 "--report", str(report), *FAST])
    assert code == 0, err
    assert json.loads(report.read_text())["output_written"] is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["content.png", "o.png", "r.json", "style.png"]


def test_bmp_with_transparency_is_composited_with_a_warning(capsys, tmp_path):
    rgba = np.random.default_rng(0).integers(0, 256, (40, 48, 4), dtype=np.uint8)
    rgba[..., 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "content.png")
    Image.fromarray(rgba[:36, :40, :3]).save(tmp_path / "style.png")
    code, err = run_cli(capsys, ["transfer", str(tmp_path / "content.png"), str(tmp_path / "style.png"),
                                 "-o", str(tmp_path / "o.bmp"), *FAST])
    assert code == 0 and "composited on white" in err
    assert np.asarray(Image.open(tmp_path / "o.bmp")).min() == 255  # fully transparent -> white


def test_segment_rerun_with_overwrite_replaces_only_its_files(capsys, tmp_path):
    content, _ = write_pair(tmp_path, content_size=(48, 40), style_size=(40, 36))
    seg = tmp_path / "seg"
    assert run_cli(capsys, ["segment", str(content), "-o", str(seg), "--segmenter", "coseg"])[0] == 0
    (seg / "notes.txt").write_text("mine")
    assert run_cli(capsys, ["segment", str(content), "-o", str(seg), "--segmenter", "coseg", "--overwrite"])[0] == 0
    assert sorted(p.name for p in seg.iterdir()) == ["grouping.json", "image_mask.png", "image_overlay.png", "notes.txt"]
    assert (seg / "notes.txt").read_text() == "mine"


def test_batch_interrupted_with_overwrite_keeps_the_previous_result(tmp_path, monkeypatch):
    from photostyle import batch, pipeline

    content, style = write_pair(tmp_path, content_size=(48, 40), style_size=(40, 36))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "content.png").write_bytes(b"yesterday's result")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "optimise", lambda *a, **k: interrupted())
    jobs = [batch.BatchJob(content, style, out_dir / "content.png")]
    summary = batch.run_batch(jobs, pipeline.TransferConfig(weights=None, size=32, iterations=1, segmentation="none"),
                              overwrite=True, progress=False)
    assert summary.interrupted
    assert (out_dir / "content.png").read_bytes() == b"yesterday's result"


# ---- signals on a real process ------------------------------------------------------------------


def _start(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, Path]:
    content, style = write_pair(tmp_path, content_size=(48, 40), style_size=(40, 36))
    out = tmp_path / "out.png"
    command = [sys.executable, "-m", "photostyle.cli", "transfer", str(content), str(style), "-o", str(out),
               "--weights", "none", "--size", "48", "--segmentation", "none", "-q", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env), out


def _finish(proc: subprocess.Popen) -> str:
    try:
        return proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_keeps_the_best_result_and_the_state(tmp_path):
    proc, out = _start(tmp_path, "--iterations", "100000", "--save-every", "1")
    deadline = time.monotonic() + 90
    while not state_path(out).exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stderr = _finish(proc)
    assert proc.returncode == 143, stderr
    assert "Traceback" not in stderr and f"the best result so far was written to {out}" in stderr
    assert [line.split(":")[1].strip() for line in stderr.splitlines() if line.startswith("photostyle")] == ["terminated"]
    assert Image.open(out).size == (48, 40) and state_path(out).exists()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_while_starting_up_is_one_line(tmp_path, signum, code):
    proc, out = _start(tmp_path, "--iterations", "100000")
    time.sleep(0.5)  # inside the imports of torch and the models
    proc.send_signal(signum)
    stderr = _finish(proc)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr


# ---- offline ---------------------------------------------------------------------------------------


@pytest.fixture
def no_sockets(monkeypatch):
    """Any attempt to open a network connection in this process fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("photostyle opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(subprocess, "run", refuse)  # pip


@pytest.mark.parametrize("argv, code", [
    (["--segmenter", "ade20k", "--segmentation", "auto"], 3),
    (["--arch", "vgg19", "--weights", "default"], 3),
])
def test_models_that_are_not_on_disk_are_never_downloaded(capsys, tmp_path, monkeypatch, no_sockets, argv, code):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    content, style = write_pair(tmp_path, content_size=(48, 40), style_size=(40, 36))
    start = time.perf_counter()
    result, err = run_cli(capsys, ["transfer", str(content), str(style), "-o", str(tmp_path / "o.png"), *FAST, *argv])
    assert result == code and "weights --fetch" in err and "Traceback" not in err, err
    assert time.perf_counter() - start < 30


@pytest.mark.skipif(shutil.which("unshare") is None or subprocess.run(["unshare", "-n", "true"]).returncode != 0,
                    reason="needs 'unshare -n' (a network namespace with no network)")
def test_the_default_transfer_runs_without_any_network(tmp_path):
    """The real weights, automatic segmentation, the report: all in a namespace with no network at all."""
    content, style = write_pair(tmp_path, content_size=(64, 48), style_size=(56, 48))
    out = tmp_path / "o.png"
    command = ["unshare", "-n", sys.executable, "-m", "photostyle.cli", "transfer", str(content), str(style),
               "-o", str(out), "--size", "48", "--iterations", "2", "-q", "--report", str(tmp_path / "r.json")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode == 3:
        pytest.skip(f"VGG16 weights not fetched here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    assert out.is_file() and json.loads((tmp_path / "r.json").read_text())["segmentation"]["segmenter"] == "regmatch"
