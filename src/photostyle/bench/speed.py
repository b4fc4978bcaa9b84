"""What a transfer costs by photo size: ``photostyle bench --speed``.

For each size in megapixels a synthetic photo is made from the bundled example
(``examples/rocket.jpg`` resampled to that many pixels, with a little grain so it is not
smoother than a camera's; saved as JPEG, quality 95), and each preset transfers it with the
look of ``examples/coffee.png`` in a **fresh process**, as one ``photostyle transfer`` call
would: the wall time includes starting Python and loading the network, and the peak resident
memory is that process's own. Each run's report gives the time of each stage.

Written to ``--out``: ``speed.json`` (every run), ``speed.md`` (a table per preset) and
``speed.svg`` (time and peak memory against megapixels, one line per preset).
"""

from __future__ import annotations

import json
import math
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from photostyle import io
from photostyle.errors import InputError
from photostyle.settings import PRESETS, TransferConfig

__all__ = ["DEFAULT_MEGAPIXELS", "EXAMPLES", "machine_name", "parse_megapixels", "render_markdown", "render_svg",
           "run_speed", "synthetic_photo"]

DEFAULT_MEGAPIXELS = (0.3, 2.0, 12.0, 24.0, 50.0)
EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
#: stages of the pipeline, in order, as the report's ``seconds`` names them
STAGES = ("load", "segment", "build_losses", "prepare", "init", "optimise", "upsample", "texture", "chroma", "save")


def parse_megapixels(text: str) -> list[float]:
    """``"0.3,2,12"`` -> ``[0.3, 2.0, 12.0]``; each in (0, 120] (the command line's photo limit).

    Raises:
        InputError: not a comma-separated list of such numbers.
    """
    try:
        values = [float(item) for item in text.split(",") if item.strip()]
    except ValueError:
        values = []
    if not values or any(not (0 < v <= 120) for v in values):
        raise InputError(f"--megapixels expects numbers in (0, 120] separated by commas, e.g. 0.3,2,12, "
                         f"but received {text!r}")
    return values


