"""The web page in headless Chromium: what a photographer does, from two photos to a downloaded result.

Needs Debian's ``chromium`` (``apt-get install -y chromium``) and the ``playwright`` Python
package, which drives the system browser (``executable_path``; no browser download). Skipped
when either is missing. Screenshots (empty page, a job running, the result, a phone) go to
``$PHOTOSTYLE_SCREENSHOTS`` when set, else to the test's temporary folder.

The server runs in this process with tiny settings (48 px working size, a few steps, random
VGG weights), so a whole run takes seconds.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api")

from photostyle import io as photostyle_io  # noqa: E402
from photostyle.masks import Segmentation  # noqa: E402
from photostyle.web import create_app, examples_dir  # noqa: E402
from photostyle.web import jobs as jobs_module  # noqa: E402

from helpers import random_rgb  # noqa: E402

CHROMIUM = shutil.which("chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TINY = dict(size=48, iterations=6, weights=None)

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = Path(os.environ.get("PHOTOSTYLE_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def serve(overrides: dict):
    """The app served by uvicorn on a free 127.0.0.1 port in a thread: ``(url, stop)``."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(config_overrides=overrides), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"

    def stop():
        server.should_exit = True
        thread.join(timeout=30)

    return f"http://127.0.0.1:{port}", stop


@pytest.fixture
def server():
    """Automatic segments (co-segmentation on random VGG features): real pairings, tiny sizes."""
    url, stop = serve(dict(TINY, segmentation="auto"))
    yield url
    stop()


@pytest.fixture
def slow_server():
    """Jobs that run until cancelled."""
    url, stop = serve(dict(TINY, iterations=100_000, segmentation="none"))
    yield url
    stop()


def _photo(path: Path, example: str, seed: int) -> Path:
    """A small copy of a bundled example photo (random pixels without the examples folder)."""
    folder = examples_dir()
    if folder is not None and (folder / example).is_file():
        image = Image.open(folder / example).convert("RGB")
        image.thumbnail((480, 480))
    else:
        image = Image.fromarray(random_rgb(100, 150, seed))
    image.save(path)
    return path


@pytest.fixture
def photos(tmp_path) -> tuple[Path, Path]:
    return _photo(tmp_path / "rocket.png", "rocket.jpg", 1), _photo(tmp_path / "coffee.png", "coffee.png", 2)


@pytest.fixture
def browser(tmp_path):
    """``open_page(width, height, **options)``: a fresh page; console errors and failed requests are collected."""
    with sync_api.sync_playwright() as p:
        browsers = []

        def open_page(width: int = 1440, height: int = 1000, **options):
            context = p.chromium.launch_persistent_context(
                str(tmp_path / f"profile-{len(browsers)}"), executable_path=CHROMIUM, headless=True, args=FLAGS,
                viewport={"width": width, "height": height}, accept_downloads=True, **options,
            )
            browsers.append(context)
            page = context.new_page()
            page.problems = []
            page.on("console", lambda m: m.type == "error" and not m.text.startswith("Failed to load resource")
                    and page.problems.append(f"console: {m.text}"))  # failed requests: see "response"
            page.on("pageerror", lambda e: page.problems.append(f"page error: {e}"))
            page.on("response", lambda r: r.status >= 400 and "/api/preview" not in r.url
                    and page.problems.append(f"{r.status} {r.url}"))
            return page

        yield open_page
        for context in browsers:
            context.close()


def choose_and_start(page, content: Path, style: Path, preset: str = "fast") -> None:
    page.set_input_files("#content-file", str(content))
    page.set_input_files("#style-file", str(style))
    page.wait_for_function("() => !document.querySelector('#start').disabled")
    page.select_option("#preset", preset)
    page.click("#start")


def wait_for_result(page, timeout: float = 120_000) -> None:
    page.wait_for_selector("#result:not([hidden])", timeout=timeout)
    page.wait_for_function("() => document.querySelector('#after-canvas').dataset.strength !== undefined")


def canvas_pixels(page, selector: str = "#after-canvas") -> np.ndarray:
    url = page.evaluate(f"() => document.querySelector('{selector}').toDataURL('image/png')")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"), dtype=np.float32)


def image_pixels(page, selector: str) -> np.ndarray:
    """An <img> drawn at its natural size, as the page's canvas sees it (once it has loaded)."""
    page.wait_for_function(f"() => {{ const i = document.querySelector('{selector}'); return i.complete && i.naturalWidth > 0; }}")
    url = page.evaluate(f"""() => {{ const i = document.querySelector('{selector}');
        const c = document.createElement('canvas'); c.width = i.naturalWidth; c.height = i.naturalHeight;
        c.getContext('2d').drawImage(i, 0, 0); return c.toDataURL('image/png'); }}""")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"), dtype=np.float32)


