"""A real `runlytics serve` and Debian's headless Chromium, driven by Playwright.

Shared by tests/test_dashboard.py and bench/dashboard.py. Playwright downloads no browser here:
it drives /usr/bin/chromium (.ci/run installs Debian's chromium package).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from servers import serving

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("RUNLYTICS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps calling home, which this closed
# network refuses, many connections at a time.
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
READY = "body[data-ready]"


@contextmanager
def serve(db: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """`runlytics serve` on a free port in its own process (servers.serving); yields its base URL."""
    with serving(db, env=env, keep_token=True) as running:
        yield running.url


def launch(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


class Page:
    """A browser page that records console errors, failed requests and the API calls made."""

    def __init__(self, browser: Any, width: int = 1280, height: int = 900) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": height}, device_scale_factor=1)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        self.page.on("request", lambda r: self.requests.append(r.url))

    def open(self, url: str, timeout_ms: int = 15_000) -> float:
        """Load a page and wait until it says it has drawn; the milliseconds that took."""
        self.page.goto(url)
        self.page.wait_for_selector(READY, state="attached", timeout=timeout_ms)
        return float(self.page.evaluate("window.runlyticsReadyMs"))

    def close(self) -> None:
        self.context.close()


# Pixels of a canvas within a small distance of a colour: proof that a series was drawn.
COLOUR_PIXELS = """([selector, rgb]) => {
  let n = 0;
  for (const canvas of document.querySelectorAll(selector)) {
    const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    for (let i = 0; i < data.length; i += 4) {
      if (data[i + 3] > 0 && Math.abs(data[i] - rgb[0]) < 40 && Math.abs(data[i + 1] - rgb[1]) < 40
          && Math.abs(data[i + 2] - rgb[2]) < 40) n++;
    }
  }
  return n;
}"""
SERIES_BLUE = (31, 95, 191)  # PALETTE[0] of api/static/common.js


def coloured_pixels(page: Any, selector: str, rgb: tuple[int, int, int] = SERIES_BLUE) -> int:
    return int(page.evaluate(COLOUR_PIXELS, [selector, list(rgb)]))
