"""Batch processing: folder and CSV jobs, skip/resume, failures, exit codes, model loaded once, dask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from photostyle import batch, features
from photostyle.batch import PARTIAL_FAILURE_EXIT_CODE, BatchJob, BatchSummary, jobs_from_csv, jobs_from_folder, run_batch
from photostyle.cli import main
from photostyle.errors import InputError
from photostyle.pipeline import TransferConfig

from helpers import write_photo

TINY = dict(size=32, iterations=2, weights=None, segmentation="none")
TINY_ARGS = ["--size", "32", "--iterations", "2", "--weights", "none", "-q", "--segmentation", "none"]
PHOTO_SIZE = (28, 20)  # width x height of every generated photo


@pytest.fixture
def folder(tmp_path):
    """``photos/`` with two good photos and one corrupt one, and a style photo beside it."""
    photos = tmp_path / "photos"
    photos.mkdir()
    write_photo(photos / "a.png", *PHOTO_SIZE, seed=1)
    write_photo(photos / "b.jpg", *PHOTO_SIZE, seed=2)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (photos / "notes.txt").write_text("not a photo")
    return tmp_path, write_photo(tmp_path / "style.png", *PHOTO_SIZE, seed=3)


@pytest.fixture
def counted(monkeypatch):
    """Counts transfers run and feature networks built during the test."""
    counts = {"transfer": 0, "encoder": 0}
    real_transfer, real_load = batch.transfer, features.load_encoder

    def transfer(*args, **kwargs):
        counts["transfer"] += 1
        return real_transfer(*args, **kwargs)

    def load_encoder(*args, **kwargs):
        counts["encoder"] += 1
        return real_load(*args, **kwargs)

    monkeypatch.setattr(batch, "transfer", transfer)
    monkeypatch.setattr(features, "load_encoder", load_encoder)
    features.get_encoder.cache_clear()
    yield counts
    features.get_encoder.cache_clear()


def test_folder_jobs_sorted_named_and_filtered(folder):
    root, style = folder
    jobs = jobs_from_folder(root / "photos", style, root / "out", "png")
    assert [j.content.name for j in jobs] == ["a.png", "b.jpg", "broken.jpg"]
    assert [j.output for j in jobs] == [root / "out" / n for n in ("a.png", "b.png", "broken.png")]
    assert all(j.style == style for j in jobs)


def test_folder_refuses_output_in_place_and_stem_clash(folder):
    root, style = folder
    with pytest.raises(InputError, match="input folder"):
        jobs_from_folder(root / "photos", style, root / "photos")
    write_photo(root / "photos" / "a.jpg", *PHOTO_SIZE, seed=4)
    with pytest.raises(InputError, match="a.jpg and .*a.png have the same name"):
        jobs_from_folder(root / "photos", style, root / "out")
    with pytest.raises(InputError, match="choose one of: jpg, png, tif"):
        jobs_from_folder(root / "photos", style, root / "out", "gif")


def test_cli_batch_reports_failure_and_resumes(folder, counted, capsys):
    root, style = folder
    out = root / "out"
    argv = ["batch", "--style", str(style), "--input", str(root / "photos"), "--output", str(out), *TINY_ARGS]

    assert main(argv) == PARTIAL_FAILURE_EXIT_CODE
    err = capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg", "b.jpg"]
    failures = [line for line in err.splitlines() if "broken.jpg" in line]
    assert len(failures) == 1 and "cannot decode" in failures[0]
    assert "2 done, 0 skipped, 1 failed" in err
    assert counted == {"transfer": 3, "encoder": 1}  # the network was built once for the whole batch

    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main(argv) == PARTIAL_FAILURE_EXIT_CODE  # only the broken one is tried again
    assert counted["transfer"] == 4
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes
    assert "0 done, 2 skipped, 1 failed" in capsys.readouterr().err

    assert main([*argv, "--overwrite"]) == PARTIAL_FAILURE_EXIT_CODE
    assert counted == {"transfer": 7, "encoder": 1}
    assert all(p.stat().st_mtime_ns >= mtimes[p.name] for p in out.iterdir())


def test_all_failed_exits_2_and_empty_folder_is_an_input_error(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "x.png").write_bytes(b"garbage")
    style = write_photo(tmp_path / "style.png", *PHOTO_SIZE, seed=3)
    argv = ["batch", "--style", str(style), "--input", str(photos), "--output", str(tmp_path / "out"), *TINY_ARGS]
    assert main(argv) == 2
    (photos / "x.png").unlink()
    assert main(argv) == 2
    assert "no photos" in capsys.readouterr().err


def test_csv_pairs_relative_paths_header_and_outputs(tmp_path):
    for name, seed in (("c1.png", 1), ("c2.png", 2), ("s1.png", 3), ("s2.png", 4)):
        write_photo(tmp_path / name, *PHOTO_SIZE, seed=seed)
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("c1.png,s1.png\nc1.png,s2.png\n\n# a comment\nc2.png,s1.png,special.tif\n")
    jobs = jobs_from_csv(pairs, tmp_path / "out", "png")
    assert [(j.content.name, j.style.name, j.output.name) for j in jobs] == [
        ("c1.png", "s1.png", "c1-s1.png"), ("c1.png", "s2.png", "c1-s2.png"), ("c2.png", "s1.png", "special.tif")]
    assert all(j.content.parent == tmp_path for j in jobs)

    pairs.write_text("style,content,style_mask,content_mask\ns1.png,c1.png,sm.png,cm.png\n")
    (job,) = jobs_from_csv(pairs, tmp_path / "out")
    assert (job.content.name, job.style.name, job.content_mask.name, job.style_mask.name, job.output.name) == (
        "c1.png", "s1.png", "cm.png", "sm.png", "c1.jpg")

    pairs.write_text("c1.png,s1.png,,cm.png\n")
    with pytest.raises(InputError, match="pair 1 gives only one mask"):
        jobs_from_csv(pairs, tmp_path / "out")
    pairs.write_text("c1.png,s1.png,x.png\nc2.png,s2.png,x.png\n")
    with pytest.raises(InputError, match="2 rows write"):
        jobs_from_csv(pairs, tmp_path / "out")


def test_run_batch_csv_with_masks(tmp_path):
    content = write_photo(tmp_path / "c.png", *PHOTO_SIZE, seed=1)
    style = write_photo(tmp_path / "s.png", *PHOTO_SIZE, seed=2)
    mask = np.zeros((20, 28, 3), np.uint8)
    mask[:, :14] = (0, 0, 255)  # DPST blue
    mask[:, 14:] = (255, 255, 255)
    Image.fromarray(mask).save(tmp_path / "m.png")
    jobs = [BatchJob(content, style, tmp_path / "out" / "c.png", tmp_path / "m.png", tmp_path / "m.png"),
            BatchJob(content, tmp_path / "missing.png", tmp_path / "out" / "d.png")]
    summary = run_batch(jobs, TransferConfig(**TINY), progress=False)
    assert summary.done == [tmp_path / "out" / "c.png"]
    assert [job for job, _ in summary.failed] == [jobs[1]]
    assert "missing.png: no such file" in summary.failed[0][1]
    assert summary.exit_code == PARTIAL_FAILURE_EXIT_CODE
    assert Image.open(summary.done[0]).size == (28, 20)


def test_summary_merge_and_exit_codes():
    job = BatchJob(Path("c"), Path("s"), Path("o"))
    assert BatchSummary().exit_code == 0
    assert BatchSummary(failed=[(job, "x")]).exit_code == 2
    merged = BatchSummary.merge([BatchSummary(done=[job.output], seconds=1.0), BatchSummary(failed=[(job, "x")], seconds=2.0)])
    assert (merged.done, merged.exit_code, merged.seconds) == ([job.output], PARTIAL_FAILURE_EXIT_CODE, 3.0)


def test_dask_bag_runs_chunks(folder):
    """The path of docs/scaling.md: chunks of jobs on a dask scheduler, summaries merged."""
    db = pytest.importorskip("dask.bag")
    root, style = folder
    jobs = jobs_from_folder(root / "photos", style, root / "out")[:2]
    config = TransferConfig(**TINY)
    bag = db.from_sequence(jobs, npartitions=2)
    summaries = bag.map_partitions(lambda chunk: [run_batch(list(chunk), config, progress=False)])
    summary = BatchSummary.merge(summaries.compute(scheduler="threads", num_workers=2))
    assert sorted(summary.done) == [root / "out" / "a.jpg", root / "out" / "b.jpg"]
    assert summary.exit_code == 0
