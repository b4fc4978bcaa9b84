"""Ctrl-C on a real ``photostyle transfer`` process keeps the best result and the resume state."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from photostyle import cli
from photostyle.state import state_path

from helpers import write_pair

ARGS = ["--weights", "none", "--size", "48", "--levels", "1", "--segmentation", "none", "-q"]


@pytest.fixture
def pair(tmp_path) -> tuple[Path, Path]:
    return write_pair(tmp_path, content_size=(48, 40), style_size=(40, 36))


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process is POSIX")
def test_sigint_writes_best_result_and_state_then_resume_finishes(tmp_path, pair, capsys):
    out = tmp_path / "out.png"
    command = [sys.executable, "-m", "photostyle.cli", "transfer", *map(str, pair), "-o", str(out),
               *ARGS, "--iterations", "100000", "--save-every", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 90
        while not ((tmp_path / "out.step0001.png").exists() and state_path(out).exists()):
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "no optimisation step within 90 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert f"the best result so far was written to {out}; add --resume to the same command to continue" in stderr
    with Image.open(out) as written:
        written.load()
        assert written.size == (48, 40)
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    done = json.loads(torch.load(state_path(out), weights_only=True)["meta"])["step"]
    assert f"interrupted after {done} steps" in stderr

    report = tmp_path / "report.json"
    resume = ["transfer", *map(str, pair), "-o", str(out), *ARGS, "--iterations", str(done + 2), "--resume",
              "--report", str(report)]
    assert cli.main(resume) == 0, capsys.readouterr().err  # one torch thread: conftest.py
    assert json.loads(report.read_text())["steps"] == done + 2
    assert not state_path(out).exists()
    assert Image.open(out).size == (48, 40)
