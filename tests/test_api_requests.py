"""How the API reads a request, pinned on a small fleet (docs/api.md; decisions "Times in filters"):

- ``since``/``until`` read as ``runlytics export --since`` reads them (warehouse/times.py): an
  ISO 8601 basic date is that date, never Unix seconds of 1970; Unix seconds need 9 digits;
- a list of ids split as CSV splits a line: a quoted id beside one holding a ``"``;
- the compare's 404 quotes each unknown id; an empty selection has 0 training hours;
- no redirect for a trailing slash; HEAD answered as GET; the auth scheme in any case;
- each read of a DuckDB warehouse has a time limit (``--read-timeout``), as on PostgreSQL.

    job        model  started (UTC)         training seconds
    early      m      2026-02-28T23:00:00   20 (steps 10 and 20, 1 s an iteration)
    midnight   m      2026-03-01T00:00:00   20
    morning    m      2026-03-01T06:00:00   20
    untimed    u      -                     - (one row, nothing timed)
    a,b  q"uote  a  b  spaced                (no start, model none)
"""

from __future__ import annotations

import csv
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
from conftest import Engine, Lab
from fastapi.testclient import TestClient
from servers import serving

from runlytics import cli
from runlytics.api.app import create_app
from runlytics.warehouse import fleet
from runlytics.warehouse.db import PostgresUrl

SUMMARY = "/api/training/analytics/summary"
FLEET = "/api/training/analytics/fleet"
JOBS = "/api/training/jobs"
INSIGHTS = "/api/training/insights"
COMPARE = "/api/training/analytics/compare"
EXPORT = "/api/training/export/steps"
STARTED = {"early": "2026-02-28T23:00:00Z", "midnight": "2026-03-01T00:00:00Z", "morning": "2026-03-01T06:00:00Z"}
LISTED = ("a,b", 'q"uote', "a", "b", "spaced")


def timed_job(job_id: str, started: str) -> dict[str, Any]:
    history = [{"step": 10, "iteration_time": 1.0, "samples": 10}, {"step": 20, "iteration_time": 1.0, "samples": 10}]
    return {"job_id": job_id, "status": "completed", "started_at": started, "config": {"model_name": "m"},
            "history": history}  # fmt: skip


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    lab = Lab(tmp_path_factory.mktemp("requests"))
    for n, (job, started) in enumerate(STARTED.items()):
        lab.write_job(f"t{n}", timed_job(job, started))
    lab.write_job("u", {"job_id": "untimed", "status": "running", "config": {"model_name": "u"},
                        "history": [{"step": 1, "loss": 2.0}]})  # fmt: skip
    for n, job in enumerate(LISTED):
        lab.write_job(f"l{n}", {"job_id": job, "status": "completed", "history": [{"step": 1, "samples": n + 1}]})
    assert lab.ingest().ingested == len(STARTED) + 1 + len(LISTED)
    return lab


@pytest.fixture(scope="module")
def warehouse(lab: Lab, module_engine: Engine) -> Any:
    return module_engine.warehouse(lab.db)


@pytest.fixture(scope="module")
def client(warehouse: Any) -> TestClient:
    return TestClient(create_app(warehouse, token=None))


# --- since / until: one reading for the API and the export (decisions: "Times in filters") -------------

