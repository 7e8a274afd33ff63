"""The report in a real browser: headless Chromium loads every picture, logs no error.

Needs Debian's chromium (``apt-get install -y chromium``) and the Python ``playwright``
package (its own browser download is not used); skipped when either is missing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def _browser_or_skip():  # -> playwright's sync API module
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.skip(f"{CHROMIUM} not installed (apt-get install -y chromium)")
    try:
        from playwright import sync_api
    except ImportError:
        pytest.skip("the playwright package is not installed (pip install playwright)")
    return sync_api


def test_every_image_loads_without_console_errors(built_report: Path) -> None:
    sync_api = _browser_or_skip()
    errors: list[str] = []
    requests: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM if Path(CHROMIUM).exists()
                                    else shutil.which("chromium"), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: errors.append(f"failed: {r.url}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(built_report.resolve().as_uri(), wait_until="load")
            images = page.evaluate(
                "() => Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
            svgs = page.evaluate("() => document.querySelectorAll('svg').length")
        finally:
            browser.close()
    assert images, "the page shows no picture"
    broken = [src for src, complete, width in images if not complete or width <= 0]
    assert not broken, f"pictures that did not load: {broken}"
    assert svgs >= 3  # metrics bars, training curves, posture curves
    assert not errors, errors
    assert all(u.startswith("file://") for u in requests), [u for u in requests if not u.startswith("file://")]
