"""Run photostyle over a folder of pairs and score every method alike.

A pairs folder is laid out like Deep Photo Style Transfer's examples::

    input/inN.png          content photos (any format photostyle reads)
    style/tarN.png         style photos
    segmentation/inN.png   hand-made colour masks (optional, both or neither)
    segmentation/tarN.png
    final_results/bestN.png  the paper's results (optional): the "reference" method

The output folder gets::

    photostyle/N.png  photostyle/N.json   output and its cost record (timings, memory, device)
    baseline/N.png                        per-segment Lab mean/std transfer with the hand masks
    metrics/METHOD/N.json                 cached scores, keyed by the image's and the pair's sha256
    sheets/N.jpg                          content | style | photostyle | reference | baseline | ...
    report.json  report.md

Scores are cached per (method, pair): a rerun scores only images that changed, and
``run=False`` re-scores existing outputs without running the transfer. One pair failing is
recorded in the report as an error and the run goes on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch

from .. import io
from ..colour import segment_colour_transfer
from ..errors import InputError, OutputError
from ..lut import fit_error, fit_lut
from ..weights import sha256_file
from ..masks import Segmentation
from ..masks import load_mask_pair
from ..pipeline import TransferConfig, stylise
from ..runtime import peak_rss_mb, resolve_device
from .metrics import Evaluator, PairTargets
from .report import contact_sheet, write_report

log = logging.getLogger(__name__)

#: Bump when a metric's definition changes: cached scores with another version are recomputed.
METRICS_VERSION = 2
BUILTIN_METHODS = ("photostyle", "reference", "baseline")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
_NAME_PREFIXES = ("", "best", "in", "out", "output", "result")

MaskMode = Literal["hand", "auto", "none"]


@dataclass(frozen=True)
class Pair:
    """The files of one benchmark pair (``None`` where the folder has none)."""

    id: str
    content: Path
    style: Path
    content_mask: Path | None
    style_mask: Path | None
    reference: Path | None


def find_image(directory: Path, stem: str) -> Path | None:
    """The first ``directory/{prefix}{stem}{suffix}`` that exists, prefixes ``"" best in out output result``."""
    for prefix in _NAME_PREFIXES:
        for suffix in _IMAGE_SUFFIXES:
            path = directory / f"{prefix}{stem}{suffix}"
            if path.is_file():
                return path
    return None


def discover_pairs(root: str | Path) -> list[Pair]:
    """All pairs of a DPST-layout folder, sorted by id (numerically where ids are numbers).

    Raises:
        InputError: no ``input/`` folder, no content photo, or a content photo without a style photo.
    """
    root = Path(root)
    if not (root / "input").is_dir():
        raise InputError(f"{root} has no input/ folder; expected input/inN.png, style/tarN.png (DPST layout)")
    ids = sorted(
        {p.stem[2:] for p in (root / "input").iterdir()
         if p.stem.startswith("in") and p.suffix.lower() in _IMAGE_SUFFIXES},
        key=lambda i: (not i.isdigit(), int(i) if i.isdigit() else 0, i),
    )
    if not ids:
        raise InputError(f"{root / 'input'} holds no inN image; expected files like in1.png")
    pairs = []
    for pair_id in ids:
        style = _find(root / "style", f"tar{pair_id}")
        if style is None:
            raise InputError(f"pair {pair_id}: no style/tar{pair_id} image for input/in{pair_id}; add it or drop the pair")
        content_mask = _find(root / "segmentation", f"in{pair_id}")
        style_mask = _find(root / "segmentation", f"tar{pair_id}")
        if (content_mask is None) != (style_mask is None):
            content_mask = style_mask = None  # one mask alone is of no use; the pair is scored as one segment
        reference = _find(root / "final_results", f"best{pair_id}")
        pairs.append(Pair(pair_id, _find(root / "input", f"in{pair_id}"), style, content_mask, style_mask, reference))
    return pairs


def _find(directory: Path, stem: str) -> Path | None:
    return next((directory / f"{stem}{s}" for s in _IMAGE_SUFFIXES if (directory / f"{stem}{s}").is_file()), None)


def select_pairs(pairs: Sequence[Pair], ids: Sequence[str] | None = None, limit: int | None = None) -> list[Pair]:
    """The pairs with these ids (in the order given), then at most ``limit`` of them."""
    if ids:
        by_id = {p.id: p for p in pairs}
        unknown = [i for i in ids if i not in by_id]
        if unknown:
            raise InputError(f"unknown pair id(s) {unknown}; this folder has {', '.join(by_id)}")
        pairs = [by_id[i] for i in ids]
    return list(pairs if limit is None else pairs[:limit])


def parse_scores(items: Sequence[str]) -> dict[str, Path]:
    """``["NAME=DIR", ...]`` -> ``{NAME: DIR}``, checking the folders exist and names are new."""
    scores: dict[str, Path] = {}
    for item in items:
        name, sep, directory = item.partition("=")
        if not sep or not name or not directory:
            raise InputError(f"--score expects NAME=DIR but received {item!r}")
        if name in BUILTIN_METHODS or name in scores or "/" in name:
            raise InputError(f"--score name {name!r} is taken or invalid; avoid {', '.join(BUILTIN_METHODS)} and '/'")
        if not Path(directory).is_dir():
            raise InputError(f"--score {name}: {directory} is not a folder; give a folder with one image per pair id")
        scores[name] = Path(directory)
    return scores


@dataclass
class _LoadedPair:
    content: torch.Tensor
    style: torch.Tensor
    content_seg: Segmentation | None
    style_seg: Segmentation | None
    notes: list[str]
    digest: str


def _load_pair(pair: Pair) -> _LoadedPair:
    """Photos and matched hand masks at the photos' sizes; a mask of another size is resized (noted)."""
    content, style = io.load_image(pair.content).tensor, io.load_image(pair.style).tensor
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        content_seg, style_seg, notes = load_mask_pair(
            pair.content_mask, pair.style_mask, tuple(content.shape[-2:]), tuple(style.shape[-2:])
        )
    notes = [str(w.message) for w in caught] + notes
    if pair.content.read_bytes() == pair.style.read_bytes():
        notes.append("the style photo is the content photo itself")
    digest = hashlib.sha256()
    for path in (pair.content, pair.style, pair.content_mask, pair.style_mask):
        digest.update(path.read_bytes() if path else b"-")
    return _LoadedPair(content, style, content_seg, style_seg, notes, digest.hexdigest())


