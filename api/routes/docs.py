"""``/openapi.json`` (behind the token like the data) and ``/docs`` (Swagger UI), served from
this server alone. The docs page carries no data, like the dashboard's pages: a browser can't
send a bearer token when it navigates, so the page is open and its script fetches the schema
with the token the dashboard stored (asking for one on a 401). Swagger UI 5 (OpenAPI 3.1, which
FastAPI writes) is vendored under ``static/vendor`` with its license, and the page starts it
with a script file (``static/docs.js``), so the Content-Security-Policy of api/security.py needs no inline script
and no other origin.
"""

from __future__ import annotations

from html import escape

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{title} · API docs</title>
<link rel="stylesheet" href="/static/vendor/swagger-ui.css">
<script src="/static/vendor/swagger-ui-bundle.js"></script>
<script src="/static/docs.js" defer></script>
</head>
<body>
<div id="swagger-ui"></div>
</body>
</html>
"""


def schema_router() -> APIRouter:
    """The schema; create_app guards it with the token."""
    routes = APIRouter(include_in_schema=False)

    @routes.get("/openapi.json")
    def openapi(request: Request) -> JSONResponse:
        return JSONResponse(request.app.openapi())

    return routes


def page_router(title: str) -> APIRouter:
    """The docs page, open like the dashboard's pages (it holds no data)."""
    routes = APIRouter(include_in_schema=False)
    page = PAGE.format(title=escape(title))

    @routes.get("/docs")
    def docs() -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

    return routes
