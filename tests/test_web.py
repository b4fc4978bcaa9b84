"""The web API through FastAPI's TestClient: upload, progress, result, limits and bad files."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
from fastapi.testclient import TestClient  # noqa: E402

from photostyle.masks import Segmentation  # noqa: E402
from photostyle.presets import PRESETS, preset_config  # noqa: E402
from photostyle.web import app as app_module  # noqa: E402
from photostyle.web import create_app, examples_dir  # noqa: E402

from helpers import random_rgb  # noqa: E402

TINY = dict(size=32, iterations=4, weights=None, segmentation="none")


def png(seed: int, size=(30, 20), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(random_rgb(size[1], size[0], seed, channels=len(mode)), mode).save(buffer, format="PNG")
    return buffer.getvalue()


def solid_png(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (90, 120, 150)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def client():
    with TestClient(create_app(max_upload_mb=0.05, max_pixels=10_000, config_overrides=TINY)) as c:
        yield c


def wait(client: TestClient, job_id: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["state"] in ("done", "failed"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s: {job}")


def test_presets():
    assert preset_config("fast").size < preset_config("balanced").size < preset_config("best").size
    assert preset_config("best").levels == 2
    assert preset_config("balanced", iterations=3).iterations == 3
    with pytest.raises(Exception, match="choose one of: fast, balanced, best"):
        preset_config("ultra")


def test_page_and_config(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="slider"' in page.text and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200
    config = client.get("/api/config").json()
    assert list(config["presets"]) == list(PRESETS)
    assert config["presets"]["best"] == {"size": 32, "iterations": 4}  # the test overrides apply to every preset
    assert config["max_pixels"] == 10_000


def test_upload_run_and_fetch_result(client):
    files = {"content": ("mine.png", png(1), "image/png"), "style": ("look.png", png(2, (24, 24)), "image/png")}
    response = client.post("/api/jobs", files=files, data={"preset": "fast"})
    assert response.status_code == 202, response.text
    job = wait(client, response.json()["id"])
    assert job["state"] == "done", job["error"]
    assert (job["step"], job["total"]) == (4, 4)
    assert set(job["terms"]) >= {"content", "style", "photo", "total"}
    assert [entry["label"] for entry in job["segments"]["labels"]] == ["all"]
    assert [image["name"] for image in job["segments"]["images"]] == ["content_segments", "style_segments"]
    assert job["report"]["settings"]["size"] == 32
    assert job["download_name"] == "mine-fast.jpg"
    assert job["preview"] is not None and client.get(job["preview"]).status_code == 200
    result = client.get(job["result"])
    assert result.status_code == 200
    assert Image.open(io.BytesIO(result.content)).size == (30, 20)  # full resolution of the content
    before = Image.open(io.BytesIO(client.get(job["before"]).content))
    assert before.size == (30, 20)
    assert client.get(f"/api/jobs/{job['id']}/files/..%2F..%2Fetc%2Fpasswd").status_code == 404


def test_segmentations_in_the_report_are_drawn(client, monkeypatch):
    """The segments a transfer used are saved as colour masks with a legend."""
    real = app_module.transfer

    def transfer(*args, **kwargs):
        result = real(*args, **kwargs)
        masks = torch.zeros(1, 2, 20, 30)
        masks[:, 0, :10], masks[:, 1, 10:] = 1, 1
        result.report["segments"] = ["sky", "building"]
        result.content_segments = Segmentation(masks, ["sky", "building"])
        result.style_segments = None
        return result

    monkeypatch.setattr(app_module, "transfer", transfer)
    files = {"content": ("a.png", png(1), "image/png"), "style": ("b.png", png(2), "image/png")}
    job = wait(client, client.post("/api/jobs", files=files, data={"preset": "fast"}).json()["id"])
    assert job["state"] == "done", job["error"]
    labels = {s["label"]: s["colour"] for s in job["segments"]["labels"]}
    assert set(labels) == {"sky", "building"} and labels["sky"] != labels["building"]
    (image,) = job["segments"]["images"]
    mask = np.asarray(Image.open(io.BytesIO(client.get(image["url"]).content)).convert("RGB"))
    assert tuple(mask[0, 0]) == tuple(labels["sky"]) and tuple(mask[-1, -1]) == tuple(labels["building"])


def test_unexpected_error_is_reported_not_500(client, monkeypatch):
    def transfer(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(app_module, "transfer", transfer)
    files = {"content": ("a.png", png(1), "image/png"), "style": ("b.png", png(2), "image/png")}
    job = wait(client, client.post("/api/jobs", files=files).json()["id"])
    assert job["state"] == "failed" and "RuntimeError: boom" in job["error"]


def test_transparent_content_gives_png(client):
    files = {"content": ("a.png", png(3, mode="RGBA"), "image/png"), "style": ("b.png", png(4), "image/png")}
    job = wait(client, client.post("/api/jobs", files=files, data={"preset": "fast"}).json()["id"])
    assert job["state"] == "done" and job["result"].endswith("result.png")


def test_corrupt_upload_is_a_readable_400(client):
    files = {"content": ("holiday.jpg", b"\xff\xd8\xff\xe0 this is no jpeg", "image/jpeg"),
             "style": ("b.png", png(2), "image/png")}
    response = client.post("/api/jobs", files=files)
    assert response.status_code == 400
    error = response.json()["error"]
    assert "content photo holiday.jpg" in error and "/tmp" not in error


def test_limits(client):
    big = ("big.png", png(5, (400, 400)), "image/png")  # ~480 kB, over the 0.05 MB limit
    response = client.post("/api/jobs", files={"content": big, "style": ("b.png", png(2), "image/png")})
    assert response.status_code == 413
    assert "limit" in response.json()["error"]
    too_many_pixels = ("wide.png", solid_png((200, 100)), "image/png")  # 20 000 px, small file
    response = client.post("/api/jobs", files={"content": ("a.png", png(1), "image/png"), "style": too_many_pixels})
    assert response.status_code == 400
    assert "megapixels" in response.json()["error"] and "style photo wide.png" in response.json()["error"]


def test_strength_is_applied_and_checked(client):
    files = {"content": ("a.png", png(1), "image/png"), "style": ("b.png", png(2), "image/png")}
    job = wait(client, client.post("/api/jobs", files=files, data={"preset": "fast", "strength": "0.3"}).json()["id"])
    assert job["state"] == "done", job["error"]
    assert job["report"]["settings"]["strength"] == 0.3
    for bad in ("1.5", "-0.1", "strong", "nan"):
        response = client.post("/api/jobs", files=files, data={"strength": bad})
        assert response.status_code == 400 and "strength must be a number from 0 to 1" in response.json()["error"]


def test_missing_photo_and_unknown_preset(client):
    response = client.post("/api/jobs", files={"content": ("a.png", png(1), "image/png")})
    assert response.status_code == 400 and "no style photo" in response.json()["error"]
    files = {"content": ("a.png", png(1), "image/png"), "style": ("b.png", png(2), "image/png")}
    response = client.post("/api/jobs", files=files, data={"preset": "ultra"})
    assert response.status_code == 400 and "unknown preset" in response.json()["error"]
    assert client.get("/api/jobs/nope").status_code == 404


def test_examples(tmp_path, monkeypatch):
    small = tmp_path / "examples"
    small.mkdir()
    (small / "tiny.png").write_bytes(png(6))
    monkeypatch.setenv("PHOTOSTYLE_EXAMPLES", str(small))
    with TestClient(create_app(config_overrides=TINY)) as client:
        assert client.get("/api/config").json()["examples"] == ["tiny.png"]
        data = {"content_example": "tiny.png", "style_example": "tiny.png", "preset": "fast"}
        job = wait(client, client.post("/api/jobs", data=data).json()["id"])
        assert job["state"] == "done" and job["names"] == {"content": "tiny.png", "style": "tiny.png"}
        assert client.get("/api/examples/tiny.png").content == (small / "tiny.png").read_bytes()
        assert client.get("/api/examples/..%2F..%2Fpyproject.toml").status_code == 404


@pytest.mark.skipif(examples_dir() is None, reason="the examples/ folder of the source checkout is not here")
def test_bundled_examples_are_found():
    assert {"rocket.jpg", "coffee.png"} <= {p.name for p in examples_dir().iterdir()}

