"""The benchmark's outputs: means, wins, ``report.json``, ``report.md`` and contact sheets."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from ..io import write_atomically
from .metrics import GRAM_LAYERS, MAX_EVAL_SIZE, METRICS, gram_key

_ARROW = {"lower": "↓", "higher": "↑"}
_LABEL_HEIGHT = 22
#: what :func:`means` averages: every metric and each layer's Gram distance
_MEAN_KEYS = (*METRICS, *(gram_key(layer) for layer in GRAM_LAYERS))


def means(records: Sequence[dict[str, Any]], methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Mean of each of :data:`_MEAN_KEYS` per method over the pairs it was scored on, with that count ``n``."""
    table: dict[str, dict[str, Any]] = {}
    for method in methods:
        scored = [r["methods"][method]["metrics"] for r in records if "metrics" in r["methods"].get(method, {})]
        table[method] = {"n": len(scored)}
        table[method].update({k: float(np.mean([s[k] for s in scored])) if scored else None for k in _MEAN_KEYS})
    return table


def wins(
    records: Sequence[dict[str, Any]], methods: Sequence[str], against: str = "photostyle"
) -> dict[str, dict[str, Any]]:
    """Per other method and metric: on how many pairs scored by both ``against`` is better (ties are not wins)."""
    table: dict[str, dict[str, Any]] = {}
    for method in methods:
        if method == against:
            continue
        both = [(r["methods"][against]["metrics"], r["methods"][method]["metrics"]) for r in records
                if "metrics" in r["methods"].get(against, {}) and "metrics" in r["methods"].get(method, {})]
        row: dict[str, Any] = {"pairs": len(both)}
        for key, metric in METRICS.items():
            sign = 1 if metric.better == "lower" else -1
            row[key] = sum(sign * (ours[key] - theirs[key]) < 0 for ours, theirs in both)
        table[method] = row
    return table