def set_range(page, selector: str, value: int) -> None:
    page.fill(selector, str(value))  # fires input
    page.dispatch_event(selector, "input")


def no_sideways_scroll(page) -> None:
    width = page.evaluate("() => [document.documentElement.scrollWidth, innerWidth]")
    assert width[0] <= width[1], f"the page scrolls sideways: {width[0]} px wide in a {width[1]} px window"


def api(url: str, method: str = "GET") -> dict:
    request = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def test_two_photos_to_a_downloaded_result(server, photos, browser, shots, tmp_path):
    """Visible steps, a refused file named at once, the run, the result in view, compare, live look, download."""
    content, style = photos
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    page = browser(1920, 1080)
    page.goto(server)
    page.wait_for_selector("#preset option[value=fast]", state="attached")
    assert page.get_attribute("#step-1", "aria-current") == "step"
    no_sideways_scroll(page)
    assert page.is_hidden("#progress") and page.is_hidden("#result")  # nothing shows before anything starts
    page.screenshot(path=str(shots / "empty.png"), full_page=True)

    # A file the browser cannot show is checked at once and refused in plain words.
    page.set_input_files("#content-file", str(broken))
    page.wait_for_selector("#content-drop .warn:not([hidden])")
    warning = page.text_content("#content-drop .warn")
    assert "content photo broken.jpg" in warning and "cannot decode" in warning and "PIL" not in warning
    assert page.is_disabled("#start")

    choose_and_start(page, content, style)
    assert page.is_hidden("#content-drop .warn")
    assert "{} × {} px".format(*Image.open(content).size) in page.text_content("#content-info")
    page.wait_for_selector("#progress:not([hidden])")
    wait_for_result(page)

    # The result is in view, at its real size (a small photo is not blown up).
    page.wait_for_function("() => { const r = document.querySelector('#result-title').getBoundingClientRect();"
                           " return r.top >= -2 && r.top < innerHeight / 2; }")
    assert page.get_attribute("#step-3", "aria-current") == "step"
    assert page.is_hidden("#progress")
    width, height = Image.open(content).size
    shown = page.evaluate("() => { const c = document.querySelector('#after-canvas'); const r = c.getBoundingClientRect();"
                          " return [c.width, c.height, r.width, r.height]; }")
    assert shown[:2] == [width, height] and shown[2] <= width + 0.5
    assert "shown at its real size" in page.text_content("#zoom-note")
    for tag in (".tag-before", ".tag-after", ".handle .knob"):
        assert page.is_visible(tag), tag
    assert page.text_content(".tag-before") == "Before" and page.text_content(".tag-after") == "After"

    # The divider moves with the keyboard and by dragging.
    page.focus("#slider")
    for _ in range(5):
        page.keyboard.press("ArrowLeft")
    assert page.evaluate("() => document.querySelector('#compare').style.getPropertyValue('--split')") == "45%"
    box = page.locator("#compare").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.8, box["y"] + box["height"] / 2, steps=4)
    page.mouse.up()
    assert abs(int(page.input_value("#slider")) - 80) <= 1

    # 100 %: one photo pixel per screen pixel; side by side: content, style, result.
    page.click("[data-zoom=full]")
    css_width = page.evaluate("() => document.querySelector('#after-canvas').getBoundingClientRect().width")
    assert abs(css_width - width) < 1  # device pixel ratio 1 here
    page.click("[data-zoom=fit]")
    page.click("[data-view=side]")
    for selector in ("#side-content", "#side-style", "#side-result"):
        assert page.is_visible(selector), selector
    assert page.evaluate("() => document.querySelector('#side-style').naturalWidth") > 0
    page.click("[data-view=compare]")

    # Strength and colour change the finished photo at once, in the page.
    before = image_pixels(page, "#before")
    set_range(page, "#strength", 0)
    page.wait_for_function("() => document.querySelector('#after-canvas').dataset.strength === '0'")
    assert np.abs(canvas_pixels(page) - before).mean() < 1.0  # strength 0: the photo as it was
    set_range(page, "#strength", 50)
    set_range(page, "#chroma", 60)
    page.wait_for_function("() => document.querySelector('#after-canvas').dataset.chroma === '0.6'")
    live = canvas_pixels(page)
    assert np.abs(live - before).mean() > 1.0
    note = page.text_content("#download-note")
    assert "strength 50 %, colour 60 %" in note and "PNG as uploaded" in note and f"{width} × {height} px" in note
    assert page.text_content("#download") == "Download PNG"

    # The download carries those values, at full size, in the uploaded format.
    with page.expect_download() as info:
        page.click("#download")
    download = info.value
    assert download.suggested_filename == "rocket-fast-strength50-colour60.png"
    saved = Image.open(download.path())
    assert saved.format == "PNG" and saved.size == (width, height)
    # rocket.jpg is Adobe RGB: the download keeps that profile; read in sRGB it is what the page showed.
    assert (saved.info.get("icc_profile") is not None) == (Image.open(content).info.get("icc_profile") is not None)
    srgb = photostyle_io.load_image(download.path()).tensor[0].permute(1, 2, 0).numpy() * 255
    difference = np.abs(srgb - live)
    assert difference.mean() < 0.6 and difference.max() <= 3, (difference.mean(), difference.max())

    # The pairings are in words and pictures, never "concept-0".
    pairings = page.locator("#pairings .pairing")
    assert pairings.count() >= 1
    text = page.text_content("#pairings")
    assert "concept" not in text and "took its look from" in text and "Your photo" in text
    page.click("#look-reset")
    page.wait_for_function("() => document.querySelector('#after-canvas').dataset.strength === '1'")
    set_range(page, "#slider", 50)
    page.evaluate("() => scrollTo(0, document.querySelector('#result').offsetTop - 10)")
    page.screenshot(path=str(shots / "result.png"), full_page=True)
    no_sideways_scroll(page)
    assert page.problems == []  # no 404 (favicon included), no script or policy error


