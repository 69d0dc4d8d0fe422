"""The command's answers to user mistakes, session 16's audit: one line (argparse's usage before it
where argparse refuses) and a non-zero exit, never a traceback nor a server's log. Numbers past
what the code can hold (insights --limit, --wait, sizes, days, the sampler's interval), a command
group without its subcommand, `sql`'s query errors, `serve` on a port in use or a host it can't
listen on. Each command runs as a process of its own, as cron and analysts run it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import free_port, serving

from runlytics.warehouse import db, migrate

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples" / "jobs"


def runlytics(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runlytics", *args],
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The only line of the command's stderr (it failed with nothing on stdout)."""
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stdout == "", done.stdout
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def refusal(done: subprocess.CompletedProcess[str]) -> str:
    """argparse's refusal: the command's usage, then one error line; that line."""
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert "Traceback" not in done.stderr and done.stderr.startswith("usage: "), done.stderr
    assert "\n\n" not in done.stderr, done.stderr  # no help text: the usage alone
    return done.stderr.splitlines()[-1]


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("s16") / "w.duckdb"
    done = runlytics("ingest", str(SAMPLES), "--db", str(path), "--quiet")
    assert done.returncode == 0, done.stderr
    return path


# --- 1: numbers past what the code holds: exit 2, one line -------------------------------------


@pytest.mark.parametrize("limit", ["9223372036854775806", "9223372036854775807", "99999999999999999999999", "10001"])
def test_insights_limit_past_the_apis_page_is_a_usage_error(warehouse: Path, limit: str) -> None:
    done = runlytics("insights", "--limit", limit, "--db", str(warehouse))
    assert done.returncode == 2, done.stderr
    assert one_line(done) == "runlytics insights: --limit must be at least 1 and at most 10000"


def test_insights_limit_of_the_apis_page_lists(warehouse: Path) -> None:
    done = runlytics("insights", "--limit", "10000", "--json", "--db", str(warehouse))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["next_cursor"] is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["status", "--wait", "1e308"], "argument --wait: at most 2000000 seconds (about 23 days): 1e308"),
        (["insights", "set", "stall.factor", "8", "--wait", "2000001"],
         "argument --wait: at most 2000000 seconds (about 23 days): 2000001"),
        (["ingest", "ROOT", "--max-file-mb", "1e308"], "argument --max-file-mb: at most 1048576 MiB (1 TiB): 1e308"),
        (["ingest", "ROOT", "--keep-raw-days", "800000"],
         "argument --keep-raw-days: at most 36500 days (100 years; 0 keeps everything): 800000"),
        (["ingest", "ROOT", "--keep-raw-days", "9" * 5000],
         f"argument --keep-raw-days: at most 36500 days (100 years; 0 keeps everything): {'9' * 5000}"),
        (["sample", "--job-id", "j", "--spool-max-mb", "1e308"],
         "argument --spool-max-mb: at most 1048576 MiB (1 TiB): 1e308"),
        (["serve", "--port", "9" * 5000], f"argument --port: not a port number (0 to 65535): {'9' * 5000}"),
        (["sql", "SELECT 1", "--timeout", "1e308"],
         "argument --timeout: at most 2000000 seconds (about 23 days): 1e308"),
    ],
)  # fmt: skip
def test_numbers_past_their_bound_are_refused(warehouse: Path, tmp_path: Path, argv: list[str], message: str) -> None:
    argv = [str(SAMPLES) if a == "ROOT" else a for a in argv]
    done = runlytics(*argv, "--db", str(tmp_path / "new.duckdb"), cwd=tmp_path)
    assert refusal(done).split(": error: ", 1)[1] == message
    assert not (tmp_path / "new.duckdb").exists()


def test_sample_interval_past_a_day_is_refused_before_nvml(tmp_path: Path) -> None:
    done = runlytics("sample", "--job-id", "j", "--spool", str(tmp_path / "s"), "--interval", "1e308")
    assert done.returncode == 2, done.stderr
    assert one_line(done) == (
        "runlytics sample: the interval must be at least 0.01 s and at most 86400 s (a day), not 1e+308"
    )


