"""The benchmark: score photostyle, the paper's results, a classical baseline and any other method alike.

See :mod:`photostyle.bench.metrics` for what is measured (with a table of metrics),
:mod:`photostyle.bench.runner` for the folder layout, and ``photostyle bench --help``.
"""

from .metrics import (
    GRAM_LAYERS,
    MAX_EVAL_SIZE,
    METRICS,
    Evaluator,
    Metric,
    PairTargets,
    gram_key,
    lpips_distance,
    segment_colour_distance,
    segment_gram_distance,
    segment_gram_distances,
    sliced_wasserstein,
    ssim_luminance,
)
from .report import contact_sheet, render_markdown
from .runner import Pair, discover_pairs, find_image, parse_scores, run_benchmark, select_pairs

__all__ = [
    "GRAM_LAYERS",
    "MAX_EVAL_SIZE",
    "METRICS",
    "Evaluator",
    "Metric",
    "Pair",
    "PairTargets",
    "contact_sheet",
    "discover_pairs",
    "find_image",
    "gram_key",
    "lpips_distance",
    "parse_scores",
    "render_markdown",
    "run_benchmark",
    "segment_colour_distance",
    "segment_gram_distance",
    "segment_gram_distances",
    "select_pairs",
    "sliced_wasserstein",
    "ssim_luminance",
]
