"""The web dashboard: five pages of HTML and JavaScript over the REST API.

The pages hold no data of their own: each is a shell that loads its script, and the script
asks the API (the same endpoints any client uses) and draws. Static files ship inside the
package; the charting library (uPlot) is vendored under ``static/vendor`` with its license.
"""

from __future__ import annotations

from collections.abc import Callable
from html import escape
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent.parent / "static"  # api/static

# path -> (page script, title)
PAGES: dict[str, tuple[str, str]] = {
    "/": ("jobs", "Jobs"),
    "/job": ("job", "Job"),
    "/compare": ("compare", "Compare"),
    "/summary": ("summary", "Summary"),
    "/insights": ("insights", "Insights"),
}

SHELL = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{title} · runlytics</title>
<link rel="stylesheet" href="/static/vendor/uPlot.min.css">
<link rel="stylesheet" href="/static/dashboard.css">
<link rel="modulepreload" href="/static/common.js">
<script src="/static/vendor/uPlot.iife.min.js"></script>
<script type="module" src="/static/{page}.js"></script>
</head>
<body data-page="{page}">
<header class="topbar">
  <a class="brand" href="/">runlytics</a>
  <nav aria-label="pages">
    <a href="/" data-nav="jobs">Jobs</a>
    <a href="/summary" data-nav="summary">Summary</a>
    <a href="/compare" data-nav="compare">Compare</a>
    <a href="/insights" data-nav="insights">Insights</a>
  </nav>
</header>
<main id="main"><p class="muted" id="loading">Loading…</p></main>
</body>
</html>
"""


def router() -> APIRouter:
    """The page routes; mount ``static_files()`` at ``/static`` beside them."""
    pages = APIRouter(include_in_schema=False)
    for path, (page, title) in PAGES.items():
        pages.add_api_route(path, _shell(page, title), methods=["GET"], response_class=HTMLResponse)
    return pages


def _shell(page: str, title: str) -> Callable[[], HTMLResponse]:
    html = SHELL.format(page=escape(page), title=escape(title))

    def shell() -> HTMLResponse:
        return HTMLResponse(html, headers={"Cache-Control": "no-cache"})

    shell.__name__ = f"page_{page}"
    return shell


def static_files() -> StaticFiles:
    return StaticFiles(directory=STATIC)
