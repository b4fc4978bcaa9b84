"""End to end in headless Chromium: pick two photos on the page, run, see the result.

Needs Debian's ``chromium`` (``apt-get install -y chromium``) and the ``playwright`` Python
package, which drives the system browser (``executable_path``; no browser download).
Skipped when either is missing. Leaves a screenshot in ``/tmp/photostyle-web.png``.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api")

from photostyle.web import create_app, examples_dir  # noqa: E402

from helpers import random_rgb  # noqa: E402

CHROMIUM = shutil.which("chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT = Path("/tmp/photostyle-web.png")

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")


@pytest.fixture
def server():
    """The app with tiny settings, served by uvicorn on a free 127.0.0.1 port in a thread."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(config_overrides=dict(size=48, iterations=6, weights=None, segmentation="none"))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def _photo(path: Path, example: str, seed: int) -> Path:
    """A small copy of a bundled example photo (random pixels without the examples folder)."""
    folder = examples_dir()
    if folder is not None and (folder / example).is_file():
        image = Image.open(folder / example).convert("RGB")
        image.thumbnail((240, 240))
    else:
        image = Image.fromarray(random_rgb(100, 150, seed))
    image.save(path)
    return path


def test_page_runs_a_transfer(server, tmp_path):
    content = _photo(tmp_path / "rocket.png", "rocket.jpg", 1)
    style = _photo(tmp_path / "coffee.png", "coffee.png", 2)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": 1280, "height": 1000},
        )
        try:
            page = context.new_page()
            page.goto(server)
            page.wait_for_selector("#preset option[value=fast]", state="attached")

            page.set_input_files("#content-drop input[type=file]", str(broken))
            page.set_input_files("#style-drop input[type=file]", str(style))
            page.click("#start")
            page.wait_for_selector("#message:not([hidden])")
            assert "content photo broken.jpg" in page.text_content("#message")
            assert "cannot decode" in page.text_content("#message")

            page.set_input_files("#content-drop input[type=file]", str(content))
            assert page.is_hidden("#message")
            page.select_option("#preset", "fast")
            page.click("#start")
            page.wait_for_selector("#result:not([hidden])", timeout=60_000)

            assert page.text_content("#step") == "done"
            size = page.evaluate("() => { const i = document.querySelector('#after');"
                                 " return [i.complete, i.naturalWidth, i.naturalHeight]; }")
            assert size == [True, *Image.open(content).size]
            assert page.get_attribute("#download", "download") == "rocket-fast.jpg"
            assert "all" in page.text_content("#labels")
            page.fill("#slider", "30")
            page.dispatch_event("#slider", "input")
            assert "70%" in page.evaluate("() => document.querySelector('#before').style.clipPath")
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            context.close()
    assert SCREENSHOT.stat().st_size > 0
