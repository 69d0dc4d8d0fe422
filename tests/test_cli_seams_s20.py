"""Session 20's audit of the command at its seams with the shell: Ctrl-C and --timeout on a long
`sql`, its output streamed, CSV's empty text and NULL, `--allow-read` beside the live warehouse,
a stdout that can't be written, Ctrl-C during start-up, `serve` on SIGTERM, blank warehouse
names, ingest's options of an nvidia-smi log, out of memory, `ingest --every` after a failed run,
and `insights set --db W NAME VALUE`."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from runlytics.warehouse import sidefiles, snapshots

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples" / "jobs"
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
RUNLYTICS = [sys.executable, "-m", "runlytics"]
# a query that runs for hours, in one aggregate (nothing to fetch until it ends), memory flat
ENDLESS = "SELECT sum(hash(range)) AS s FROM range(1000000000000)"


def runlytics(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RUNLYTICS, *args], cwd=cwd, capture_output=True, text=True, env=env or ENV, timeout=timeout)


def script(code: str, *args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``code`` run as a Python script with the command line ``args`` (a patch, then cli.entry())."""
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, env=ENV, timeout=timeout
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("seams")
    path = folder / "w.duckdb"
    done = runlytics("ingest", str(SAMPLES), "--db", str(path), "--quiet", cwd=folder)
    assert done.returncode == 0, done.stderr
    return path


@pytest.fixture
def warehouse(built: Path, tmp_path: Path) -> Path:
    """A warehouse of the sample jobs in a folder of this test's own, with its snapshot."""
    path = tmp_path / "w.duckdb"
    shutil.copyfile(built, path)
    shutil.copytree(sidefiles.snapshots(built), sidefiles.snapshots(path))
    return path


def one_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def has_open(pid: int, path: Path) -> bool:
    """Whether process ``pid`` holds ``path`` open (Linux: /proc)."""
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for name in names:
        try:
            if os.readlink(f"/proc/{pid}/fd/{name}") == str(path):
                return True
        except OSError:
            continue
    return False


def started_query(warehouse: Path, *args: str) -> subprocess.Popen[str]:
    """`runlytics sql` of ENDLESS, once it has opened the snapshot (its query starts right after)."""
    snapshot = snapshots.latest(warehouse)
    assert snapshot is not None
    proc = subprocess.Popen(
        [*RUNLYTICS, "sql", "--db", str(warehouse), "--format", "csv", *args, ENDLESS],
        cwd=warehouse.parent, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not has_open(proc.pid, snapshot.resolve()) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, proc.communicate()
    time.sleep(0.5)  # into the query
    return proc


def ended(proc: subprocess.Popen[str], within: float) -> tuple[int, str, str]:
    """The exit code and output of ``proc`` if it ends within ``within`` seconds; else it is
    killed, and the test fails."""
    try:
        out, err = proc.communicate(timeout=within)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"still running {within} s on")
    return proc.returncode, out, err


# --- a: Ctrl-C stops a long query at once ----------------------------------------------------------


def test_ctrl_c_stops_a_long_duckdb_query_at_once(warehouse: Path) -> None:
    proc = started_query(warehouse)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    code, out, err = ended(proc, within=15)
    assert (code, one_line(err)) == (130, "runlytics sql: interrupted")
    assert time.monotonic() - sent < 10


def test_ctrl_c_stops_a_long_postgresql_query_at_once(pg_url: str, tmp_path: Path) -> None:
    # psycopg cancels the query on the server (a guard: this held before the audit too)
    proc = subprocess.Popen(
        [*RUNLYTICS, "sql", "--db", pg_url, "--format", "csv", "SELECT pg_sleep(600)"],
        cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    import psycopg

    deadline = time.monotonic() + 60
    with psycopg.connect(pg_url, autocommit=True) as watch:
        while time.monotonic() < deadline and proc.poll() is None:
            running = watch.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(600)%' AND state = 'active'"
            ).fetchone()
            if running and running[0]:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        code, _, err = ended(proc, within=30)
        assert (code, one_line(err)) == (130, "runlytics sql: interrupted")
        left = watch.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(600)%'")
        assert left.fetchone() == (0,)  # cancelled on the server, not left running


# --- b: --timeout on DuckDB ------------------------------------------------------------------------


