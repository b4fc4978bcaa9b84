"""Many transfers in one process: a folder with one style photo, or a CSV of pairs.

:func:`run_batch` runs :func:`~photostyle.pipeline.transfer` job after job. The feature
network is loaded once (``features.get_encoder`` is cached per process); outputs that
already exist are skipped, so an interrupted batch resumes where it stopped; a file that
fails is recorded and the batch goes on. :class:`BatchJob` and :class:`BatchSummary` are
plain picklable dataclasses, so chunks of jobs can be handed to a distributed engine
(see ``docs/scaling.md``) and the summaries merged with :meth:`BatchSummary.merge`.
"""

from __future__ import annotations

import csv
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from .errors import InputError, OutputError, PhotostyleError
from .pipeline import TransferConfig, transfer

__all__ = [
    "PARTIAL_FAILURE_EXIT_CODE", "IMAGE_SUFFIXES", "OUTPUT_FORMATS", "BatchJob", "BatchSummary",
    "jobs_from_folder", "jobs_from_csv", "run_batch",
]

PARTIAL_FAILURE_EXIT_CODE = 7
"""Exit code of a batch in which some jobs failed and others succeeded (all failed: 2)."""

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp")
"""Files of a folder that are taken as photos (any case); other files are ignored."""

OUTPUT_FORMATS = ("jpg", "png", "tif")
"""Output formats of ``--format``. JPEG is written at quality 95 (alpha composited on white)."""

CSV_COLUMNS = ("content", "style", "output", "content_mask", "style_mask")
_POSITIONAL = {2: CSV_COLUMNS[:2], 3: CSV_COLUMNS[:3], 4: CSV_COLUMNS[:2] + CSV_COLUMNS[3:], 5: CSV_COLUMNS}


@dataclass(frozen=True)
class BatchJob:
    """One transfer: ``content`` gets the look of ``style`` and is written to ``output``.

    ``content_mask`` and ``style_mask`` are DPST colour masks, given together or not at all.
    """

    content: Path
    style: Path
    output: Path
    content_mask: Path | None = None
    style_mask: Path | None = None


@dataclass
class BatchSummary:
    """What :func:`run_batch` did.

    Attributes:
        done: outputs written.
        skipped: outputs that already existed and were left alone.
        failed: ``(job, message)`` for every job that raised a :class:`PhotostyleError`.
        seconds: wall time.
        interrupted: the user stopped the batch (Ctrl-C); the jobs not reached are in none of the lists.
    """

    done: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[BatchJob, str]] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        """0 when nothing failed, 2 when every job failed, else :data:`PARTIAL_FAILURE_EXIT_CODE`."""
        if not self.failed:
            return 0
        return InputError.exit_code if not (self.done or self.skipped) else PARTIAL_FAILURE_EXIT_CODE

    def failure_lines(self) -> list[str]:
        """One line per failed job: its content photo and the error's message."""
        return [m if m.startswith(str(job.content)) else f"{job.content}: {m}" for job, m in self.failed]

    @classmethod
    def merge(cls, summaries: Iterable[BatchSummary]) -> BatchSummary:
        """One summary of several chunks run apart (``seconds`` is the sum of their times)."""
        total = cls()
        for s in summaries:
            total.done += s.done
            total.skipped += s.skipped
            total.failed += s.failed
            total.seconds += s.seconds
            total.interrupted |= s.interrupted
        return total


def _image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder; give --input a folder of photos")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _check_format(fmt: str) -> str:
    if fmt not in OUTPUT_FORMATS:
        raise InputError(f"unknown output format {fmt!r}; choose one of: {', '.join(OUTPUT_FORMATS)}")
    return fmt


def _name_outputs(pairs: Sequence[tuple[Path, Path]], output_dir: Path, fmt: str, hint: str = "") -> list[Path]:
    """``<content stem>.<fmt>``; where content stems repeat, ``<content stem>-<style stem>.<fmt>``."""
    stems = Counter(content.stem for content, _ in pairs)
    names = [
        content.stem if stems[content.stem] == 1 else f"{content.stem}-{style.stem}" for content, style in pairs
    ]
    clash = next((name for name, count in Counter(names).items() if count > 1), None)
    if clash is not None:
        sources = [str(c) for (c, _), name in zip(pairs, names) if name == clash]
        raise InputError(f"{' and '.join(sources)} have the same name and style, so their outputs would "
                         f"overwrite each other; rename one{hint}")
    return [output_dir / f"{name}.{fmt}" for name in names]