SINCE = [
    ("20260301", {"midnight", "morning"}),  # ISO 8601 basic date (was Unix seconds: 1970-08-23, every job)
    ("2026-03-01", {"midnight", "morning"}),
    ("1772323200", {"midnight", "morning"}),  # Unix seconds of 2026-03-01T00:00Z (inputs.md's timestamp)
    ("1772323200.000001", {"morning"}),  # a microsecond past midnight
    ("2026-03-01T02:00:00+02", {"midnight", "morning"}),  # 00:00Z; the hour-only offset was a 422
    ("2026-03-01T01:00:00+01:00", {"midnight", "morning"}),
    ("2026-02-28T19:00:00-05:00", {"midnight", "morning"}),
    ("20260301T0600Z", {"morning"}),  # ISO 8601 basic date and time
    ("2026-02-28T23:00:00", {"early", "midnight", "morning"}),  # no offset: UTC
    (" 2026-03-01 ", {"midnight", "morning"}),  # blanks around it dropped, as the export did
]
BAD_TIMES = [
    "2026",  # a year, or 34 minutes after 1970? neither: a 422 (was 1970-01-01T00:33:46Z)
    "0",
    "202603",
    "20260230",  # 8 digits are a date: 30 February is none (was Unix seconds)
    "-1772323200",
    "1.7e9",
    "99999999999999",  # Unix seconds past the year 9999
    "2026-03-01T02:00:00 02:00",  # a '+' sent unescaped in a URL reads as a blank
]


def started_ids(client: TestClient, **params: str) -> set[str]:
    """The jobs of the job list for these filters (walked whole: at most 100 here)."""
    response = client.get(JOBS, params=params)
    assert response.status_code == 200, response.text
    return {job["job_id"] for job in response.json()["jobs"]}


@pytest.mark.parametrize(("since", "expected"), SINCE)
def test_since_reads_the_same_on_every_route(client: TestClient, since: str, expected: set[str]) -> None:
    assert started_ids(client, since=since) == expected
    summary = client.get(SUMMARY, params={"since": since}).json()
    assert summary["total_jobs"] == len(expected)
    assert summary["total_training_time_hours"] == pytest.approx(len(expected) * 20 / 3600)
    assert client.get(FLEET, params={"since": since}).json()["jobs"] == len(expected)
    assert client.get(INSIGHTS, params={"since": since}).status_code == 200


def test_until_reads_a_basic_date_as_a_date(client: TestClient) -> None:
    assert started_ids(client, until="20260301") == {"early"}  # was every job before 1970-08-23: none
    assert started_ids(client, since="20260228", until="1772323200.000001") == {"early", "midnight"}


@pytest.fixture(scope="module")
def duckdb_client(lab: Lab) -> TestClient:
    """For what the engine does not change: parameters refused before any read, the token."""
    return TestClient(create_app(lab.db, token=None))


@pytest.mark.parametrize("text", BAD_TIMES)
def test_a_bad_time_is_a_422_naming_it(duckdb_client: TestClient, text: str) -> None:
    for route in (SUMMARY, FLEET, JOBS, INSIGHTS):
        for name in ("since", "until"):
            response = duckdb_client.get(route, params={name: text})
            assert response.status_code == 422, (route, name, text, response.text)
            [error] = response.json()["detail"]
            assert error["loc"] == ["query", name] and repr(text.strip()) in error["msg"]


def db_arg(warehouse: Any) -> str:
    """``--db``'s value for the warehouse (a PostgreSQL URL with its password, if any)."""
    return warehouse.url if isinstance(warehouse, PostgresUrl) else str(warehouse)


def export_ids(warehouse: Any, out: Path, *args: str) -> set[str]:
    code = cli.main(["export", str(out), "--db", db_arg(warehouse), "--format", "csv", "--quiet", *args])
    assert code == 0
    with (out / "jobs.csv").open(newline="") as f:
        return {row["job_id"] for row in csv.DictReader(f)}


@pytest.mark.parametrize(("since", "expected"), SINCE)
def test_export_since_reads_as_the_api(warehouse: Any, tmp_path: Path, since: str, expected: set[str]) -> None:
    assert export_ids(warehouse, tmp_path / "out", "--since", since) == expected


