"""The API under hostile input and hostile networks (issue 15, point 8; docs/api.md "Security").

Real warehouses built by real ingest in temporary folders; where the HTTP stack matters (the
``Host`` header, the headers of answers, startup errors) a real ``runlytics serve`` in its own
process, and Debian's Chromium for the docs page under its Content-Security-Policy.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
from browser import CHROMIUM, Page, launch
from conftest import DEEP_ONLY, REPO, Engine, Lab
from fastapi.testclient import TestClient
from servers import Server, free_port, serving

from runlytics.api import security
from runlytics.api.app import TOKEN_ENV, create_app
from runlytics.cli import main
from runlytics.warehouse import export, migrate, queries, snapshots
from runlytics.warehouse.db import PostgresUrl

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
Json = dict[str, Any]


def job(job_id: str, **fields: Any) -> Json:
    history = [{"step": s, "timestamp": T0 + s, "loss": 2.0 - s / 100, "iteration_time": 0.5} for s in range(1, 6)]
    return {"job_id": job_id, "status": "completed", "started_at": T0, "ended_at": T0 + 10, "history": history} | fields


def client_of(db: Path | PostgresUrl, token: str | None = None, **options: Any) -> TestClient:
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(TOKEN_ENV, raising=False)
        return TestClient(create_app(db, token=token, **options))


def cursor_of(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    """Three jobs, one of them logging 8 GPUs at each of its 300 steps."""
    lab = Lab(tmp_path_factory.mktemp("fleet"))
    for job_id in ("alpha", "bravo", "charlie"):
        lab.write_job(job_id, job(job_id))
    gpus = [
        {
            "step": s, "timestamp": T0 + s, "loss": 1.0, "iteration_time": 0.5,
            "gpus": [{"index": g, "utilization_percent": 50.0 + (s * 7 + g) % 40, "memory_used_mb": 1000.0 + s,
                      "temperature_c": 60.0 + (s % 9), "power_w": 200.0 + g} for g in range(8)],
        }
        for s in range(1, 301)
    ]  # fmt: skip
    lab.write_job("eight", job("eight", history=gpus))
    assert lab.ingest().failed == 0
    return lab


@pytest.fixture(scope="module")
def client(fleet: Lab, module_engine: Engine) -> TestClient:
    """The app over the fleet, on DuckDB and on PostgreSQL (conftest's ``engine``)."""
    return client_of(module_engine.warehouse(fleet.db))


# --- a real server ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(fleet: Lab) -> Iterator[Server]:
    with serving(fleet.db) as running:
        yield running


def get(url: str, host: str | None = None, **params: Any) -> httpx.Response:
    return httpx.get(url, params=params or None, headers={"Host": host} if host else None, timeout=10)


# --- no 500: depth limits -----------------------------------------------------------------

LISTINGS = [
    "/api/training/jobs",
    "/api/training/analytics/summary",
    "/api/training/alpha/steps",
    "/api/training/alpha/gpus",
    "/api/ingest/runs",
    "/api/training/insights",
]


@pytest.mark.parametrize("url", LISTINGS)
@pytest.mark.parametrize("nesting", ["[" * 2_900, '{"k":' * 600, '{"k":"jobs","v":[' + "[" * 2_000])
def test_a_deeply_nested_cursor_is_a_422(client: TestClient, url: str, nesting: str) -> None:
    response = client.get(url, params={"cursor": cursor_of(nesting)})
    assert response.status_code == 422, response.text
    assert "cursor" in json.dumps(response.json()["detail"])


def test_cursors_handed_out_still_page(client: TestClient) -> None:
    first = client.get("/api/training/jobs", params={"limit": 1, "sort": "job_id"}).json()
    second = client.get("/api/training/jobs", params={"limit": 1, "sort": "job_id", "cursor": first["next_cursor"]})
    assert [j["job_id"] for j in first["jobs"] + second.json()["jobs"]] == ["alpha", "bravo"]


def nested(levels: int) -> str:
    """An object nested ``levels`` deep: {"d": {"d": … {"d": 1} …}}."""
    return '{"d": ' * (levels - 1) + '{"d": 1}' + "}" * (levels - 1)


def test_a_config_nested_thousands_of_levels_is_cut_not_a_500(tmp_path: Path, ingest_engine: Engine) -> None:
    lab = Lab(tmp_path, ingest_engine)  # on PostgreSQL: the config as the publish stores it (jsonb)
    for job_id, levels in (("deep", 5_000), ("limit", queries.MAX_CONFIG_DEPTH - 1)):
        config = f'"config": {{"model_name": "m", "x": {nested(levels)}}}, '
        raw = json.dumps(job(job_id)).replace('"job_id"', config + '"job_id"', 1)
        lab.write_job(job_id, None, raw=raw)
    assert lab.ingest().failed == 0
    client = client_of(lab.warehouse())
    for url in ("/api/training/deep", "/api/training/jobs/deep"):
        response = client.get(url)
        assert response.status_code == 200, response.text
        config = response.json()["config"]
        assert config["model_name"] == "m"
        levels, node = 1, config["x"]  # config is level 1, x level 2
        while isinstance(node, dict):
            levels, node = levels + 1, node["d"]
        assert (levels, node) == (queries.MAX_CONFIG_DEPTH, None)  # cut: null below the 64th level
    assert client.get("/api/training/deep/analytics").status_code == 200
    whole = client.get("/api/training/limit").json()["config"]["x"]  # 64 levels in all: kept whole
    assert json.dumps(whole) == json.dumps(json.loads(nested(queries.MAX_CONFIG_DEPTH - 1)))


# --- Host allow-list and links from the configured base -----------------------------------


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example", "[::2]"])
def test_a_host_not_on_the_list_is_a_400(server: Server, host: str) -> None:
    for path in ("/api/training/jobs", "/", "/docs", "/openapi.json", "/static/common.js"):
        response = get(server.url + path, host=host)
        assert response.status_code == 400, (path, host)
        assert response.json() == {"detail": "Host header not allowed"}
        assert response.headers["x-content-type-options"] == "nosniff"


def raw_status(port: int, request: bytes) -> int:
    """The status of a request sent as these bytes (headers no HTTP client would send)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        return int(sock.recv(100).split(b" ")[1])


def test_no_host_an_empty_one_or_two_are_a_400(server: Server) -> None:
    port = server.port
    assert raw_status(port, b"GET /api/training/jobs HTTP/1.0\r\n\r\n") == 400
    assert raw_status(port, b"GET /api/training/jobs HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n") == 400
    two = b"Host: localhost\r\nHost: evil.example\r\n"
    assert raw_status(port, b"GET /api/training/jobs HTTP/1.1\r\n" + two + b"Connection: close\r\n\r\n") == 400
    assert raw_status(port, b"GET /api/training/jobs HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n") == 200


@pytest.mark.parametrize("host", ["127.0.0.1", "LOCALHOST", "localhost.", "[::1]"])
def test_the_bound_address_and_localhost_are_answered(server: Server, host: str) -> None:
    response = get(server.url + "/api/training/jobs", host=f"{host}:{server.port}")
    assert response.status_code == 200, response.text


def test_the_probes_answer_any_host(server: Server) -> None:
    assert get(server.url + "/healthz", host="10.1.2.3:8000").status_code == 200
    assert get(server.url + "/readyz", host="10.1.2.3:8000").status_code == 200


def test_next_links_start_with_the_configured_base_not_the_host(server: Server) -> None:
    base = f"http://127.0.0.1:{server.port}"
    page = get(server.url + "/api/training/jobs", host=f"localhost:{server.port}", limit=1, sort="job_id").json()
    assert page["next"] == f"{base}/api/training/jobs?limit=1&sort=job_id&cursor={page['next_cursor']}"
    assert get(page["next"]).json()["jobs"][0]["job_id"] == "bravo"


def test_base_url_and_allowed_hosts_options(fleet: Lab) -> None:
    options = ("--base-url", "https://runs.example.com/analytics/", "--allowed-hosts", "*.corp.example,10.0.0.5")
    with serving(fleet.db, *options) as running:
        url = running.url + "/api/training/jobs"
        assert get(url, host="a.corp.example").status_code == 200
        assert get(url, host="deep.a.corp.example:443").status_code == 200
        assert get(url, host="10.0.0.5:8000").status_code == 200
        for refused in ("corp.example", "evilcorp.example", "localhost", "runs.example.com"):
            assert get(url, host=refused).status_code == 400, refused  # the list given replaces the default
        page = get(url, host="a.corp.example", limit=2).json()
        assert page["next"].startswith("https://runs.example.com/analytics/api/training/jobs?limit=2&cursor=")
    with serving(fleet.db, "--base-url", "https://runs.example.com") as running:
        # by default the base URL's host is answered too (a proxy passes it on)
        assert get(running.url + "/api/training/jobs", host="runs.example.com").status_code == 200
        assert get(running.url + "/api/training/jobs", host="other.example.com").status_code == 400


def test_a_bad_base_url_is_a_usage_error(fleet: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    for bad in ("runs.example.com", "ftp://runs.example.com", "https://u:p@runs.example.com", "http://x/?a=1"):
        assert main(["serve", "--db", str(fleet.db), "--base-url", bad]) == 2
        assert "base URL" in capsys.readouterr().err


def test_without_a_base_url_links_are_relative(client: TestClient) -> None:
    page = client.get("/api/training/jobs", params={"limit": 1}, headers={"Host": "evil.example"}).json()
    assert page["next"] == f"/api/training/jobs?limit=1&cursor={page['next_cursor']}"


def test_default_hosts_and_base_urls() -> None:
    assert security.default_hosts("127.0.0.1") == ["127.0.0.1", "localhost", "::1"]
    everywhere = security.default_hosts("0.0.0.0", "runs.example.com")
    assert everywhere == ["localhost", "127.0.0.1", "::1", "runs.example.com"]
    assert security.default_hosts("::") == ["localhost", "127.0.0.1", "::1"]
    assert security.default_base_url("0.0.0.0", 80) is None and security.default_base_url("::", 80) is None
    assert security.default_base_url("::1", 8000) == "http://[::1]:8000"
    addresses = ("127.0.0.1", "127.1.2.3", "::1", "localhost", "0.0.0.0", "::", "10.0.0.1")
    assert [security.is_loopback(h) for h in addresses] == [True, True, True, True, False, False, False]


# --- the token ----------------------------------------------------------------------------


def test_an_empty_token_is_a_startup_error(fleet: Lab) -> None:
    for value in ("", "   "):
        environment = {k: v for k, v in os.environ.items() if k != TOKEN_ENV} | {TOKEN_ENV: value}
        done = subprocess.run(
            [sys.executable, "-m", "runlytics", "serve", "--db", str(fleet.db), "--port", str(free_port())],
            cwd=REPO, env=environment, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert f"{TOKEN_ENV} is empty" in done.stderr
    with pytest.raises(ValueError, match="empty"):
        create_app(fleet.db, token="")


def test_a_non_loopback_address_without_a_token_warns(fleet: Lab) -> None:
    with serving(fleet.db, host="0.0.0.0") as running:
        assert "warning: listening on 0.0.0.0 without RUNLYTICS_API_TOKEN" in running.log.read_text()
    with serving(fleet.db, host="0.0.0.0", env={TOKEN_ENV: "s3cret"}) as running:
        assert "warning" not in running.log.read_text()


def test_no_warning_on_loopback(server: Server) -> None:
    assert "warning" not in server.log.read_text()


# --- /docs and /openapi.json --------------------------------------------------------------


def test_the_schema_is_behind_the_token_and_the_docs_page_is_not(fleet: Lab) -> None:
    guarded = client_of(fleet.db, token="s3cret")
    response = guarded.get("/openapi.json")
    assert response.status_code == 401 and response.json() == {"detail": "missing or wrong bearer token"}
    assert guarded.get("/openapi.json", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    # the page holds no data (a browser navigating to it sends no token); its script asks for the schema
    page = guarded.get("/docs")
    assert page.status_code == 200 and "/static/docs.js" in page.text and "paths" not in page.text
    schema = guarded.get("/openapi.json", headers={"Authorization": "Bearer s3cret"}).json()
    assert "/api/training/jobs" in schema["paths"] and "/docs" not in schema["paths"]
    for path in ("/redoc", "/docs/oauth2-redirect"):  # FastAPI's other pages (ReDoc loads from a CDN): none
        assert guarded.get(path, headers={"Authorization": "Bearer s3cret"}).status_code == 404
    # Swagger UI's own files hold no data, like the dashboard's
    assert guarded.get("/static/vendor/swagger-ui-bundle.js").status_code == 200


def test_docs_load_nothing_from_another_host(client: TestClient) -> None:
    page = client.get("/docs").text
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    swagger = "/static/vendor/swagger-ui"
    assert sources == ["data:,", f"{swagger}.css", f"{swagger}-bundle.js", "/static/docs.js"]
    assert "<script>" not in page  # no inline script: the CSP allows none
    for asset, kind in (("swagger-ui-bundle.js", "text/javascript"), ("swagger-ui.css", "text/css")):
        response = client.get(f"/static/vendor/{asset}")
        assert response.status_code == 200 and response.headers["content-type"].startswith(kind)
        assert len(response.content) > 100_000


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed")
def test_docs_render_in_chromium_under_the_csp(server: Server) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch(playwright)
        tab = Page(browser)
        try:
            tab.page.goto(server.url + "/docs")
            tab.page.wait_for_selector(".opblock", timeout=20_000)
            operations = tab.page.locator(".opblock").count()
            elsewhere = [u for u in tab.requests if not u.startswith((server.url + "/", "data:"))]
            assert elsewhere == []
            assert tab.errors == []  # a CSP violation is a console error
            assert operations >= 14
        finally:
            tab.close()
            browser.close()


@DEEP_ONLY  # every run: test_docs_render_in_chromium_under_the_csp, and the token's own tests without a browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed")
def test_docs_behind_a_token_render_with_the_stored_token(fleet: Lab) -> None:
    from playwright.sync_api import sync_playwright

    with serving(fleet.db, env={TOKEN_ENV: "s3cret"}) as running, sync_playwright() as playwright:
        browser = launch(playwright)
        tab = Page(browser)
        try:
            tab.page.goto(running.url + "/docs")
            tab.page.wait_for_selector("#token-form", timeout=20_000)  # the schema answered 401
            tab.page.fill("#token", "s3cret")
            tab.page.click("#token-form button")
            tab.page.wait_for_selector(".opblock", timeout=20_000)
            assert tab.page.locator(".opblock").count() >= 14
            assert tab.page.evaluate("localStorage.getItem('runlytics-token')") == "s3cret"
        finally:
            tab.close()
            browser.close()


# --- security headers ---------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/job?id=alpha", "/summary", "/docs", "/static/common.js", "/api/training/jobs"])
def test_answers_carry_the_security_headers(server: Server, path: str) -> None:
    headers = get(server.url + path).headers
    assert headers["content-security-policy"] == security.CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "script-src 'self';" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"


def test_streamed_exports_carry_the_headers_too(server: Server) -> None:
    response = get(server.url + "/api/training/export/steps", job_ids="alpha")
    assert response.status_code == 200 and response.headers["x-content-type-options"] == "nosniff"
    assert response.text.count("\n") == 6  # the header and five steps, whole


# --- no server paths ----------------------------------------------------------------------


def test_readyz_and_job_records_name_no_server_path(client: TestClient, fleet: Lab, module_engine: Engine) -> None:
    ready = client.get("/readyz").json()
    # PostgreSQL has no snapshots (docs/postgresql.md)
    snapshot = None if module_engine.postgres else f"warehouse.duckdb.snapshots/{snapshots.latest(fleet.db).name}"
    assert ready["snapshot"] == snapshot
    record = client.get("/api/training/alpha").json()
    assert record["source_dir"] == "alpha"
    everything = json.dumps([ready, record, client.get("/api/training/jobs/alpha").json()])
    assert str(fleet.root.parent) not in everything


def test_errors_name_no_server_path(tmp_path: Path) -> None:
    missing = client_of(tmp_path / "missing.duckdb")
    ready = missing.get("/readyz").json()
    data = missing.get("/api/training/jobs").json()
    assert ready["detail"].startswith("no snapshot of missing.duckdb yet")
    assert data["detail"].startswith("warehouse unavailable: no snapshot of missing.duckdb yet")
    assert str(tmp_path) not in json.dumps([ready, data])


# --- CSV cells that a spreadsheet would run -----------------------------------------------

FORMULAS = ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "plain", "a=b"]


@pytest.fixture(scope="module")
def formulas(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    lab = Lab(tmp_path_factory.mktemp("formulas"))
    for i, text in enumerate(FORMULAS):
        lab.write_job(f"f{i}", job(f"f{i}", config={"model_name": text}) | {"history": [{"step": 1, "loss": -1.5}]})
    lab.write_job("=cmd", job("=cmd"))
    assert lab.ingest().failed == 0
    return lab


def neutralised(text: str) -> str:
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def test_runlytics_export_csv_neutralises_formula_cells(formulas: Lab, module_engine: Engine, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with module_engine.reader(formulas.db) as con:
        export.export(con, out, "csv")
    with (out / "jobs.csv").open(newline="") as f:
        models = {row["job_id"]: row["model_name"] for row in csv.DictReader(f)}
    assert models == {f"f{i}": neutralised(text) for i, text in enumerate(FORMULAS)} | {"'=cmd": ""}
    with (out / "steps.csv").open(newline="") as f:
        losses = {row["loss"] for row in csv.DictReader(f) if row["job_id"] == "f0"}
    assert losses == {"-1.5"}  # numbers are not text: a negative one stays as it is


def test_parquet_keeps_the_values_as_they_are(formulas: Lab, module_engine: Engine, tmp_path: Path) -> None:
    with module_engine.reader(formulas.db) as con:
        export.export(con, tmp_path / "out", "parquet")
    rows = duckdb.sql(f"SELECT job_id, model_name FROM read_parquet('{tmp_path}/out/jobs/*.parquet')").fetchall()
    assert dict(rows) == {f"f{i}": text for i, text in enumerate(FORMULAS)} | {"=cmd": None}


def test_the_api_csv_export_neutralises_formula_cells(formulas: Lab, module_engine: Engine) -> None:
    ids = ["=cmd", "f0", "f2"]
    response = client_of(module_engine.warehouse(formulas.db)).get(
        "/api/training/export/steps", params={"job_ids": ",".join(ids)}
    )
    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(response.text)))
    expected = [("'=cmd", str(s)) for s in range(1, 6)] + [("f0", "1"), ("f2", "1")]
    assert [(r["job_id"], r["step"]) for r in rows] == expected
    assert {r["loss"] for r in rows if r["job_id"] != "'=cmd"} == {"-1.5"}


# --- /gpus?max_points bounds the whole answer ---------------------------------------------


@pytest.mark.parametrize("max_points", [16, 80, 100, 1_000])
def test_gpu_max_points_bound_the_whole_answer(client: TestClient, max_points: int) -> None:
    readings = client.get("/api/training/eight/gpus", params={"max_points": max_points}).json()["readings"]
    assert len(readings) <= max_points
    for g in range(8):  # every GPU is there, from its first step to its last
        steps = [r["step"] for r in readings if r["gpu_index"] == g]
        assert steps[0] == 1 and steps[-1] == 300
    if max_points >= 8 * 10:  # a bucket per GPU at least: each GPU's hottest reading is kept
        hottest = {(r["gpu_index"]) for r in readings if r["temperature_c"] == 68.0}
        assert hottest == set(range(8))


def test_gpu_max_points_too_small_for_the_gpus_is_a_422(client: TestClient) -> None:
    response = client.get("/api/training/eight/gpus", params={"max_points": 15})
    assert response.status_code == 422
    detail = "max_points must be at least 16 for 8 GPU(s): the first and last reading of each"
    assert response.json()["detail"] == detail
    one = client.get("/api/training/eight/gpus", params={"max_points": 15, "gpu": 3}).json()["readings"]
    assert len(one) <= 15 and {r["gpu_index"] for r in one} == {3}


# --- snapshots: a name in the future, file modes ------------------------------------------


def test_a_snapshot_named_in_the_future_does_not_pin_readers(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    lab.write_job("before", job("before"))
    assert lab.ingest().failed == 0
    published = snapshots.latest(lab.db)
    # a copy published while the clock was a day ahead
    ahead = time.time_ns() + 86_400 * 10**9
    future = published.with_name(f"{ahead:020d}{snapshots.SUFFIX}")
    shutil.copyfile(published, future)
    os.utime(future, (ahead / 1e9, ahead / 1e9))
    client = client_of(lab.db)
    assert [j["job_id"] for j in client.get("/api/training/jobs").json()["jobs"]] == ["before"]
    assert snapshots.age(lab.db) == float("inf")  # its time is ahead of the clock: a fresh copy is due

    lab.write_job("after", job("after", started_at=T0 + 60))
    assert lab.ingest().failed == 0
    newest = snapshots.latest(lab.db)
    assert int(newest.name.removesuffix(snapshots.SUFFIX)) == ahead + 1  # named after the future one
    assert [j["job_id"] for j in client.get("/api/training/jobs").json()["jobs"]] == ["after", "before"]
    assert 0 <= snapshots.age(lab.db) < 60
    for _ in range(snapshots.KEEP + 1):  # later copies go on from there, and pruning keeps the newest
        assert snapshots.publish(lab.db) == snapshots.latest(lab.db)
    assert len(list(snapshots.folder(lab.db).glob("*.duckdb"))) == snapshots.KEEP


def test_snapshot_names_compare_as_numbers(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    lab.write_job("a", job("a"))
    assert lab.ingest().failed == 0
    folder = snapshots.folder(lab.db)
    huge = folder / f"{10**20 - 1}{snapshots.SUFFIX}"  # the largest 20-digit name
    shutil.copyfile(snapshots.latest(lab.db), huge)
    (folder / "notes.duckdb").write_text("not a copy")
    assert snapshots.latest(lab.db) == huge
    after = snapshots.publish(lab.db)  # 21 digits: after it as a number, before it as text
    assert after.name == f"{10**20}{snapshots.SUFFIX}" and snapshots.latest(lab.db) == after


@contextmanager
def umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o600), (0o002, 0o600), (0o077, 0o600), (0o277, 0o400)])
def test_warehouse_and_snapshots_are_created_private(tmp_path: Path, mask: int, mode: int) -> None:
    if not mode & 0o200 and os.geteuid() != 0:
        pytest.skip("a warehouse its owner can't write is only usable by root")
    lab = Lab(tmp_path)
    lab.write_job("a", job("a"))
    with umask(mask):
        migrate.upgrade(lab.db)
        assert lab.ingest().failed == 0
        snapshots.publish(lab.db)
    assert stat.S_IMODE(lab.db.stat().st_mode) == mode
    copies = list(snapshots.folder(lab.db).glob("*.duckdb"))
    assert copies and {stat.S_IMODE(p.stat().st_mode) for p in copies} == {mode}
    assert stat.S_IMODE(snapshots.folder(lab.db).stat().st_mode) == 0o700 & ~mask
    if mode & 0o400:  # still readable by its owner: the API answers from it
        assert client_of(lab.db).get("/api/training/a").status_code == 200


def test_everything_an_ingest_run_writes_is_private(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    lab.write_job("a", job("a"))
    spool = tmp_path / "spool"
    spool.mkdir()
    # an old sample (sealed straight into a Parquet part) and one of now (the hot table)
    lines = [
        {"ts": 1_700_000_000, "job_id": "a", "gpu_index": 0},
        {"ts": int(time.time()), "job_id": "a", "gpu_index": 0},
    ]
    (spool / "h.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    with umask(0o022):
        assert lab.ingest(spool_root=spool).failed == 0
    written = [p for p in tmp_path.rglob("*") if p.name.startswith("warehouse.duckdb") or "warehouse.duckdb" in str(p)]
    assert any(p.suffix == ".parquet" for p in written) and any(p.suffix == ".duckdb" for p in written)
    assert {str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode) & 0o077) for p in written} == {
        str(p.relative_to(tmp_path)): "0o0" for p in written
    }
