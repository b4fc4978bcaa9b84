"""The web API through FastAPI's TestClient: upload, progress, result, limits, bad files and guards.

Also against a real uvicorn server (a chunked body cut short) and a real ``photostyle serve``
process (stopped with a signal during a job).
"""

from __future__ import annotations

import io
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
from fastapi.testclient import TestClient  # noqa: E402

from photostyle.masks import Segmentation  # noqa: E402
from photostyle.settings import PRESETS, from_preset  # noqa: E402
from photostyle.web import access, create_app, examples_dir  # noqa: E402
from photostyle.web import app as app_module  # noqa: E402
from photostyle.web import jobs as jobs_module  # noqa: E402

from helpers import random_rgb  # noqa: E402

TINY = dict(size=32, iterations=4, fine_iterations=2, weights=None, segmentation="none")
LOCAL = "http://127.0.0.1"  # TestClient's own "testserver" is not a name the server answers to


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
    with TestClient(create_app(max_upload_mb=0.05, max_pixels=10_000, config_overrides=TINY), base_url=LOCAL) as c:
        yield c


def jobs_left(client: TestClient) -> list[str]:
    """What is in the jobs directory: one folder per accepted job."""
    return sorted(p.name for p in client.app.state.runner.root.iterdir())


def wait(client: TestClient, job_id: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["state"] in ("done", "failed"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s: {job}")


def test_presets():
    assert from_preset("fast").size < from_preset("balanced").size <= from_preset("best").size
    assert from_preset("balanced").total_steps < from_preset("best").total_steps and from_preset("best").levels == 2
    assert from_preset("balanced", iterations=3).iterations == 3
    with pytest.raises(Exception, match="choose one of: fast, balanced, best"):
        from_preset("ultra")


def test_page_and_config(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="slider"' in page.text and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200
    config = client.get("/api/config").json()
    assert list(config["presets"]) == list(PRESETS)
    assert config["presets"]["best"] == {"size": 32, "steps": 6, "levels": 2}  # the overrides apply to every preset
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
    assert job["download_name"] == "mine-fast.png"  # a PNG stays a PNG
    assert job["preview"] is not None and client.get(job["preview"]).status_code == 200
    result = client.get(job["result"])
    assert result.status_code == 200
    assert Image.open(io.BytesIO(result.content)).size == (30, 20)  # full resolution of the content
    before = Image.open(io.BytesIO(client.get(job["before"]).content))
    assert before.size == (30, 20)
    assert client.get(f"/api/jobs/{job['id']}/files/..%2F..%2Fetc%2Fpasswd").status_code == 404


def test_segmentations_in_the_report_are_drawn(client, monkeypatch):
    """The segments a transfer used are saved as colour masks with a legend."""
    real = jobs_module.transfer

    def transfer(*args, **kwargs):
        result = real(*args, **kwargs)
        masks = torch.zeros(1, 2, 20, 30)
        masks[:, 0, :10], masks[:, 1, 10:] = 1, 1
        result.segmentation.content = result.segmentation.style = Segmentation(masks, ["sky", "building"])
        return result

    monkeypatch.setattr(jobs_module, "transfer", transfer)
    files = {"content": ("a.png", png(1), "image/png"), "style": ("b.png", png(2), "image/png")}
    job = wait(client, client.post("/api/jobs", files=files, data={"preset": "fast"}).json()["id"])
    assert job["state"] == "done", job["error"]
    labels = {s["label"]: s["colour"] for s in job["segments"]["labels"]}
    assert set(labels) == {"sky", "building"} and labels["sky"] != labels["building"]
    image = job["segments"]["images"][0]
    mask = np.asarray(Image.open(io.BytesIO(client.get(image["url"]).content)).convert("RGB"))
    assert tuple(mask[0, 0]) == tuple(labels["sky"]) and tuple(mask[-1, -1]) == tuple(labels["building"])


def test_unexpected_error_is_reported_not_500(client, monkeypatch):
    def transfer(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(jobs_module, "transfer", transfer)
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


def test_strength_is_where_the_page_starts_and_checked(client):
    """The optimisation runs at full strength; the submitted strength and colour are where the page's sliders start."""
    files = {"content": ("a.png", png(1), "image/png"), "style": ("b.png", png(2), "image/png")}
    data = {"preset": "fast", "strength": "0.3", "chroma": "0.5"}
    job = wait(client, client.post("/api/jobs", files=files, data=data).json()["id"])
    assert job["state"] == "done", job["error"]
    assert job["look"] == {"strength": 0.3, "chroma": 0.5}
    assert job["report"]["settings"]["strength"] == 1.0 and job["report"]["settings"]["chroma"] == 1.0
    for bad in ("1.5", "-0.1", "strong", "nan"):
        response = client.post("/api/jobs", files=files, data={"strength": bad})
        assert response.status_code == 400 and "strength must be a number in [0, 1]" in response.json()["error"]
        response = client.get(f"{job['download']}?chroma={bad}")
        assert response.status_code == 400 and "chroma must be a number in [0, 1]" in response.json()["error"]


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
    with TestClient(create_app(config_overrides=TINY), base_url=LOCAL) as client:
        assert client.get("/api/config").json()["examples"] == ["tiny.png"]
        data = {"content_example": "tiny.png", "style_example": "tiny.png", "preset": "fast"}
        job = wait(client, client.post("/api/jobs", data=data).json()["id"])
        assert job["state"] == "done" and job["names"] == {"content": "tiny.png", "style": "tiny.png"}
        assert client.get("/api/examples/tiny.png").content == (small / "tiny.png").read_bytes()
        assert client.get("/api/examples/..%2F..%2Fpyproject.toml").status_code == 404


@pytest.mark.skipif(examples_dir() is None, reason="the examples/ folder of the source checkout is not here")
def test_bundled_examples_are_found():
    assert {"rocket.jpg", "coffee.png"} <= {p.name for p in examples_dir().iterdir()}


def pair(content: bytes | None = None, name: str = "a.png") -> dict:
    """Multipart files: ``content`` (a random 30x20 PNG unless given) and a random style photo."""
    content = png(1) if content is None else content
    return {"content": (name, content, "image/png"), "style": ("b.png", png(2), "image/png")}


def test_security_headers_on_every_answer(client):
    for response in (client.get("/"), client.get("/static/app.js"), client.get("/api/config"),
                     client.get("/api/jobs/nope"), client.get("/", headers={"host": "evil.example"})):
        headers = response.headers
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert "default-src 'self'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["cross-origin-resource-policy"] == "same-origin"


def test_host_header_must_be_a_local_name(client):
    """DNS rebinding: a page of evil.example whose name now points at 127.0.0.1 sends Host: evil.example."""
    for host in ("evil.example", "evil.example:7860", "127.0.0.1.evil.example", "localhost@evil.example", ""):
        response = client.get("/api/config", headers={"host": host})
        assert response.status_code == 400 and "does not answer to the host name" in response.json()["error"], host
    response = client.post("/api/jobs", files=pair(), headers={"host": "evil.example"})
    assert response.status_code == 400 and jobs_left(client) == []
    for host in ("127.0.0.1:7860", "localhost:7860", "[::1]:7860", "LOCALHOST"):
        assert client.get("/api/config", headers={"host": host}).status_code == 200, host


def test_cross_origin_requests_are_refused(client):
    for origin in ("http://evil.example", "http://127.0.0.1:9999", "https://127.0.0.1", "null"):
        response = client.post("/api/jobs", files=pair(), headers={"origin": origin})
        assert response.status_code == 403 and "another site" in response.json()["error"], origin
        assert client.get("/api/config", headers={"origin": origin}).status_code == 403
    assert jobs_left(client) == []
    response = client.post("/api/jobs", files=pair(), data={"preset": "fast"}, headers={"origin": LOCAL})
    assert response.status_code == 202, response.text  # the page itself sends its own origin
    assert wait(client, response.json()["id"])["state"] == "done"


def test_token_required_when_reachable_from_other_machines():
    hosts, token, url = access("0.0.0.0", 7860, ["photos.lan"])
    assert token and url.endswith(f":7860/?token={token}") and {"photos.lan", "localhost"} <= hosts
    assert "evil.example" not in hosts
    assert "0.0.0.0" not in hosts  # browsers reach 0.0.0.0 as this machine: never a name to answer to
    assert access("127.0.0.1", 7860)[1:] == (None, "http://127.0.0.1:7860/")
    assert "10.1.2.3" in access("10.1.2.3", 80)[0] and access("10.1.2.3", 80)[1] != token  # a fresh token each start
    app = create_app(max_upload_mb=0.05, config_overrides=TINY, allowed_hosts=hosts, token=token)
    with TestClient(app, base_url="http://photos.lan:7860") as client:
        for attempt in ({}, {"params": {"token": "wrong"}}, {"headers": {"x-photostyle-token": "wrong"}},
                        {"headers": {"cookie": f"{app_module.TOKEN_COOKIE}=wrong"}}):
            response = client.get("/api/config", **attempt)
            assert response.status_code == 403 and "access token" in response.json()["error"], attempt
        response = client.post("/api/jobs", files=pair())
        assert response.status_code == 403 and jobs_left(client) == []
        assert client.get("/", params={"token": token}, headers={"host": "evil.example"}).status_code == 400
        assert client.get("/api/config", headers={"x-photostyle-token": token}).status_code == 200
        page = client.get("/", params={"token": token})  # the address printed at start
        assert page.status_code == 200 and "HttpOnly" in page.headers["set-cookie"]
        assert "SameSite=Strict" in page.headers["set-cookie"]
        assert client.get("/api/config").status_code == 200  # the page's own requests carry the cookie
        response = client.post("/api/jobs", files=pair(), data={"preset": "fast"})
        assert response.status_code == 202, response.text


def test_too_small_photo_refused_at_upload(client):
    response = client.post("/api/jobs", files=pair(solid_png((1, 1)), "dot.png"))
    assert response.status_code == 400
    error = response.json()["error"]
    assert "content photo dot.png" in error and "1x1" in error and "at least 16 px" in error and "/tmp" not in error
    response = client.post("/api/jobs", files=pair(solid_png((90, 12)), "strip.png"))
    assert response.status_code == 400 and "content photo strip.png" in response.json()["error"]
    assert jobs_left(client) == []


def test_rejected_requests_leave_nothing(tmp_path, monkeypatch):
    """No job folder and no temporary file stays after any refused upload."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    app = create_app(max_upload_mb=0.05, max_pixels=10_000, config_overrides=TINY)
    with TestClient(app, base_url=LOCAL) as client:
        (jobs,) = tmp_path.iterdir()
        assert client.app.state.runner.root == jobs
        mid = ("mid.png", png(5, (150, 150)), "image/png")  # ~67 kB: over the photo limit, under the body limit
        rejected = [
            (413, dict(files={"content": mid, "style": ("b.png", png(2), "image/png")})),
            (413, dict(files=pair(png(5, (400, 400)), "big.png"))),
            (400, dict(files=pair(b"\xff\xd8\xff\xe0 no jpeg", "broken.jpg"))),
            (400, dict(files=pair(solid_png((1, 1)), "dot.png"))),
            (400, dict(files=pair(solid_png((200, 100)), "wide.png"))),
            (400, dict(files=pair(), data={"strength": "2"})),
            (400, dict(files=pair(), data={"preset": "ultra"})),
            (400, dict(files={"content": ("a.png", png(1), "image/png")})),
            (403, dict(files=pair(), headers={"origin": "http://evil.example"})),
        ]
        for status, request in rejected:
            response = client.post("/api/jobs", **request)
            assert response.status_code == status, (request, response.text)
        assert "content photo mid.png" in client.post("/api/jobs", **rejected[0][1]).json()["error"]
        assert list(jobs.iterdir()) == [] and list(tmp_path.iterdir()) == [jobs]


@pytest.fixture
def served():
    """``(port, reads)``: the app (photo limit 0.05 MB) served by uvicorn on 127.0.0.1; ``reads[0]``: body bytes read."""
    uvicorn = pytest.importorskip("uvicorn")
    app, reads = create_app(max_upload_mb=0.05, config_overrides=TINY), [0]

    async def counting(scope, receive, send):
        async def counted():
            message = await receive()
            reads[0] += len(message.get("body", b""))
            return message
        await app(scope, counted, send)

    server = uvicorn.Server(uvicorn.Config(counting, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    yield server.servers[0].sockets[0].getsockname()[1], reads
    server.should_exit = True
    thread.join(timeout=10)


def _post_raw(port: int, headers: str, chunks, sent_limit: int) -> tuple[bytes, int]:
    """POST /api/jobs by hand, sending ``chunks`` until the server answers; the answer and the bytes sent."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 16)
        s.sendall(f"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}\r\n".encode())
        sent = 0
        for chunk in chunks:
            if select.select([s], [], [], 0)[0] or sent > sent_limit:
                break
            try:
                s.sendall(chunk)
            except OSError:  # the server closed the connection
                break
            sent += len(chunk)
        answer = b""
        while data := s.recv(1 << 16):
            answer += data
            if b"\r\n\r\n" in answer and answer.rstrip().endswith(b"}"):
                break
        return answer, sent


def test_chunked_body_over_the_limit_is_cut_while_streaming(served):
    port, reads = served
    boundary = "x" * 16
    block = os.urandom(1 << 16)
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"content\"; filename=\"huge.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode()

    def chunked(total: int):
        yield b"%x\r\n%s\r\n" % (len(head), head)
        for _ in range(total // len(block)):
            yield b"%x\r\n%s\r\n" % (len(block), block)

    total = 256 << 20
    answer, sent = _post_raw(port, f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                                   "Transfer-Encoding: chunked\r\n", chunked(total), total)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"the limit for two photos" in answer and b"nosniff" in answer
    max_body = 2 * int(0.05 * 2**20) + (1 << 16)
    assert reads[0] < max_body + (1 << 20)  # the app stopped reading at the limit (plus what uvicorn had buffered)
    assert sent < 32 << 20  # and the connection was cut: not 256 MB, only what the socket buffers took

    # A Content-Length over the limit is refused before any of the body is read.
    reads[0] = 0
    answer, sent = _post_raw(port, f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                                   f"Content-Length: {10**9}\r\n", iter([]), 0)
    assert answer.startswith(b"HTTP/1.1 413") and reads[0] == 0


SERVE = """
import functools, sys
import photostyle.web
from photostyle.cli import main
photostyle.web.create_app = functools.partial(photostyle.web.create_app, config_overrides={overrides!r})
sys.exit(main(["serve", "--port", "{port}"]))
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_stopping_the_server_during_a_job_exits_cleanly(sig):
    """``photostyle serve`` stopped while a job runs cancels it and exits, without "terminate called"."""
    httpx = pytest.importorskip("httpx")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    overrides = dict(TINY, size=48, iterations=100_000)  # runs until stopped
    script = SERVE.format(overrides=overrides, port=port)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(app_module.__file__).parents[2]))
    server = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(url + "/api/config")
                break
            except httpx.TransportError:
                assert server.poll() is None, server.communicate()[1].decode()
                time.sleep(0.1)
        response = httpx.post(url + "/api/jobs", files=pair(), data={"preset": "fast"})
        assert response.status_code == 202, response.text
        while time.monotonic() < deadline:
            job = httpx.get(f"{url}/api/jobs/{response.json()['id']}").json()
            if job["state"] == "running" and job["step"] >= 2:
                break
            time.sleep(0.05)
        assert job["state"] == "running", job
        sent = time.monotonic()
        server.send_signal(sig)
        _, stderr = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert time.monotonic() - sent < 15
    assert "terminate called" not in stderr.decode() and "Traceback" not in stderr.decode(), stderr.decode()
    assert server.returncode in (0, 128 + sig, -sig), (server.returncode, stderr.decode())  # 128 + n: "stopped by n"


# --- the page's own needs: formats, the look, cancel, progress, pairings, masks, previews ---------------------


def photo_bytes(fmt: str, size=(30, 20), seed: int = 1, exif: Image.Exif | None = None, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(random_rgb(size[1], size[0], seed, channels=len(mode)), mode)
    image.save(buffer, format=fmt, **({"exif": exif} if exif is not None else {}))
    return buffer.getvalue()


def load_rgb(data: bytes) -> torch.Tensor:
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0)


def test_download_keeps_png_full_size_and_carries_the_look(client):
    """The download is the faded result (blend_lab at full size), in the uploaded format, named and labelled with the values."""
    from photostyle.colour import blend_lab

    files = {"content": ("mine.png", png(1), "image/png"), "style": ("look.png", png(2, (24, 24)), "image/png")}
    job = wait(client, client.post("/api/jobs", files=files, data={"preset": "fast"}).json()["id"])
    assert job["state"] == "done", job["error"]
    assert job["output"]["format"] == "PNG" and job["output"]["ext"] == ".png" and job["output"]["quality"] is None
    full = client.get(job["download"])  # no values: full strength, the run's own file
    assert full.status_code == 200 and full.content == client.get(job["result"]).content
    assert 'filename="mine-fast.png"' in full.headers["content-disposition"]
    faded = client.get(f"{job['download']}?strength=0.5&chroma=0.4")
    assert faded.status_code == 200
    assert 'filename="mine-fast-strength50-colour40.png"' in faded.headers["content-disposition"]
    assert faded.headers["x-photostyle-look"].startswith("strength 50 %, colour 40 %; PNG")
    image = Image.open(io.BytesIO(faded.content))
    assert image.format == "PNG" and image.size == (30, 20)
    expected = blend_lab(load_rgb(png(1)), load_rgb(full.content), lightness=0.5, chroma=0.2)
    assert (load_rgb(faded.content) - expected).abs().max() < 2.5 / 255  # the full result is 8-bit here, the master 16
    zero = load_rgb(client.get(f"{job['download']}?strength=0").content)
    assert (zero - load_rgb(png(1))).abs().max() < 1.5 / 255  # strength 0: the photo as it was
    view = client.get(f"{job['view']}?strength=0.5&chroma=0.4")
    assert view.status_code == 200 and view.headers["content-type"] == "image/jpeg"


def test_jpeg_keeps_exif_orientation_and_states_its_quality(client):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: shown rotated a quarter turn
    exif[0x010F] = "PhotoCam"  # Make
    files = {"content": ("holiday.jpg", photo_bytes("JPEG", (30, 20), exif=exif), "image/jpeg"),
             "style": ("b.png", png(2), "image/png")}
    job = wait(client, client.post("/api/jobs", files=files, data={"preset": "fast"}).json()["id"])
    assert job["state"] == "done", job["error"]
    expected = {"format": "JPEG", "ext": ".jpg", "quality": 95, "width": 20, "height": 30, "exif": True}
    assert {k: job["output"][k] for k in expected} == expected
    for url in (job["download"], f"{job['download']}?strength=0.6"):
        response = client.get(url)
        image = Image.open(io.BytesIO(response.content))
        assert image.format == "JPEG" and image.size == (20, 30)  # upright, full size
        tags = image.getexif()
        assert tags.get(0x010F) == "PhotoCam" and tags.get(0x0112, 1) == 1
        assert "JPEG quality 95" in response.headers["x-photostyle-look"]
    assert job["download_name"] == "holiday-fast.jpg"


@pytest.mark.parametrize(("fmt", "mime", "ext"), [("TIFF", "image/tiff", ".tif"), ("WEBP", "image/webp", ".webp"),
                                                  ("GIF", "image/gif", ".png")])
def test_the_uploaded_format_is_kept(client, fmt, mime, ext):
    files = {"content": (f"scan.{fmt.lower()}", photo_bytes(fmt), mime), "style": ("b.png", png(2), "image/png")}
    job = wait(client, client.post("/api/jobs", files=files, data={"preset": "fast"}).json()["id"])
    assert job["state"] == "done", job["error"]
    assert job["output"]["ext"] == ext and job["download_name"] == f"scan-fast{ext}"
    image = Image.open(io.BytesIO(client.get(f"{job['download']}?strength=0.7").content))
    assert image.size == (30, 20) and image.format == {".tif": "TIFF", ".webp": "WEBP", ".png": "PNG"}[ext]


@pytest.fixture
def slow_client():
    """Jobs that run until cancelled (a huge number of steps on a small photo)."""
    app = create_app(max_upload_mb=0.05, max_pixels=10_000, config_overrides=dict(TINY, size=32, iterations=100_000))
    with TestClient(app, base_url=LOCAL) as c:
        yield c


def wait_for(client: TestClient, job_id: str, predicate, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if predicate(job):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} not as expected in {timeout} s: {job}")


def test_cancel_running_and_waiting_jobs(slow_client):
    client = slow_client
    first = client.post("/api/jobs", files=pair(), data={"preset": "fast"}).json()
    running = wait_for(client, first["id"], lambda j: j["phase"] == "optimising" and j["step"] >= 3)
    assert running["elapsed"] > 0 and running["remaining"] is not None and running["remaining"] > 0
    assert running["position"] is None
    second = client.post("/api/jobs", files=pair(), data={"preset": "fast"}).json()
    assert second["state"] == "queued" and (second["position"], second["ahead"]) == (1, 1)

    # A waiting job leaves the line at once, with its files.
    cancelled = client.delete(f"/api/jobs/{second['id']}").json()
    assert cancelled["state"] == "cancelled" and second["id"] not in jobs_left(client)
    # A running one stops at its next step, through the optimiser's interrupt path.
    assert client.post(f"/api/jobs/{first['id']}/cancel", headers={"origin": LOCAL}).status_code == 200
    started = time.monotonic()
    stopped = wait_for(client, first["id"], lambda j: j["state"] == "cancelled", timeout=15)
    assert time.monotonic() - started < 10 and stopped["result"] is None
    assert first["id"] not in jobs_left(client)
    # The worker is free again.
    third = client.post("/api/jobs", files=pair(), data={"preset": "fast"}).json()
    wait_for(client, third["id"], lambda j: j["state"] == "running")
    client.post(f"/api/jobs/{third['id']}/cancel")
    wait_for(client, third["id"], lambda j: j["state"] == "cancelled", timeout=15)
    # Another site cannot cancel (the page's beacon carries the page's own Origin).
    assert client.post(f"/api/jobs/{third['id']}/cancel", headers={"origin": "http://evil.example"}).status_code == 403
    assert client.post("/api/jobs/nope/cancel").status_code == 404


def test_a_job_whose_page_is_gone_is_cancelled():
    app = create_app(config_overrides=dict(TINY, iterations=100_000), abandon_after=0.5)
    with TestClient(app, base_url=LOCAL) as client:
        job_id = client.post("/api/jobs", files=pair(), data={"preset": "fast"}).json()["id"]
        runner = client.app.state.runner
        deadline = time.monotonic() + 20
        while runner.get(job_id, seen=False).state != "cancelled" and time.monotonic() < deadline:
            time.sleep(0.1)  # nobody asks about the job: its page was closed
        job = runner.get(job_id, seen=False)
        assert job.state == "cancelled" and "page was closed" in job.error


def test_waiting_time_is_estimated_from_the_last_job(slow_client):
    runner = slow_client.app.state.runner
    runner.history.append({"optimise": 10.0, "work": 4 * 32 ** 2, "rest": 2.0, "finishing": 1.0, "pixels": 600})
    first = slow_client.post("/api/jobs", files=pair(), data={"preset": "fast"}).json()
    wait_for(slow_client, first["id"], lambda j: j["phase"] == "optimising" and j["step"] >= 2)
    second = slow_client.post("/api/jobs", files=pair(), data={"preset": "fast"}).json()
    assert second["wait"] is not None and second["wait"] > 0  # the running job's rest plus nothing ahead
    third = slow_client.post("/api/jobs", files=pair(), data={"preset": "fast"}).json()
    assert third["ahead"] == 2 and third["wait"] > second["wait"]
    for job in (third, second, first):
        slow_client.post(f"/api/jobs/{job['id']}/cancel")


def halves(height: int, width: int, labels=("concept-0", "concept-1")) -> Segmentation:
    masks = torch.zeros(1, 2, height, width)
    masks[:, 0, : height // 2], masks[:, 1, height // 2 :] = 1, 1
    return Segmentation(masks, list(labels))


@pytest.fixture
def two_part_client(client, monkeypatch):
    """Automatic runs find two parts, top and bottom half; runs with masks use them."""
    real = jobs_module.transfer

    def transfer(*args, **kwargs):
        result = real(*args, **kwargs)
        if kwargs.get("content_mask") is None:
            result.segmentation.content, result.segmentation.style = halves(20, 30), halves(24, 24)
        return result

    monkeypatch.setattr(jobs_module, "transfer", transfer)
    return client


def mask_colours(path: Path) -> set[tuple[int, int, int]]:
    return {tuple(c) for c in np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3).tolist()}


def test_pairings_are_described_and_drawn(two_part_client):
    client = two_part_client
    top_blue = np.zeros((20, 30, 3), np.uint8)
    top_blue[:10] = (60, 110, 200)
    top_blue[10:] = (40, 140, 50)
    buffer = io.BytesIO()
    Image.fromarray(top_blue).save(buffer, format="PNG")
    files = {"content": ("a.png", buffer.getvalue(), "image/png"), "style": ("b.png", png(2, (24, 24)), "image/png")}
    job = wait(client, client.post("/api/jobs", files=files, data={"preset": "fast"}).json()["id"])
    assert job["state"] == "done", job["error"]
    first, second = job["segments"]["pairings"]
    assert first["content"]["phrase"] == "top (sky-like, blue)" and second["content"]["phrase"] == "bottom (green)"
    assert first["content"]["coverage"] == 0.5 and first["colour"] != second["colour"]
    assert job["segments"]["editable"]
    for entry in (first, second):
        for url in entry["thumbs"].values():
            assert client.get(url).headers["content-type"] == "image/jpeg"
    overlay = np.asarray(Image.open(io.BytesIO(client.get(job["segments"]["overlays"]["content"]).content)))
    assert overlay.shape[:2] == (20, 30)
    assert "concept" not in json_text(job["segments"]["pairings"], "phrase")


def json_text(entries: list, key: str) -> str:
    return " ".join(str(e[side][key]) for e in entries for side in ("content", "style"))


def test_rerun_with_a_dropped_or_merged_pairing(two_part_client):
    client = two_part_client
    job = wait(client, client.post("/api/jobs", files=pair(), data={"preset": "fast"}).json()["id"])
    assert job["state"] == "done", job["error"]
    runner = client.app.state.runner

    dropped = client.post(f"/api/jobs/{job['id']}/rerun", data={"groups": "[0, null]"})
    assert dropped.status_code == 202, dropped.text
    again = wait(client, dropped.json()["id"])
    assert again["state"] == "done", again["error"]
    assert (again["masks"], again["parent"]) == ("edited", job["id"])
    folder = runner.get(again["id"]).folder
    # Top: blue in both; bottom of the content: a colour the style mask lacks (the whole style photo's look).
    assert mask_colours(folder / "content_mask.png") == {(0, 0, 255), (0, 255, 0)}
    assert mask_colours(folder / "style_mask.png") == {(0, 0, 255), (40, 40, 40)}
    assert again["report"]["segments"] == ["blue", "green"]
    assert "green" in " ".join(again["report"]["segment_notes"])  # matched to the whole style photo

    merged = wait(client, client.post(f"/api/jobs/{job['id']}/rerun", data={"groups": "[0, 0]"}).json()["id"])
    assert merged["state"] == "done" and merged["report"]["segments"] == ["blue"]
    for bad in ("[0]", "[0, 5]", "nonsense", '{"a": 1}'):
        response = client.post(f"/api/jobs/{job['id']}/rerun", data={"groups": bad})
        assert response.status_code == 400 and "pairings cannot be used" in response.json()["error"], bad
    assert client.post(f"/api/jobs/{job['id']}/rerun", data={}).status_code == 400


def dpst_mask(size: tuple[int, int], split: str = "lr") -> bytes:
    width, height = size
    mask = np.zeros((height, width, 3), np.uint8)
    mask[..., 2] = 255  # blue
    if split == "lr":
        mask[:, width // 2 :] = (255, 0, 0)  # red
    buffer = io.BytesIO()
    Image.fromarray(mask).save(buffer, format="PNG")
    return buffer.getvalue()


def test_rerun_with_hand_masks(client):
    job = wait(client, client.post("/api/jobs", files=pair(), data={"preset": "fast"}).json()["id"])
    url = f"/api/jobs/{job['id']}/rerun"
    masks = {"content_mask": ("sky.png", dpst_mask((30, 20)), "image/png"),
             "style_mask": ("sky-style.png", dpst_mask((30, 20)), "image/png")}
    response = client.post(url, files=masks)
    assert response.status_code == 202, response.text
    again = wait(client, response.json()["id"])
    assert again["state"] == "done", again["error"]
    assert again["masks"] == "hand" and again["report"]["segments"] == ["blue", "red"]
    assert [p["content"]["where"] for p in again["segments"]["pairings"]] == ["left side", "right side"]

    noise = ("noise.png", png(7), "image/png")
    response = client.post(url, files={"content_mask": noise, "style_mask": masks["style_mask"]})
    error = response.json()["error"]
    assert response.status_code == 400 and "content mask noise.png" in error and "/tmp" not in error and "PIL" not in error
    tall = ("tall.png", dpst_mask((10, 40)), "image/png")  # drawn on another photo
    response = client.post(url, files={"content_mask": masks["content_mask"], "style_mask": tall})
    assert response.status_code == 400 and "style mask tall.png" in response.json()["error"]
    response = client.post(url, files={"content_mask": masks["content_mask"]})
    assert response.status_code == 400 and "both masks" in response.json()["error"]
    assert len(jobs_left(client)) == 2  # the refusals left nothing


def test_preview_of_a_photo_the_browser_cannot_show(client):
    deep = io.BytesIO()
    Image.fromarray((random_rgb(20, 30, 3)[..., 0].astype(np.uint16) * 257)).save(deep, format="TIFF")
    response = client.post("/api/preview", files={"photo": ("scan.tif", deep.getvalue(), "image/tiff")},
                           data={"kind": "style"})
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert response.headers["x-photo-size"] == "30x20"
    response = client.post("/api/preview", files={"photo": ("broken.jpg", b"\xff\xd8\xff\xe0 no jpeg", "image/jpeg")},
                           data={"kind": "content"})
    error = response.json()["error"]
    assert response.status_code == 400 and "content photo broken.jpg" in error and "/tmp" not in error
    assert jobs_left(client) == []


def test_errors_are_in_plain_words(client):
    for name, data in (("notes.txt", b"shopping list: eggs, milk"), ("empty.jpg", b"")):
        response = client.post("/api/jobs", files=pair(data, name))
        error = response.json()["error"]
        assert response.status_code == 400 and f"content photo {name}" in error, error
        assert "PIL" not in error and "/tmp" not in error and "Traceback" not in error


def test_favicon_and_a_page_without_inline_code(client):
    for url in ("/favicon.ico", "/static/favicon.svg"):
        response = client.get(url)
        assert response.status_code == 200 and response.headers["content-type"].startswith("image/svg+xml")
    page = client.get("/").text
    assert 'rel="icon"' in page
    # The policy is "default-src 'self'": scripts and styles only from files, never inline.
    assert "<style" not in page and " style=" not in page and " onclick" not in page.lower()
    scripts = page.count("<script")
    assert scripts == page.count('<script src="/static/')
    for name in ("app.js", "lab.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200


