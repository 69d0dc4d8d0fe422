"""Session 20's audit of the command at its seams with the shell: Ctrl-C and --timeout on a long
`sql`, its output streamed, CSV's empty text and NULL, `--allow-read` beside the live warehouse,
a stdout that can't be written, Ctrl-C during start-up, `serve` on SIGTERM, blank warehouse
names, ingest's options of an nvidia-smi log, out of memory, `ingest --every` after a failed run,
and `insights set --db W NAME VALUE`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

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