def test_a_sample_of_year_1_keeps_its_raw_window(tmp_path: Path) -> None:
    """The newest sample of year 1: its window of --keep-raw-days (30) would begin before year 1
    (a date Python has not); nothing is that old, so nothing is dropped."""
    spool = tmp_path / "spool"
    spool.mkdir()
    line = {"ts": "0001-01-03T00:00:00Z", "host": "h", "job_id": "j", "gpu_index": 0, "utilization_percent": 5.0}
    (spool / "a.jsonl").write_text(json.dumps(line) + "\n")
    done = runlytics("ingest", "--spool", str(spool), "--db", str(tmp_path / "w.duckdb"), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["gpu_samples"] == 1


# --- 2: a command group without its subcommand: its usage and one error line --------------------


def test_db_without_a_subcommand_is_its_usage_and_an_error() -> None:
    done = runlytics("db")
    assert refusal(done) == "runlytics db: error: the following arguments are required: {upgrade,copy}"
    assert done.stderr.startswith("usage: runlytics db ")


def test_runlytics_without_a_command_is_its_usage_and_an_error() -> None:
    done = runlytics()
    assert refusal(done).startswith("runlytics: error: the following arguments are required: {db,ingest,")


# --- 3: sql's query errors on one line, hints kept ----------------------------------------------


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("SELEC 1", 'Parser Error: syntax error at or near "SELEC"'),
        ("SELECT * FROM nope", 'Catalog Error: Table with name nope does not exist! Did you mean "'),
        ("SELECT 'a'::INT", "Conversion Error: Could not convert string 'a' to INT32"),
        ("SELECT jobid FROM jobs",
         'Binder Error: Referenced column "jobid" not found in FROM clause! Candidate bindings: "job_id"'),
    ],
)  # fmt: skip
def test_sql_errors_are_one_line(warehouse: Path, query: str, message: str) -> None:
    done = runlytics("sql", query, "--db", str(warehouse))
    assert done.returncode == 4, done.stderr
    line = one_line(done)
    assert line.startswith(f"runlytics sql: {message}"), line
    assert "LINE 1" not in line and "^" not in line


def test_sql_reading_a_file_not_allowed_is_one_line(warehouse: Path, tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("a\n1\n")
    done = runlytics("sql", f"SELECT * FROM read_csv('{tmp_path / 'x.csv'}')", "--db", str(warehouse))
    assert done.returncode == 4, done.stderr
    line = one_line(done)
    assert "file system operations are disabled" in line and line.endswith("(files: only under --allow-read folders)")


def test_sql_errors_on_postgresql_are_one_line_with_the_hint(pg_url: str) -> None:
    migrate.upgrade(db.PostgresUrl(pg_url))
    done = runlytics("sql", "SELECT jobid FROM jobs", "--db", pg_url)
    assert done.returncode == 4, done.stderr
    assert one_line(done) == (
        'runlytics sql: column "jobid" does not exist (Perhaps you meant to reference the column "jobs.job_id".)'
    )


# --- 4: serve where it can't listen: one line, nothing of uvicorn's -----------------------------


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another process listens on (this test's socket)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_serve_on_a_port_in_use_is_one_line(warehouse: Path, taken_port: int, host: str) -> None:
    done = runlytics("serve", "--db", str(warehouse), "--host", host, "--port", str(taken_port))
    assert done.returncode == 2, done.stderr
    assert one_line(done) == f"runlytics serve: port {taken_port} on {host} is in use"


def test_serve_on_a_host_that_does_not_resolve_is_one_line(warehouse: Path) -> None:
    port = free_port()
    done = runlytics("serve", "--db", str(warehouse), "--host", "999.1.1.1", "--port", str(port))
    assert done.returncode == 2, done.stderr
    assert one_line(done).startswith(f"runlytics serve: cannot listen on 999.1.1.1 port {port}: ")


def test_serve_still_says_where_it_listens(warehouse: Path) -> None:
    with serving(warehouse) as running:
        log = running.log.read_text()
    assert f"Uvicorn running on http://127.0.0.1:{running.port} (Press CTRL+C to quit)" in log