@pytest.mark.parametrize("text", BAD_TIMES)
def test_export_refuses_a_bad_since_as_the_api(
    warehouse: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    code = cli.main(["export", str(tmp_path / "out"), "--db", db_arg(warehouse), "--since", text])
    err = capsys.readouterr().err
    assert code == cli.EXIT_USAGE and err.startswith(f"runlytics export: --since {text.strip()!r} ")
    assert err.count("\n") == 1, err  # one line
    assert not (tmp_path / "out").exists()


def test_a_scalar_parameter_given_twice_is_read_from_its_last(client: TestClient) -> None:
    # docs/api.md: last wins (as Starlette reads a query); only job_ids takes every occurrence
    params = [("status", "running"), ("status", "completed"), ("since", "2000-01-01"), ("since", "20260301")]
    response = client.get(JOBS, params=params)
    # completed and started since 2026-03-01 (the first ones: running, since 2000, would be none)
    assert {job["job_id"] for job in response.json()["jobs"]} == {"midnight", "morning"}


# --- lists of ids: CSV's quoting ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"a,b",q"uote', ["a,b", 'q"uote']),  # was 404 "unknown job(s): "a, b""
        ('q"uote,"a,b"', ['q"uote', "a,b"]),
        ('"q""uote"', ['q"uote']),
        ('"a,b", q"uote ,a', ["a,b", 'q"uote', "a"]),
        (' "a,b" ', ["a,b"]),  # blanks around a quoted field
        ("a,b", ["a", "b"]),
        (" spaced ", ["spaced"]),  # blanks around an unquoted id are dropped (docs/api.md)
    ],
)
def test_a_quoted_id_beside_one_holding_a_quote(client: TestClient, value: str, expected: list[str]) -> None:
    response = client.get(COMPARE, params={"job_ids": value})
    assert response.status_code == 200, response.text
    assert [job["job_id"] for job in response.json()["jobs"]] == expected
    exported = client.get(EXPORT, params={"job_ids": value})
    assert exported.status_code == 200, exported.text
    assert sorted({row["job_id"] for row in csv.DictReader(exported.text.splitlines())}) == sorted(expected)


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        ('"a,b"x,c', "unknown job(s): '\"a', 'b\"x', 'c'"),  # text after the closing quote: no quoting
        ('"a,b', "unknown job(s): '\"a'"),  # never closed: plain text ("a), then the job b
    ],
)
def test_a_broken_quote_is_plain_text(client: TestClient, value: str, detail: str) -> None:
    response = client.get(COMPARE, params={"job_ids": value})
    assert (response.status_code, response.json()["detail"]) == (404, detail)


def test_export_jobs_on_the_command_line_with_quotes(warehouse: Any, tmp_path: Path) -> None:
    assert export_ids(warehouse, tmp_path / "out", "--jobs", '"a,b",q"uote') == {"a,b", 'q"uote'}


# --- the compare's 404; an empty selection's hours ------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"job_ids": '"x, y"'}, "unknown job(s): 'x, y'"),  # one id holding a comma
        ([("job_ids", "x"), ("job_ids", "y")], "unknown job(s): 'x', 'y'"),  # two ids
        ({"job_ids": "a,nope"}, "unknown job(s): 'nope'"),
    ],
)
def test_compare_quotes_each_unknown_id(client: TestClient, params: Any, detail: str) -> None:
    response = client.get(COMPARE, params=params)
    assert (response.status_code, response.json()) == (404, {"detail": detail})


def test_training_hours_of_no_job_are_0_and_of_untimed_jobs_null(client: TestClient) -> None:
    nothing = client.get(SUMMARY, params={"model": "no-such-model"}).json()
    assert (nothing["total_jobs"], nothing["total_training_time_hours"]) == (0, 0)  # Σ over no job
    untimed = client.get(SUMMARY, params={"model": "u"}).json()
    assert (untimed["total_jobs"], untimed["total_training_time_hours"]) == (1, None)  # unknown, not 0
    timed = client.get(SUMMARY, params={"model": "m"}).json()
    assert timed["total_training_time_hours"] == pytest.approx(60 / 3600)  # 3 jobs × 20 s