def test_timeout_stops_a_duckdb_query_as_on_postgresql(warehouse: Path) -> None:
    began = time.monotonic()
    done = runlytics(
        "sql", "--db", str(warehouse), "--timeout", "1", "--format", "csv", ENDLESS, cwd=warehouse.parent, timeout=60
    )
    assert done.returncode == 4, done.stderr
    assert one_line(done.stderr).startswith("runlytics sql: stopped after 1 s (--timeout): ")
    assert time.monotonic() - began < 60 and done.stdout == ""
    # a query within its time answers as before
    done = runlytics(
        "sql", "--db", str(warehouse), "--timeout", "30", "--format", "csv", "SELECT 7 AS n", cwd=warehouse.parent
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "n\n7\n", "")


def test_timeout_help_names_both_engines() -> None:
    done = runlytics("sql", "--help", cwd=REPO)
    assert "on DuckDB or PostgreSQL" in " ".join(done.stdout.split())


# --- c: CSV and JSON stream ------------------------------------------------------------------------

ROWS = 2_000_000
WIDE = f"SELECT range AS n, repeat('x', 100) AS pad FROM range({ROWS})"


def peak_kib(*args: str, cwd: Path) -> tuple[int, int]:
    """The exit code and peak resident memory (KiB) of the command, its output thrown away."""
    proc = subprocess.Popen([*RUNLYTICS, *args], cwd=cwd, env=ENV, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_csv_and_json_hold_no_whole_result_in_memory(warehouse: Path, fmt: str) -> None:
    small_code, small = peak_kib("sql", "--db", str(warehouse), "--format", fmt, "SELECT 1 AS n", cwd=warehouse.parent)
    code, big = peak_kib("sql", "--db", str(warehouse), "--format", fmt, WIDE, cwd=warehouse.parent)
    assert small_code == code == 0
    # the whole result as Python rows is about 500 MB; streamed, what DuckDB and a batch hold
    assert big - small < 200 * 1024, (small, big)


def test_streamed_json_is_the_whole_array(warehouse: Path) -> None:
    done = runlytics(
        "sql", "--db", str(warehouse), "--format", "json", "SELECT range AS n FROM range(25000)", cwd=warehouse.parent
    )
    import json

    assert json.loads(done.stdout) == [{"n": n} for n in range(25000)]
    empty = runlytics(
        "sql", "--db", str(warehouse), "--format", "json", "SELECT 1 AS n WHERE false", cwd=warehouse.parent
    )
    assert empty.stdout == "[]\n"


# --- d: --allow-read never reaches the live warehouse ----------------------------------------------


def test_allow_read_beside_the_warehouse_never_opens_it(warehouse: Path) -> None:
    folder = warehouse.parent
    (folder / "costs").mkdir()
    duckdb.sql(f"COPY (SELECT 'llama-sft-001' AS job_id, 12.5 AS usd) TO '{folder}/costs/usd.parquet'")
    shutil.copyfile(folder / "costs" / "usd.parquet", folder / "usd.parquet")
    (folder / "link.duckdb").symlink_to(warehouse)
    os.link(warehouse, folder / "hard.duckdb")
    for query in (
        "FROM read_duckdb('w.duckdb', table_name = 'jobs') SELECT count(*)",
        "FROM 'w.duckdb' SELECT count(*)",
        "FROM read_duckdb('*.duckdb', table_name = 'jobs') SELECT count(*)",
        "FROM 'link.duckdb' SELECT count(*)",
        "FROM 'hard.duckdb' SELECT count(*)",
        f"FROM read_duckdb('{folder}/w.duckdb', table_name = 'jobs') SELECT count(*)",
        "FROM 'w.duckdb.snapshots/*.duckdb' SELECT count(*)",
        "FROM read_text('w.duckdb.last-ingest.json')",
    ):
        done = runlytics("sql", "--db", "w.duckdb", "--allow-read", ".", "--format", "csv", query, cwd=folder)
        assert done.returncode == 4, (query, done.stdout)
        assert "Permission Error" in one_line(done.stderr), query
    # the rest of the folder reads as before: its files by name, its folders whole
    for query in (
        "FROM 'usd.parquet' SELECT usd",
        "FROM 'costs/*.parquet' SELECT usd",
        "FROM 'costs/usd.parquet' SELECT usd",
    ):
        done = runlytics("sql", "--db", "w.duckdb", "--allow-read", ".", "--format", "csv", query, cwd=folder)
        assert (done.returncode, done.stdout) == (0, "usd\n12.5\n"), (query, done.stderr)
    # the same from the folder above it
    done = runlytics(
        "sql", "--db", str(warehouse), "--allow-read", str(folder.parent), "--format", "csv",
        f"FROM read_duckdb('{warehouse}', table_name = 'jobs') SELECT count(*)", cwd=folder,
    )  # fmt: skip
    assert done.returncode == 4 and "Permission Error" in done.stderr


# --- e: CSV keeps an empty text apart from NULL ----------------------------------------------------


def test_csv_writes_an_empty_text_and_null_apart_as_export_does(warehouse: Path) -> None:
    query = "SELECT '' AS a, NULL AS b, 'x,y' AS c, 'r' || chr(13) || 's' AS d UNION ALL SELECT NULL, '', 'q\"', 't'"
    done = subprocess.run(
        [*RUNLYTICS, "sql", "--db", str(warehouse), "--format", "csv", query], capture_output=True, env=ENV, timeout=120
    )  # bytes: text mode would read the carriage return as a line end
    assert done.returncode == 0, done.stderr
    assert done.stdout == b'a,b,c,d\n"",,"x,y","r\rs"\n,"","q""",t\n'
    out = warehouse.parent / "out.csv"
    out.write_bytes(done.stdout)
    back = duckdb.sql(f"FROM read_csv('{out}', allow_quoted_nulls = false, all_varchar = true)").fetchall()
    assert back == [("", None, "x,y", "r\rs"), (None, "", 'q"', "t")]


# --- f: a stdout that can't be written ----------------------------------------------------------


def closed_stdout(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-c", 'exec "$@" >&-', "sh", *RUNLYTICS, *args], cwd=cwd, capture_output=True, text=True, env=ENV,
        timeout=120,
    )  # fmt: skip


def full_stdout(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    with open("/dev/full", "w") as full:
        return subprocess.run(
            [*RUNLYTICS, *args], cwd=cwd, stdout=full, stderr=subprocess.PIPE, text=True, env=ENV, timeout=120
        )


def test_a_stdout_that_cannot_be_written_is_one_line_and_exit_74(warehouse: Path, tmp_path: Path) -> None:
    db = str(warehouse)
    fresh = str(tmp_path / "fresh.duckdb")
    for run, args, why in (
        (full_stdout, ["ingest", str(SAMPLES), "--db", fresh], "No space left on device"),
        (full_stdout, ["sql", "--db", db, "SELECT 1"], "No space left on device"),
        (full_stdout, ["status", "--db", db], "No space left on device"),
        (full_stdout, ["analytics", "--db", db, "llama-sft-001"], "No space left on device"),
        (closed_stdout, ["sql", "--db", db, "SELECT 1"], "Bad file descriptor"),
        (closed_stdout, ["ingest", str(SAMPLES), "--db", db, "--json"], "Bad file descriptor"),
    ):
        done = run(*args, cwd=tmp_path)
        assert done.returncode == 74, (args, done.stderr)
        assert one_line(done.stderr) == f"runlytics {args[0]}: could not write to stdout: {why}", args
    # the ingest that could not print its summary stored its run
    done = runlytics("sql", "--db", fresh, "--format", "csv", "SELECT count(*) AS n FROM jobs", cwd=tmp_path)
    assert done.stdout == "n\n3\n"
    # printing nothing, a closed stdout is no failure; --help on a full disk is
    assert closed_stdout("ingest", str(SAMPLES), "--db", db, "--quiet", cwd=tmp_path).returncode == 0
    done = full_stdout("--help", cwd=tmp_path)
    assert (done.returncode, one_line(done.stderr)) == (
        74,
        "runlytics: could not write to stdout: No space left on device",
    )


# --- g: Ctrl-C during start-up -----------------------------------------------------------------

# Ctrl-C as the console script's import of the command lands on a module: the parser's, say
INTERRUPTED_IMPORT = """
import sys

class Interrupt:
    def find_spec(self, name, path=None, target=None):
        if name == "runlytics.cli.parser":
            raise KeyboardInterrupt
        return None

sys.meta_path.insert(0, Interrupt())
from runlytics.cli import entry
entry()
"""


def test_ctrl_c_during_the_imports_at_start_up_is_one_line(tmp_path: Path) -> None:
    done = script(INTERRUPTED_IMPORT, "status", cwd=tmp_path)
    assert (done.returncode, one_line(done.stderr)) == (130, "runlytics: interrupted")


def test_the_module_the_console_script_imports_is_tiny(tmp_path: Path) -> None:
    done = script(
        "import sys, runlytics.cli; print(sorted(m for m in sys.modules if m.startswith('runlytics')))", cwd=tmp_path
    )
    assert done.stdout.strip() == "['runlytics', 'runlytics.cli', 'runlytics.cli.exits', 'runlytics.cli.streams']"


# --- h: serve on SIGTERM -----------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_stops_gracefully_with_exit_0_on_sigint_and_sigterm(warehouse: Path, sig: signal.Signals) -> None:
    proc = subprocess.Popen(
        [*RUNLYTICS, "serve", "--db", str(warehouse), "--port", "0"],
        cwd=warehouse.parent, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    said = ""
    deadline = time.monotonic() + 60
    while "Application startup complete" not in said and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        said += line
    assert "Application startup complete" in said, said
    proc.send_signal(sig)
    code, _, rest = ended(proc, within=30)
    assert code == 0, rest
    assert "Application shutdown complete" in rest


# --- i: a blank warehouse name -----------------------------------------------------------------


def test_a_blank_db_or_runlytics_db_is_refused_and_creates_nothing(tmp_path: Path) -> None:
    for args, env, said in (
        (["ingest", str(SAMPLES), "--db", " "], ENV, "runlytics ingest: --db ' ' is blank"),
        (["ingest", str(SAMPLES), "--db", ""], ENV, "runlytics ingest: --db '' is blank"),
        (["status", "--db", "  "], ENV, "runlytics status: --db '  ' is blank"),
        (["ingest", str(SAMPLES)], {**ENV, "RUNLYTICS_DB": " "}, "runlytics ingest: $RUNLYTICS_DB ' ' is blank"),
        (["sql", "SELECT 1"], {**ENV, "RUNLYTICS_DB": "\t"}, "runlytics sql: $RUNLYTICS_DB '\\t' is blank"),
    ):
        done = runlytics(*args, cwd=tmp_path, env=env)
        assert done.returncode == 2, (args, done.stderr)
        assert one_line(done.stderr).startswith(said), done.stderr
    assert list(tmp_path.iterdir()) == []


# --- j: an nvidia-smi log's options without the log --------------------------------------------


@pytest.mark.parametrize(
    "options", [["--job-id", "x"], ["--timezone", "Europe/Berlin"], ["--host", "h"], ["--columns", "a,b"]]
)
def test_an_nvidia_smi_logs_options_without_the_log_are_refused(options: list[str], tmp_path: Path) -> None:
    done = runlytics("ingest", str(SAMPLES), *options, "--db", str(tmp_path / "w.duckdb"), cwd=tmp_path)
    assert done.returncode == 2
    assert (
        one_line(done.stderr)
        == f"runlytics ingest: {options[0]} describes an --nvidia-smi-csv log: name the log, or leave them out"
    )
    assert not (tmp_path / "w.duckdb").exists()


# --- k: out of memory, and --every after any failed run ------------------------------------------

OUT_OF_MEMORY_INGEST = """
import runlytics.ingest.pipeline as pipeline

def ingest(*args, **kwargs):
    raise MemoryError

pipeline.ingest = ingest
from runlytics import cli
cli.entry()
"""

# DuckDB's own out of memory: a limit the query can't fit in (nothing spills: readonly.lock_down)
OUT_OF_MEMORY_SQL = """
from runlytics.warehouse import readonly
lock_down = readonly.lock_down

def small(con, *args, **kwargs):
    con.execute("SET memory_limit = '40MB'")
    lock_down(con, *args, **kwargs)

readonly.lock_down = small
from runlytics import cli
cli.entry()
"""


def test_out_of_memory_is_one_line_and_exit_71(tmp_path: Path) -> None:
    done = script(OUT_OF_MEMORY_INGEST, "ingest", str(SAMPLES), "--db", str(tmp_path / "w.duckdb"), cwd=tmp_path)
    assert done.returncode == 71, done.stderr
    assert one_line(done.stderr) == (
        "runlytics ingest: out of memory: stopped; nothing stored was lost (every write is a transaction)"
    )


def test_sql_out_of_memory_is_one_line_without_settings_and_exit_71(warehouse: Path, tmp_path: Path) -> None:
    # DuckDB's next lines suggest `SET memory_limit`, which sql refuses
    query = "SELECT count(DISTINCT range) FROM range(50000000)"
    done = script(OUT_OF_MEMORY_SQL, "sql", "--db", str(warehouse), "--format", "csv", query, cwd=tmp_path)
    assert done.returncode == 71, done.stderr
    line = one_line(done.stderr)
    assert line.startswith("runlytics sql: out of memory (Out of Memory Error: ") and "SET" not in line, line


# the first run a bug, the second out of memory, the third the same bug, then real runs
FAILING_RUNS = """
import itertools
from runlytics.cli import ingest as command

real = command._ingest_once
count = itertools.count()

def once(args):
    n = next(count)
    if n in (0, 2):
        raise ValueError("a bug")
    if n == 1:
        raise MemoryError
    return real(args)

command._ingest_once = once
from runlytics import cli
cli.entry()
"""


def test_every_survives_a_failed_run_of_any_kind(tmp_path: Path) -> None:
    warehouse = tmp_path / "w.duckdb"
    proc = subprocess.Popen(
        [sys.executable, "-c", FAILING_RUNS, "ingest", "--every", "0.2", "--quiet", str(SAMPLES), "--db",
         str(warehouse)],
        cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 90
    while not sidefiles.heartbeat(warehouse).exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    code, _, err = ended(proc, within=60)
    assert code == 0, err  # the last run's
    assert err.count("Traceback") == 1 and "ValueError: a bug" in err
    assert "runlytics ingest: out of memory: stopped; nothing stored was lost" in err
    assert re.search(r"runlytics ingest: ValueError: a bug \(a bug: its traceback was said above; going on\)", err)


# --- l: insights set with its options first ----------------------------------------------------


def test_insights_set_takes_options_before_name_and_value(warehouse: Path) -> None:
    for args in (
        ["insights", "set", "--db", str(warehouse), "loss_spike.mad_factor", "8"],
        ["insights", "set", "loss_spike.mad_factor", "--db", str(warehouse), "9"],
        ["insights", "--db", str(warehouse), "set", "loss_spike.mad_factor", "10"],
    ):
        done = runlytics(*args, cwd=warehouse.parent)
        assert done.returncode == 0, (args, done.stderr)
    done = runlytics("insights", "thresholds", "--db", str(warehouse), "--json", cwd=warehouse.parent)
    assert '"loss_spike.mad_factor": 10' in done.stdout
    done = runlytics(
        "insights", "set", "--db", str(warehouse), "loss_spike.mad_factor", "8", "--bogus", cwd=warehouse.parent
    )
    assert done.returncode == 2 and "unrecognized arguments: " in done.stderr and "--bogus" in done.stderr


def test_streamed_json_is_byte_for_byte_the_whole_lists_dump(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import datetime
    import decimal
    import json

    from runlytics.cli import output
    from runlytics.warehouse import queries

    columns = ["a", "b", "c", ""]
    rows = [
        (1.5, "\n", {"q": {}}, "é"),
        (float("nan"), None, [], datetime.datetime(2024, 1, 1)),
        (decimal.Decimal("2.5"), b"x", (1, [2]), '"'),
        *[(i, str(i), None, [i]) for i in range(30)],
    ]
    for batch in (1, 7, 1000):
        monkeypatch.setattr(output, "JSON_BATCH", batch)
        for some in (rows, rows[:1], []):
            output._write_rows(columns, iter(some), "json")
            records = [{c: queries.plain(v) for c, v in zip(columns, row, strict=True)} for row in some]
            assert capsys.readouterr().out == json.dumps(records, indent=2, default=str, allow_nan=False) + "\n"