def _run_photostyle(loaded: _LoadedPair, config: TransferConfig, masks: MaskMode, output: Path) -> dict[str, Any]:
    """Run the transfer, write ``output`` and return the cost record."""
    device = resolve_device(config.device)
    # the pipeline decides (segment_pair): the pair's hand masks if given, else automatic segments; or none
    hand = (loaded.content_seg, loaded.style_seg) if masks == "hand" else (None, None)
    config = replace(config, segmentation="none" if masks == "none" else "auto")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    result = stylise(loaded.content, loaded.style, *hand, config)
    total = time.perf_counter() - start
    io.save_image(result.image.cpu(), output, overwrite=True)
    look = fit_lut(loaded.content, result.image.cpu())  # how much of the look a global 33^3 LUT carries
    return {
        "lut_fit_ciede2000": fit_error(look, loaded.content, result.image.cpu()),
        "seconds": result.seconds,
        "total_seconds": total,
        "peak_rss_mb": peak_rss_mb(),
        "gpu_peak_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        "device": result.device,
        "masks": masks,
        "segments": result.segmentation.labels,
        "steps": result.steps,
        "loss": result.loss,
        "interrupted": result.interrupted,
        "network": result.network,
    }


def _score_cached(
    evaluator: Evaluator, image_path: Path, cache_path: Path, pair_digest: str, targets: Callable[[], PairTargets]
) -> tuple[dict[str, float], bool]:
    """Scores of one image, from ``cache_path`` when its key matches, else computed and stored.

    Returns:
        the scores, and whether they came from the cache.
    """
    key = {"version": METRICS_VERSION, "evaluator": evaluator.description, "image_sha256": sha256_file(image_path),
           "pair_sha256": pair_digest}
    if cache_path.is_file():
        try:
            cached = json.loads(cache_path.read_text())
            if cached.get("key") == key:
                return cached["metrics"], True
        except (OSError, ValueError):
            log.warning("ignoring unreadable metrics cache %s", cache_path)
    metrics = evaluator.score(io.load_image(image_path).tensor, targets())
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    io.write_atomically(cache_path, json.dumps({"key": key, "image": str(image_path), "metrics": metrics}, indent=1))
    return metrics, False