def test_cancel_and_closing_the_tab_stop_the_job(slow_server, photos, browser, shots):
    content, style = photos
    page = browser(1440, 1000)
    page.goto(slow_server)
    page.wait_for_selector("#preset option[value=fast]", state="attached")
    choose_and_start(page, content, style)
    page.wait_for_selector("#preview:not([hidden])", timeout=60_000)
    page.wait_for_function("() => /left/.test(document.querySelector('#times').textContent)")
    status = page.text_content("#status")
    assert status.startswith("Making it: step ") and "elapsed" in page.text_content("#times")
    assert page.is_enabled("#cancel")
    page.screenshot(path=str(shots / "running.png"), full_page=True)

    # A second photo waits in line, told its place; cancelling it takes it out of the line.
    other = browser(1280, 900)
    other.goto(slow_server)
    other.wait_for_selector("#preset option[value=fast]", state="attached")
    choose_and_start(other, content, style)
    other.wait_for_function("() => /Waiting in line: 1 photo ahead of yours/.test(document.querySelector('#status').textContent)")
    assert "waiting" in other.text_content("#times")
    waiting_id = other.evaluate("() => state.following")
    other.click("#cancel")
    other.wait_for_selector("#message:not([hidden])")
    assert api(f"{slow_server}/api/jobs/{waiting_id}")["state"] == "cancelled"

    job_id = page.evaluate("() => state.following")
    page.click("#cancel")
    page.wait_for_selector("#message:not([hidden])", timeout=20_000)
    assert "Cancelled" in page.text_content("#message") and page.is_hidden("#progress")
    assert api(f"{slow_server}/api/jobs/{job_id}")["state"] == "cancelled"
    assert page.is_enabled("#start")

    # Closing the tab cancels too (a beacon on pagehide).
    page.click("#start")
    page.wait_for_function("() => /step/.test(document.querySelector('#status').textContent)", timeout=60_000)
    job_id = page.evaluate("() => state.following")
    page.close()
    deadline = time.monotonic() + 20
    while (job := api(f"{slow_server}/api/jobs/{job_id}"))["state"] != "cancelled" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert job["state"] == "cancelled"


def test_phone_layout(server, photos, browser, shots):
    content, style = photos
    page = browser(390, 844, device_scale_factor=2, is_mobile=True, has_touch=True)
    page.goto(server)
    page.wait_for_selector("#preset option[value=fast]", state="attached")
    no_sideways_scroll(page)
    choose_and_start(page, content, style)
    page.wait_for_selector("#progress:not([hidden])")
    no_sideways_scroll(page)
    wait_for_result(page)
    no_sideways_scroll(page)
    canvas = page.locator("#after-canvas").bounding_box()
    assert canvas["x"] >= 0 and canvas["x"] + canvas["width"] <= 390
    page.click("[data-view=side]")
    no_sideways_scroll(page)
    page.click("[data-view=compare]")
    page.screenshot(path=str(shots / "phone.png"), full_page=True)
    assert page.problems == []