def synthetic_photo(megapixels: float, path: Path, source: Path | None = None, seed: int = 0) -> tuple[int, int]:
    """Write a photo of about ``megapixels`` million pixels made from ``source`` to ``path`` (JPEG, quality 95).

    The source's aspect ratio is kept; a Gaussian grain of 1.5 levels (of 255) is added so the
    upscaled photo has a camera's fine texture. Work is done in strips of rows, so a 50 MP photo
    costs about 0.5 GB.

    Returns:
        ``(height, width)`` of the written photo.
    """
    from PIL import Image

    source = source or EXAMPLES / "rocket.jpg"
    with Image.open(source) as im:
        base = im.convert("RGB")
    aspect = base.width / base.height
    height = max(16, round(math.sqrt(megapixels * 1e6 / aspect)))
    width = max(16, round(height * aspect))
    big = base.resize((width, height), Image.Resampling.BICUBIC)
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.frombuffer(bytearray(big.tobytes()), dtype=torch.uint8).view(height, width, 3)
    strip = max(1, 2_000_000 // width)
    for top in range(0, height, strip):
        rows = pixels[top : top + strip]
        noise = torch.randn(rows.shape, generator=generator) * 1.5
        rows.copy_((rows.float() + noise).round().clamp(0, 255).to(torch.uint8))
    Image.fromarray(pixels.numpy()).save(path, format="JPEG", quality=95)
    return height, width


def machine_name(device: str) -> str:
    """The processor or card the runs use, e.g. ``"cpu: AMD EPYC 7B13, 2 threads"`` or ``"cuda: NVIDIA H200"``."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(torch.device(device if ':' in device else 'cuda'))}"
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"cpu: {model}, {torch.get_num_threads()} threads"


def _worker(config_json: str, content: str, style: str, output: str, report: str) -> int:
    """One transfer in this process (``python -m photostyle.bench.speed --worker ...``), for :func:`run_speed`."""
    from photostyle.pipeline import transfer

    config = TransferConfig(**json.loads(config_json))
    result = transfer(content, style, output, config, overwrite=True, report_path=report)
    if torch.cuda.is_available() and result.device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**20
        data = json.loads(Path(report).read_text())
        data["gpu_peak_mb"] = peak
        io.write_atomically(report, json.dumps(data, indent=1))
    return 0


def run_speed(
    out: str | Path,
    config: TransferConfig | None = None,
    megapixels: Sequence[float] = DEFAULT_MEGAPIXELS,
    presets: Sequence[str] = tuple(PRESETS),
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Time each preset at each size in a fresh process; write speed.json, speed.md and speed.svg to ``out``.

    Args:
        out: the benchmark folder (new, empty, or made by an earlier ``photostyle bench``).
        config: settings other than the presets' size, steps and levels (device, segmenter ...).
        megapixels: photo sizes.
        presets: names of :data:`photostyle.settings.PRESETS`.
        progress: receives one line per run.

    Returns:
        ``{"machine", "device", "runs": [...]}`` as written to speed.json; a run that failed has ``"error"``.
    """
    from photostyle.bench.runner import check_bench_folder, make_bench_folder
    from photostyle.runtime import resolve_device

    if not (EXAMPLES / "rocket.jpg").is_file() or not (EXAMPLES / "coffee.png").is_file():
        raise InputError(f"the speed benchmark makes its photos from {EXAMPLES}/rocket.jpg and coffee.png, which "
                         "are missing; run it from a clone of the repository")
    out = check_bench_folder(Path(out))
    make_bench_folder(out, ("speed",))
    config = config or TransferConfig()
    device = str(resolve_device(config.device))
    record: dict[str, Any] = {"machine": machine_name(device), "device": device, "torch": torch.__version__,
                              "runs": []}
    for mp in megapixels:
        photo = out / "speed" / f"photo-{mp:g}mp.jpg"
        height, width = synthetic_photo(mp, photo)
        for preset in presets:
            run_config = replace(config, **PRESETS[preset])
            report = out / "speed" / f"report-{preset}-{mp:g}mp.json"
            argv = [sys.executable, "-m", "photostyle.bench.speed", "--worker", json.dumps(asdict(run_config)),
                    str(photo), str(EXAMPLES / "coffee.png"), str(out / "speed" / f"out-{preset}-{mp:g}mp.jpg"),
                    str(report)]
            start = time.perf_counter()
            done = subprocess.run(argv, capture_output=True, text=True)
            wall = time.perf_counter() - start
            run: dict[str, Any] = {"preset": preset, "megapixels": round(height * width / 1e6, 2),
                                   "size": [height, width], "wall_s": round(wall, 2)}
            if done.returncode == 0:
                data = json.loads(report.read_text())
                run.update(stages={k: round(v, 2) for k, v in data["seconds"].items()},
                           peak_rss_mb=round(data["peak_rss_mb"], 1), gpu_peak_mb=data.get("gpu_peak_mb"),
                           precision=data["precision"], working_size=data["working_size"])
            else:
                run["error"] = (done.stderr.strip().splitlines() or ["exit code %d" % done.returncode])[-1]
            record["runs"].append(run)
            if progress is not None:
                progress(f"{preset} {run['megapixels']:g} MP: " + (f"{wall:.1f} s, {run['peak_rss_mb']:.0f} MB"
                                                                    if "error" not in run else run["error"]))
    io.write_atomically(out / "speed.json", json.dumps(record, indent=1) + "\n")
    io.write_atomically(out / "speed.md", render_markdown(record))
    io.write_atomically(out / "speed.svg", render_svg(record))
    return record


def render_markdown(record: dict[str, Any]) -> str:
    """speed.md: one table per preset, a row per size: wall time, the stages, peak memory."""
    lines = ["# photostyle speed by photo size\n", f"Machine: {record['machine']} ({record['device']}), "
             f"torch {record['torch']}. Wall time of one `photostyle transfer` call in a fresh process "
             "(Python start and network load included); stages from its report; peak memory of that process.\n"]
    for preset in dict.fromkeys(r["preset"] for r in record["runs"]):
        runs = [r for r in record["runs"] if r["preset"] == preset]
        gpu = any(r.get("gpu_peak_mb") for r in runs)
        head = ["MP", "size", "wall s", *STAGES, "peak RSS GB"] + (["CUDA peak GB"] if gpu else [])
        lines += [f"\n## {preset}\n", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in runs:
            if "error" in r:
                lines.append(f"| {r['megapixels']:g} | {r['size'][1]}x{r['size'][0]} | failed: {r['error']} |")
                continue
            cells = [f"{r['megapixels']:g}", f"{r['size'][1]}x{r['size'][0]}", f"{r['wall_s']:.1f}"]
            cells += [f"{r['stages'].get(stage, 0.0):.1f}" for stage in STAGES]
            cells.append(f"{r['peak_rss_mb'] / 1024:.2f}")
            if gpu:
                cells.append(f"{(r.get('gpu_peak_mb') or 0) / 1024:.2f}")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_svg(record: dict[str, Any], width: int = 760, height: int = 300) -> str:
    """speed.svg: wall time (left) and peak memory (right) against megapixels, one line per preset."""
    colours = {"fast": "#0072b2", "balanced": "#e69f00", "best": "#009e73"}
    runs = [r for r in record["runs"] if "error" not in r]
    panel, pad = (width - 40) // 2, 44
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
             f'font-size="11"><rect width="100%" height="100%" fill="white"/>']
    x_max = max([r["megapixels"] for r in runs] + [1.0])
    for n, (key, title) in enumerate((("wall_s", "wall time (s)"), ("peak_rss_mb", "peak memory (GB)"))):
        left = 20 + n * (panel + 20)
        scale = 1 / 1024 if key == "peak_rss_mb" else 1.0
        y_max = max([r[key] * scale for r in runs] + [1e-9]) * 1.1
        x0, y0, w, h = left + pad, height - 36, panel - pad - 8, height - 70
        parts.append(f'<text x="{left + panel / 2}" y="16" text-anchor="middle" font-weight="bold">{title}</text>')
        parts.append(f'<line x1="{x0}" y1="{y0}" x2="{x0 + w}" y2="{y0}" stroke="black"/>'
                     f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y0 - h}" stroke="black"/>')
        for tick in range(5):
            value, y = y_max * tick / 4, y0 - h * tick / 4
            parts.append(f'<text x="{x0 - 4}" y="{y + 4:.1f}" text-anchor="end">{value:.3g}</text>')
            xv = x_max * tick / 4
            parts.append(f'<text x="{x0 + w * tick / 4:.1f}" y="{y0 + 14}" text-anchor="middle">{xv:.3g}</text>')
        parts.append(f'<text x="{x0 + w / 2}" y="{height - 6}" text-anchor="middle">megapixels</text>')
        for preset in dict.fromkeys(r["preset"] for r in runs):
            points = [(x0 + w * r["megapixels"] / x_max, y0 - h * r[key] * scale / y_max)
                      for r in runs if r["preset"] == preset]
            colour = colours.get(preset, "#555")
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="'
                         + " ".join(f"{x:.1f},{y:.1f}" for x, y in points) + '"/>')
            parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>' for x, y in points]
    for n, preset in enumerate(dict.fromkeys(r["preset"] for r in runs)):
        parts.append(f'<text x="{width - 90}" y="{36 + 14 * n}" fill="{colours.get(preset, "#555")}">— {preset}</text>')
    parts.append(f'<text x="{width - 8}" y="{height - 6}" text-anchor="end" fill="#666">{record["machine"]}</text>')
    return "\n".join(parts) + "\n</svg>\n"


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "--worker":
        sys.exit(_worker(*sys.argv[2:]))
    sys.exit("usage: photostyle bench --speed --out DIR [--megapixels 0.3,2,12,24,50]")