def _error(err: Exception) -> str:
    log.debug("benchmark step failed", exc_info=err)
    return f"{type(err).__name__}: {err}"


_MARKER = ".photostyle-bench"


def check_bench_folder(out: Path) -> Path:
    """Check, before any work, that ``out`` may be the benchmark's output folder.

    The folder is the benchmark's own (its files are replaced on the next run): it must be new,
    empty, or made by an earlier ``photostyle bench`` (it holds the marker file ``.photostyle-bench``
    or a ``report.json``).

    Raises:
        OutputError: ``out`` is a file, or a folder holding other files.
    """
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file; give a folder for the benchmark's outputs")
    if out.is_dir() and any(out.iterdir()) and not any((out / f).is_file() for f in (_MARKER, "report.json")):
        raise OutputError(f"--out {out} holds files that photostyle bench did not make; give a new or empty folder")
    return out


def make_bench_folder(out: Path, subfolders: Sequence[str] = ("photostyle", "baseline", "sheets")) -> None:
    """Create ``out`` with its ``subfolders`` and the marker file that lets a later run reuse it."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        for sub in subfolders:
            (out / sub).mkdir(parents=True, exist_ok=True)
        (out / _MARKER).touch()
    except OSError as err:
        raise OutputError(f"cannot create the benchmark folder {out} ({err.strerror}); choose another --out") from err


def run_benchmark(
    pairs_dir: str | Path,
    out_dir: str | Path,
    config: TransferConfig | None = None,
    *,
    ids: Sequence[str] | None = None,
    limit: int | None = None,
    masks: MaskMode = "hand",
    scores: Mapping[str, str | Path] | None = None,
    run: bool = True,
    evaluator: Evaluator | None = None,
    eval_size: int | None = None,
    eval_weights: str | None = "default",
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run photostyle on each pair, score it with the reference, the baseline and other methods, and report.

    Args:
        pairs_dir: DPST-layout folder (see the module docstring).
        out_dir: output folder, created if needed; existing outputs and scores are reused.
        config: transfer settings (default :class:`~photostyle.pipeline.TransferConfig`).
        ids: pair ids to run (default all), e.g. ``["1", "5"]``.
        limit: at most this many pairs.
        masks: what photostyle itself segments with: ``"hand"`` masks, ``"auto"`` (the pipeline's
            automatic segmentation) or ``"none"``. The metrics always use the hand masks.
        scores: other methods to score, name -> folder with one image per pair id
            (``N.png``, ``bestN.jpg``, ``inN.png``, ...).
        run: run the transfer; ``False`` scores the outputs already in ``out_dir/photostyle``.
        evaluator: the scorer; default ``Evaluator(eval_weights, eval_size=eval_size)`` on the transfer's device.
        eval_size: evaluation long side in px; ``None``: each photo's own (capped, see :class:`Evaluator`);
            ignored when ``evaluator`` is given.
        eval_weights: evaluation network weights (ignored when ``evaluator`` is given).
        progress: called with one line per pair.

    Returns:
        The report, also written to ``out_dir/report.json`` and ``out_dir/report.md``.

    Raises:
        InputError: bad folder, unknown ids, bad ``scores``.
    """
    config = config or TransferConfig()
    if masks not in ("hand", "auto", "none"):
        raise InputError(f"masks must be hand, auto or none but received {masks!r}")
    out = check_bench_folder(Path(out_dir))
    pairs = select_pairs(discover_pairs(pairs_dir), ids, limit)
    score_dirs = parse_scores([f"{k}={v}" for k, v in (scores or {}).items()])
    make_bench_folder(out)
    evaluator = evaluator or Evaluator(eval_weights, eval_size=eval_size, device=resolve_device(config.device))
    methods = [*BUILTIN_METHODS, *score_dirs]
    say = progress or (lambda line: None)

    started = time.perf_counter()
    records: list[dict[str, Any]] = []
    interrupted = False
    for pair in pairs:
        files = {k: str(v) if v else None for k, v in asdict(pair).items() if k != "id"}
        record: dict[str, Any] = {"id": pair.id, "files": files, "notes": [], "methods": {}}
        records.append(record)
        pair_start = time.perf_counter()
        try:
            loaded = _load_pair(pair)
        except Exception as err:  # one bad pair must not stop the benchmark: record it
            record["error"] = _error(err)
            say(f"pair {pair.id}: {record['error']}")
            continue
        record["notes"] = loaded.notes

        images: dict[str, Path | None] = {"photostyle": out / "photostyle" / f"{pair.id}.png",
                                          "reference": pair.reference}
        cost_path = out / "photostyle" / f"{pair.id}.json"
        if run:
            try:
                record["transfer"] = _run_photostyle(loaded, config, masks, images["photostyle"])
                io.write_atomically(cost_path, json.dumps(record["transfer"], indent=1, default=str))
                interrupted = record["transfer"]["interrupted"]
            except Exception as err:  # recorded; the other methods are still scored
                record["transfer"] = {"error": _error(err)}
                images["photostyle"] = None
        elif cost_path.is_file():
            record["transfer"] = json.loads(cost_path.read_text())

        try:
            images["baseline"] = _baseline(loaded, out / "baseline" / f"{pair.id}.png", overwrite=run)
        except Exception as err:
            record["methods"]["baseline"] = {"error": _error(err)}
            images["baseline"] = None
        for name, directory in score_dirs.items():
            images[name] = find_image(directory, pair.id)

        targets_cache: list[PairTargets] = []

        def targets(loaded: _LoadedPair = loaded) -> PairTargets:
            if not targets_cache:
                segs = (loaded.content_seg, loaded.style_seg)
                targets_cache.append(evaluator.targets(
                    loaded.content, loaded.style, *(s.masks if s is not None else None for s in segs)))
            return targets_cache[0]

        for name in methods:
            path = images.get(name)
            if name in record["methods"]:
                continue
            if path is None or not path.is_file():
                if name == "photostyle" and "error" in record.get("transfer", {}):
                    record["methods"][name] = {"error": record["transfer"]["error"]}
                continue
            try:
                values, cached = _score_cached(evaluator, path, out / "metrics" / name / f"{pair.id}.json",
                                               loaded.digest, targets)
                record["methods"][name] = {"image": str(path), "metrics": values, "cached": cached}
            except Exception as err:
                record["methods"][name] = {"image": str(path), "error": _error(err)}

        try:
            _write_sheet(loaded, images, methods, out / "sheets" / f"{pair.id}.jpg")
        except Exception as err:
            record["notes"].append(f"contact sheet failed: {_error(err)}")
        scored = sum("metrics" in m for m in record["methods"].values())
        failed = [n for n, m in record["methods"].items() if "error" in m]
        say(f"pair {pair.id}: {scored} method(s) scored in {time.perf_counter() - pair_start:.1f} s"
            + (f"; errors: {', '.join(failed)}" if failed else ""))
        if interrupted:
            break

    report = {
        "pairs_dir": str(pairs_dir),
        "out_dir": str(out),
        "run": run,
        "masks": masks,
        "methods": methods,
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()},
        "eval_size": evaluator.eval_size,
        "evaluator": evaluator.description,
        "metrics_version": METRICS_VERSION,
        "seconds": time.perf_counter() - started,
        "interrupted": interrupted,
        "pairs": records,
    }
    return write_report(report, out)


def _baseline(loaded: _LoadedPair, path: Path, overwrite: bool) -> Path:
    """Per-segment Lab mean/std transfer of the content with the hand masks, written to ``path``."""
    if path.is_file() and not overwrite:
        return path
    segs = (loaded.content_seg, loaded.style_seg)
    masks = [s.masks if s is not None else None for s in segs]
    image = segment_colour_transfer(loaded.content, loaded.style, *masks)
    io.save_image(image, path, overwrite=True)
    return path


def _write_sheet(loaded: _LoadedPair, images: Mapping[str, Path | None], methods: Sequence[str], path: Path) -> None:
    panels = [("content", loaded.content), ("style", loaded.style)]
    for name in methods:
        image = images.get(name)
        panels.append((name, io.load_image(image).tensor if image is not None and image.is_file() else None))
    io.save_image(contact_sheet(panels), path, overwrite=True, quality=90)