def test_keyboard_order_labels_and_alt_text(server, browser):
    page = browser(1280, 900)
    page.goto(server)
    page.wait_for_selector("#preset option[value=fast]", state="attached")
    order = []
    for _ in range(8):
        page.keyboard.press("Tab")
        order.append(page.evaluate("() => document.activeElement.id || document.activeElement.className"))
    relevant = [name for name in order if name in ("content-file", "style-file", "example", "preset")]
    assert relevant[:5] == ["content-file", "example", "style-file", "example", "preset"], order
    unnamed = page.evaluate("""() => [...document.querySelectorAll('input, select, button, a[href], canvas')]
        .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                       && !e.getAttribute('aria-labelledby') && !e.textContent.trim())
        .map((e) => e.id || e.outerHTML.slice(0, 60))""")
    assert unnamed == []
    assert page.evaluate("() => [...document.querySelectorAll('img')].filter((i) => !i.hasAttribute('alt')).length") == 0
    assert page.evaluate("() => document.documentElement.lang") == "en"


def test_drop_a_pairing_and_run_again(photos, browser, monkeypatch):
    """Two parts found (top, bottom); dropping one re-runs with edited masks; hand masks re-run too."""
    real = jobs_module.transfer

    def transfer(*args, **kwargs):
        result = real(*args, **kwargs)
        if kwargs.get("content_mask") is None:
            height, width = result.image.shape[-2:]
            masks = torch.zeros(1, 2, height, width)
            masks[:, 0, : height // 2], masks[:, 1, height // 2 :] = 1, 1
            result.segmentation.content = result.segmentation.style = Segmentation(masks, ["concept-0", "concept-1"])
        return result

    monkeypatch.setattr(jobs_module, "transfer", transfer)
    url, stop = serve(dict(TINY, segmentation="none"))
    try:
        content, style = photos
        page = browser(1280, 1000)
        page.goto(url)
        page.wait_for_selector("#preset option[value=fast]", state="attached")
        choose_and_start(page, content, style)
        wait_for_result(page)
        assert page.locator("#pairings .pairing").count() == 2
        words = page.text_content("#pairings")
        assert "Your photo: top" in words and "Your photo: bottom" in words
        assert page.is_disabled("#rerun")
        page.click("#pairings .pairing[data-index='1'] .drop-part")
        assert "Dropped" in page.text_content("#pairings .pairing[data-index='1'] .edit-status")
        page.click("#rerun")
        page.wait_for_selector("#result[hidden]", state="attached")
        wait_for_result(page)
        assert "with your edited pairings" in page.text_content("#result-summary")
        job = page.evaluate("() => state.job")
        assert job["masks"] == "edited" and job["report"]["segments"] == ["blue", "green"]

        page.click("#hand-masks summary")
        masks = content.parent
        width, height = Image.open(content).size
        mask = np.zeros((height, width, 3), np.uint8)
        mask[:, : width // 2] = (0, 0, 255)
        mask[:, width // 2 :] = (255, 0, 0)
        Image.fromarray(mask).save(masks / "mask.png")
        Image.fromarray(mask).resize(Image.open(style).size, Image.NEAREST).save(masks / "style-mask.png")
        page.set_input_files("#content-mask", str(masks / "mask.png"))
        page.set_input_files("#style-mask", str(masks / "style-mask.png"))
        page.click("#rerun-masks")
        page.wait_for_selector("#result[hidden]", state="attached")
        wait_for_result(page)
        assert "with your masks" in page.text_content("#result-summary")
        assert "Your photo: left side" in page.text_content("#pairings")
        assert page.problems == []
    finally:
        stop()


def test_a_photo_too_large_to_fade_live_at_full_size(photos, browser, monkeypatch):
    """Above the live size the page fades a smaller copy; its 100 % view is rendered by the server at full size."""
    from photostyle.web import app as app_module

    monkeypatch.setattr(app_module, "LIVE_PIXELS", 40_000)  # the 480 x 320 test photo counts as large
    url, stop = serve(dict(TINY, segmentation="none"))
    try:
        content, style = photos
        width, height = Image.open(content).size
        page = browser(1280, 900)
        page.goto(url)
        page.wait_for_selector("#preset option[value=fast]", state="attached")
        choose_and_start(page, content, style)
        wait_for_result(page)
        assert page.evaluate("() => document.querySelector('#after-canvas').width") < width  # a smaller live copy
        set_range(page, "#strength", 50)
        page.click("[data-zoom=full]")
        page.wait_for_function("() => { const i = document.querySelector('#after-full');"
                               " return !i.hidden && i.complete && i.naturalWidth > 0 && /strength=0.50/.test(i.src); }")
        assert page.is_hidden("#after-canvas")
        assert page.evaluate("() => document.querySelector('#after-full').naturalWidth") == width
        shown = page.evaluate("() => document.querySelector('#after-full').getBoundingClientRect().width")
        assert abs(shown - width) < 1
        set_range(page, "#chroma", 20)
        page.wait_for_function("() => /chroma=0.20/.test(document.querySelector('#after-full').src)")
        page.click("[data-zoom=fit]")
        assert page.is_visible("#after-canvas") and page.is_hidden("#after-full")
        assert page.problems == []
    finally:
        stop()