def jobs_from_folder(input_dir: str | Path, style: str | Path, output_dir: str | Path, fmt: str = "jpg") -> list[BatchJob]:
    """One job per photo of ``input_dir`` (sorted by name, suffixes :data:`IMAGE_SUFFIXES`), all with ``style``.

    Outputs are ``output_dir/<stem>.<fmt>``.

    Raises:
        InputError: ``input_dir`` is not a folder or holds no photo, ``output_dir`` is ``input_dir``
            (results would replace the photos), two photos share a stem, or ``fmt`` is unknown.
    """
    input_dir, output_dir, style = Path(input_dir), Path(output_dir), Path(style)
    fmt = _check_format(fmt)
    files = [p for p in _image_files(input_dir) if p.resolve() != style.resolve()]
    if not files:
        raise InputError(f"{input_dir}: no photos ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    if output_dir.resolve() == input_dir.resolve():
        raise InputError(f"--output {output_dir} is the input folder; give another folder so no photo is replaced")
    outputs = _name_outputs([(f, style) for f in files], output_dir, fmt)
    return [BatchJob(f, style, out) for f, out in zip(files, outputs)]


def jobs_from_csv(csv_path: str | Path, output_dir: str | Path, fmt: str = "jpg") -> list[BatchJob]:
    """One job per row of ``content,style[,output][,content_mask,style_mask]``.

    A first row naming ``content`` and ``style`` is a header, and then the columns may come in any order.
    Photo and mask paths are relative to the CSV's folder; ``output`` is relative to
    ``output_dir`` and defaults to ``<content stem>.<fmt>`` (``<content stem>-<style stem>.<fmt>``
    when a content photo appears in several rows). Empty rows and rows starting with ``#`` are skipped.

    Raises:
        InputError: the file cannot be read, a row has fewer than two or more than five cells,
            only one of the two masks is given, or two rows would write the same output.
    """
    csv_path, output_dir = Path(csv_path), Path(output_dir)
    fmt = _check_format(fmt)
    try:
        rows = list(csv.reader(csv_path.read_text(encoding="utf-8-sig").splitlines()))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise InputError(f"{csv_path}: cannot read the pairs file ({err}); give a UTF-8 CSV") from err
    rows = [[c.strip() for c in r] for r in rows if any(c.strip() for c in r) and not r[0].lstrip().startswith("#")]
    header = None
    if rows and {"content", "style"} <= {c.lower() for c in rows[0]}:
        header, rows = [c.lower() for c in rows[0]], rows[1:]
        if set(header) - set(CSV_COLUMNS):
            raise InputError(f"{csv_path}: header {','.join(header)}; expected columns among {','.join(CSV_COLUMNS)}")
    if not rows:
        raise InputError(f"{csv_path}: no pairs; expected rows of content,style[,output][,content_mask,style_mask]")
    records = []
    for number, row in enumerate(rows, start=1):
        columns = header or _POSITIONAL.get(len(row))
        if columns is None or len(row) > len(columns):
            raise InputError(f"{csv_path}: pair {number} has {len(row)} cells; "
                             "expected content,style[,output][,content_mask,style_mask]")
        record = {name: value for name, value in zip(columns, row) if value}
        if "content" not in record or "style" not in record:
            raise InputError(f"{csv_path}: pair {number} lacks a content or style photo")
        if ("content_mask" in record) != ("style_mask" in record):
            raise InputError(f"{csv_path}: pair {number} gives only one mask; give content_mask and style_mask together")
        output = Path(record.get("output", "."))
        if output.is_absolute() or ".." in output.parts:
            raise InputError(f"{csv_path}: pair {number} writes {output}, outside --output; give a name relative to it without '..'")
        records.append(record)
    base = csv_path.parent
    pairs = [(base / r["content"], base / r["style"]) for r in records]
    unnamed = [pair for pair, r in zip(pairs, records) if "output" not in r]
    defaults = iter(_name_outputs(unnamed, output_dir, fmt, " or give an output column"))
    jobs = []
    for r, (content, style) in zip(records, pairs):
        masks = {k: base / r[k] for k in ("content_mask", "style_mask") if k in r}
        jobs.append(BatchJob(content, style, output_dir / r["output"] if "output" in r else next(defaults), **masks))
    output, count = Counter(job.output for job in jobs).most_common(1)[0]
    if count > 1:
        raise InputError(f"{csv_path}: {count} rows write {output}; give each row its own output")
    return jobs


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create the output folder {folder} ({err}); choose a writable --output") from err


def run_batch(
    jobs: Sequence[BatchJob],
    config: TransferConfig | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> BatchSummary:
    """Run ``jobs`` one after the other in this process.

    Args:
        jobs: what to do; output folders are created as needed.
        config: settings shared by all jobs.
        overwrite: recompute outputs that already exist (default: skip them).
        progress: show one tqdm bar over the jobs on stderr (the per-step bar stays hidden).

    Returns:
        :class:`BatchSummary`. A job that raises a :class:`PhotostyleError` (bad photo, bad mask,
        unwritable output, diverged) is recorded in ``failed`` and the batch goes on. On Ctrl-C
        the job in progress writes nothing (a previous result stays as it was; a missing one is
        redone by the next run) and the summary so far is returned with ``interrupted=True``.
    """
    summary = BatchSummary()
    start = time.perf_counter()
    bar = tqdm(jobs, disable=not progress, unit="photo", dynamic_ncols=True)
    for job in bar:
        bar.set_postfix_str(f"{job.content.name} | failed {len(summary.failed)}")
        if job.output.exists() and not overwrite:
            summary.skipped.append(job.output)
            continue
        try:
            _make_folder(job.output.parent)
            result = transfer(
                job.content, job.style, job.output, config,
                content_mask=job.content_mask, style_mask=job.style_mask, overwrite=overwrite, keep_partial=False,
            )
        except PhotostyleError as err:
            summary.failed.append((job, str(err)))
            continue
        except KeyboardInterrupt:
            summary.interrupted = True
            break
        if result.interrupted:  # Ctrl-C inside the optimisation: the output was left as it was
            summary.interrupted = True
            break
        summary.done.append(job.output)
    bar.close()
    summary.seconds = time.perf_counter() - start
    return summary