# --- trailing slashes, HEAD, the auth scheme ------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/ingest/runs/", "/healthz/", "/api/training/analytics/summary/"])
def test_a_trailing_slash_is_a_json_404_not_a_redirect(client: TestClient, path: str) -> None:
    response = client.get(path, follow_redirects=False)
    assert response.status_code == 404 and response.headers["content-type"] == "application/json"
    assert "detail" in response.json() and "location" not in response.headers


@pytest.mark.parametrize("path", ["/healthz", "/readyz", JOBS, f"{SUMMARY}?model=m", f"{EXPORT}?job_ids=a,b"])
def test_head_answers_as_get_without_a_body(client: TestClient, path: str) -> None:
    got = client.get(path)
    head = client.head(path)
    assert (head.status_code, head.content) == (got.status_code, b"")
    assert head.headers["content-type"] == got.headers["content-type"]
    if "content-length" in got.headers:
        assert head.headers["content-length"] == str(len(got.content))


def test_head_of_a_real_server(lab: Lab) -> None:
    # DuckDB only: uvicorn's own handling of HEAD, over the socket
    with serving(lab.db) as server:
        for path in ("/healthz", "/readyz", JOBS):
            head = httpx.head(f"{server.url}{path}", timeout=10)
            assert (head.status_code, head.content) == (200, b""), path
            assert head.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        ("Bearer s3cr3t", 200),
        ("bearer s3cr3t", 200),  # RFC 9110 §11.1: the scheme is case-insensitive (was 401)
        ("BEARER s3cr3t", 200),
        ("bEaReR s3cr3t", 200),
        ("Bearer S3CR3T", 401),  # the token is not
        ("bearer wrong", 401),
        ("Basic s3cr3t", 401),
        ("bearers3cr3t", 401),
        ("s3cr3t", 401),
        ("", 401),
    ],
)
def test_the_auth_scheme_is_case_insensitive(lab: Lab, authorization: str, status: int) -> None:
    client = TestClient(create_app(lab.db, token="s3cr3t"))
    response = client.get(JOBS, headers={"Authorization": authorization} if authorization else {})
    assert response.status_code == status
    assert (client.head(JOBS, headers={"Authorization": authorization}).status_code) == status


# --- the time limit of a read on DuckDB -----------------------------------------------------------------

# 1e12 rows of arithmetic (about an hour on 2 cores, minutes on 128: always past the limit),
# computed once and used by the summary's first statement (its WHERE reads it, so the optimizer
# cannot drop it)
SLOW = "(SELECT sum(a.range * b.range) AS n FROM range(1000000) a, range(1000000) b) slow"