def write_report(report: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Add means and wins to ``report``, write ``report.json`` and ``report.md`` into ``out_dir``; return it."""
    report["means"] = means(report["pairs"], report["methods"])
    report["wins"] = wins(report["pairs"], report["methods"])
    report["metric_definitions"] = {k: m._asdict() for k, m in METRICS.items()}
    write_atomically(out_dir / "report.json", json.dumps(report, indent=2, default=str))
    write_atomically(out_dir / "report.md", render_markdown(report))
    return report


def _eval_size(size: int | None) -> str:
    return f"{size} px (long side)" if size is not None else f"each photo's own size (long side at most {MAX_EVAL_SIZE} px)"


def _fmt(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def render_markdown(report: dict[str, Any]) -> str:
    """``report.md``: means per method, wins of photostyle, Gram per layer, cost, per-pair scores, errors, metrics."""
    heads = [f"{m.title} {_ARROW[m.better]}" for m in METRICS.values()]
    records = report["pairs"]
    lines = [
        "# photostyle benchmark", "",
        f"{len(records)} pair(s) from `{report['pairs_dir']}`, photostyle masks: {report['masks']}, "
        f"transfer {'run' if report['run'] else 'not run (existing outputs scored)'}; "
        f"{report['seconds']:.0f} s in all.",
        f"Every image is scored at {_eval_size(report['eval_size'])} against the content and style photos, "
        f"segment-wise metrics with the hand masks; evaluation network: {report['evaluator']}.", "",
        "## Means", "",
        *_table(["method", "pairs", *heads],
                [[m, str(row["n"]), *(_fmt(row[k]) for k in METRICS)] for m, row in report["means"].items()]),
        "", "## Pairs where photostyle is better", "",
        *_table(["vs", "pairs", *heads],
                [[m, str(row["pairs"]), *(f"{row[k]}/{row['pairs']}" for k in METRICS)]
                 for m, row in report["wins"].items()]),
        "", "## Gram distance per layer", "",
        "Means of each layer's Gram distance (the Gram column is their mean): which scale of the style is missing.", "",
        *_table(["method", *GRAM_LAYERS],
                [[m, *(_fmt(row.get(gram_key(layer))) for layer in GRAM_LAYERS)] for m, row in report["means"].items()]),
        "", "## Cost of photostyle", "",
    ]
    costs = [(r["id"], r["transfer"]) for r in records if "seconds" in r.get("transfer", {})]
    stages = list(dict.fromkeys(s for _, t in costs for s in t["seconds"]))
    lines += _table(
        ["pair", "device", "total s", *(f"{s} s" for s in stages), "peak RSS MiB", "GPU peak MiB"],
        [[pid, t["device"], _fmt(t["total_seconds"]), *(_fmt(t["seconds"].get(s)) for s in stages),
          _fmt(t["peak_rss_mb"]), _fmt(t.get("gpu_peak_mb"))] for pid, t in costs],
    )
    lines += ["", "Peak RSS is the process's peak so far (it only grows over a run).", "", "## Per pair", ""]
    rows = [[r["id"], m, *(_fmt(r["methods"][m]["metrics"][k]) for k in METRICS)]
            for r in records for m in report["methods"] if "metrics" in r["methods"].get(m, {})]
    lines += _table(["pair", "method", *heads], rows)
    errors = [f"- pair {r['id']}: {r['error']}" for r in records if "error" in r]
    errors += [f"- pair {r['id']} {m}: {v['error']}" for r in records for m, v in r["methods"].items() if "error" in v]
    notes = [f"- pair {r['id']}: {n}" for r in records for n in r["notes"]]
    lines += ["", "## Errors", "", *(errors or ["none"]), "", "## Notes", "", *(notes or ["none"])]
    lines += ["", "## Metrics", ""]
    lines += _table(["metric", "better", "meaning"], [[m.title, m.better, m.meaning] for m in METRICS.values()])
    return "\n".join(lines) + "\n"


def contact_sheet(panels: Sequence[tuple[str, torch.Tensor | None]], height: int = 300) -> torch.Tensor:
    """Images side by side at ``height`` px, each under its label; ``None`` is a grey "missing" panel.

    Args:
        panels: ``(label, image)`` with images ``(1, 3, H, W)`` in [0, 1] or ``None``.
        height: height of every image in px.

    Returns:
        ``(1, 3, height + 22, W)`` in [0, 1].
    """
    font = ImageFont.load_default(size=15)
    first = next((image for _, image in panels if image is not None), None)
    missing_width = round(height * first.shape[-1] / first.shape[-2]) if first is not None else height
    tiles = []
    for label, image in panels:
        if image is None:
            tile = Image.new("RGB", (missing_width, height + _LABEL_HEIGHT), (128, 128, 128))
            ImageDraw.Draw(tile).text((6, _LABEL_HEIGHT + height // 2), "missing", fill=(255, 255, 255), font=font)
        else:
            width = max(1, round(height * image.shape[-1] / image.shape[-2]))
            pixels = F.interpolate(image.float(), size=(height, width), mode="bilinear", antialias=True)
            array = (pixels[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            tile = Image.new("RGB", (width, height + _LABEL_HEIGHT), (255, 255, 255))
            tile.paste(Image.fromarray(array), (0, _LABEL_HEIGHT))
        ImageDraw.Draw(tile).text((6, 5), label, fill=(0, 0, 0), font=font)
        tiles.append(tile)
    gap = 4
    width = sum(t.width for t in tiles) + gap * (len(tiles) - 1)
    sheet = Image.new("RGB", (width, height + _LABEL_HEIGHT), (255, 255, 255))
    x = 0
    for tile in tiles:
        sheet.paste(tile, (x, 0))
        x += tile.width + gap
    return torch.from_numpy(np.asarray(sheet).copy()).permute(2, 0, 1).unsqueeze(0).float() / 255