def test_a_read_past_its_time_limit_is_a_503_on_duckdb(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    # DuckDB only (PostgreSQL's statement_timeout: tests/test_postgres_api.py); a summary made slow
    slow = fleet.SUMMARY.replace("FROM job_results\nWHERE ", f"FROM job_results, {SLOW}\nWHERE slow.n > 0 AND ")
    assert slow != fleet.SUMMARY
    monkeypatch.setattr(fleet, "SUMMARY", slow)
    client = TestClient(create_app(lab.db, token=None, read_timeout=1))
    started = time.monotonic()
    response = client.get(SUMMARY)
    elapsed = time.monotonic() - started
    assert response.status_code == 503, response.text
    assert response.json() == {"detail": "warehouse unavailable: a read took longer than its time limit: 1 s on DuckDB"}
    assert elapsed < 10, elapsed  # stopped near its limit, not run to its end
    # the same app (the same snapshot's connection) answers the next reads, none interrupted
    for _ in range(20):
        assert client.get(JOBS).json()["total"] == len(STARTED) + 1 + len(LISTED)
    monkeypatch.undo()
    assert client.get(SUMMARY).json()["total_jobs"] == len(STARTED) + 1 + len(LISTED)


def test_a_deadline_never_reaches_the_next_statement() -> None:
    from runlytics.api import timed_reads  # (here: the other tests run on a tree without the module)

    # each statement's deadline ends with it: a later statement on the same connection runs past
    # the earlier one's deadline without being interrupted (a timer left armed would stop it)
    con = duckdb.connect()
    raw = con.cursor()
    short = timed_reads.Cursor(raw, 0.01)
    long = timed_reads.Cursor(raw, 60)
    for _ in range(5):
        assert short.execute("SELECT 42").fetchall() == [(42,)]
        # ~0.1 s or more, far past the first statement's deadline of 10 ms
        long.execute("SELECT count(*) FROM range(5000) a, range(5000) b WHERE (a.range * b.range) % 7 = 1")
        assert long.fetchall()[0][0] > 0
    con.close()


def test_the_watchdog_interrupts_only_running_statements() -> None:
    from runlytics.api import timed_reads

    # many short statements on several threads, deadlines armed and ended concurrently: none is
    # interrupted, and the statements of a cursor still answer after thousands of deadlines
    con = duckdb.connect()
    failures: list[BaseException] = []

    def reads() -> None:
        cursor = timed_reads.Cursor(con.cursor(), 5)
        try:
            for _ in range(200):
                cursor.execute("SELECT sum(range) FROM range(1000)").fetchall()
        except BaseException as error:  # noqa: BLE001 - collected for the assert below
            failures.append(error)
        finally:
            cursor.close()

    threads = [threading.Thread(target=reads) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    con.close()


def test_a_read_whose_work_is_in_its_fetch_has_the_time_limit_too() -> None:
    from runlytics.api import timed_reads
    from runlytics.warehouse.db import WarehouseError

    # DuckDB streams a result without ORDER BY or an aggregate: execute returns at once and
    # fetchall does the work (seconds unlimited), so the fetch runs under the read's deadline
    con = duckdb.connect()
    raw = con.cursor()
    limited = timed_reads.Cursor(raw, 0.2)
    started = time.monotonic()
    with pytest.raises(WarehouseError, match=r"^a read took longer than its time limit: 0\.2 s on DuckDB$"):
        limited.execute("SELECT range, range * 2 FROM range(300000000) WHERE range % 3 = 0").fetchall()
    assert time.monotonic() - started < 5
    # the interrupt stayed with its read: the same connection answers the next one
    assert timed_reads.Cursor(raw, 60).execute("SELECT 42").fetchall() == [(42,)]
    con.close()


class _SlowToReturn:
    """A DuckDB cursor whose execute returns only after a given time: the deadline falls after
    DuckDB's statement began returning, before the read's execute ended (a race made certain)."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection, pause: float) -> None:
        self.cursor = cursor
        self.pause = pause

    def execute(self, *args: Any) -> None:
        self.cursor.execute(*args)
        time.sleep(self.pause)

    def interrupt(self) -> None:
        self.cursor.interrupt()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.cursor, name)


def test_an_interrupt_at_the_end_of_execute_is_a_503_from_the_fetch() -> None:
    from runlytics.api import timed_reads
    from runlytics.warehouse.db import WarehouseError

    # the watchdog interrupts as execute ends: DuckDB raises it from the statement's fetch,
    # which is the same time limit (a 503), never a bare InterruptException (a 500)
    con = duckdb.connect()
    raw = con.cursor()
    limited = timed_reads.Cursor(_SlowToReturn(raw, 0.3), 0.05)  # type: ignore[arg-type]
    limited.execute("SELECT range FROM range(30000000) WHERE range % 3 = 0")
    with pytest.raises(WarehouseError, match=r"^a read took longer than its time limit: 0\.05 s on DuckDB$"):
        limited.fetchall()
    assert timed_reads.Cursor(raw, 60).execute("SELECT 42").fetchall() == [(42,)]
    con.close()


def test_unix_seconds_of_thousands_of_digits_are_out_of_range(
    duckdb_client: TestClient, lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # more digits than Python's int() reads (4,300): a traceback in the CLI, a 422 quoting Python
    text = "1" * 5000
    quoted = repr("1" * 100 + "…")
    response = duckdb_client.get(JOBS, params={"since": text})
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["msg"] == f"Value error, {quoted} is out of range: Unix seconds up to the year 9999"
    code = cli.main(["export", str(tmp_path / "out"), "--db", str(lab.db), "--since", text])
    assert code == cli.EXIT_USAGE
    assert (
        capsys.readouterr().err
        == f"runlytics export: --since {quoted} is out of range: Unix seconds up to the year 9999\n"
    )


ODD_BLANKS = ["\ufeffa", "a\x85", '"a,b"\ufeff,c', '\x1c"a,b"\x1c', " \u00a0a\u00a0 ", "a\u2028", '\t"x" ,\vy\f']


def test_the_api_and_the_dashboard_drop_the_same_blanks(monkeypatch: pytest.MonkeyPatch) -> None:
    # ASCII blanks only, on both sides: Python's isspace/strip took U+0085 and U+001C-U+001F for
    # blanks, the dashboard's \s and trim() a byte order mark and U+2028, so a list read apart
    import json
    import shutil
    import subprocess

    from runlytics.warehouse import job_lists

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    monkeypatch.setattr(job_lists.export, "unknown_jobs", lambda con, ids: list(ids))  # no job known: no join
    python = [job_lists.resolve(None, [value]) for value in ODD_BLANKS]  # type: ignore[arg-type]
    script = (
        "globalThis.location = {search: ''};"
        f"const m = await import({json.dumps((Path(__file__).parents[1] / 'api/static/common.js').as_uri())});"
        f"console.log(JSON.stringify({json.dumps(ODD_BLANKS)}.map((v) => m.parseJobIds([v]))));"
    )
    done = subprocess.run([node, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == python
    assert python[:4] == [["\ufeffa"], ["a\x85"], ['"a', 'b"\ufeff', "c"], ['\x1c"a', 'b"\x1c']]
    assert python[6] == ["x", "y"]


@pytest.mark.parametrize("argv", [["serve", "--read-timeout", "1e10"], ["sql", "SELECT 1", "--timeout", "3000000"]])
def test_a_time_limit_past_postgresqls_is_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    # PostgreSQL's statement_timeout holds at most 2^31-1 ms; DuckDB's watchdog thread died on a
    # wait past threading.TIMEOUT_MAX (1e10 s), which took every reader's limit with it
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    assert "at most 2000000 seconds (about 23 days)" in capsys.readouterr().err


def test_a_deadline_past_the_longest_wait_leaves_the_watchdog_working(tmp_path: Path) -> None:
    from runlytics.api import timed_reads

    con = duckdb.connect()
    far = timed_reads.Cursor(con.cursor(), 1e10)  # armed past threading.TIMEOUT_MAX
    # a read long enough for the thread to wait on its deadline
    assert far.execute("SELECT count(*) FROM range(200000000) t(i) WHERE i % 7 = 3").fetchall() == [(28571429,)]
    watchdog = timed_reads._WATCHDOG._thread
    assert watchdog is not None and watchdog.is_alive()
    near = timed_reads.Cursor(con.cursor(), 0.2)
    started = time.monotonic()
    with pytest.raises(Exception, match="took longer than its time limit: 0.2 s"):
        near.execute("SELECT count(*) FROM range(1000000000000) t(i) WHERE i % 7 = 3").fetchall()
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("value", ["", " , ,", ",", '" "', '""""', "\u00a0", "\x1c", '"a,b"', " a ", '""'])
def test_the_exports_check_for_no_id_reads_a_list_as_the_lists_do(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # `runlytics export --jobs` refuses a list naming no job before opening the warehouse: it
    # stripped Unicode blanks and every quote, and refused ids that job_lists reads (NBSP, U+001C,
    # a quoted blank, a quoted quote)
    from runlytics.warehouse import job_lists

    monkeypatch.setattr(job_lists.export, "unknown_jobs", lambda con, ids: list(ids))  # no job known: no join
    assert job_lists.names_any(value) is bool(job_lists.resolve(None, [value]))  # type: ignore[arg-type]
