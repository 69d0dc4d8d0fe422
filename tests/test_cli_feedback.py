"""What the command tells people: progress on a terminal, warnings listed, no warehouse made by a
read, DuckDB's boxes on a terminal, nvidia-smi logs still being written, and ingest --every."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runlytics.cli import ProgressLine, _clock
from runlytics.warehouse import db, sidefiles

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples" / "jobs"
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def runlytics(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runlytics", *args], cwd=cwd, capture_output=True, text=True, env=ENV, timeout=120
    )


def on_terminal(*args: str, cwd: Path, stream: str) -> tuple[int, str, str]:
    """Run runlytics with ``stream`` ('stdout' or 'stderr') on a pseudo terminal: (exit code, drawn, the other)."""
    master, slave = pty.openpty()
    other = subprocess.PIPE
    proc = subprocess.Popen(
        [sys.executable, "-m", "runlytics", *args], cwd=cwd, env=ENV, stdin=subprocess.DEVNULL,
        stdout=slave if stream == "stdout" else other, stderr=slave if stream == "stderr" else other,
    )  # fmt: skip
    os.close(slave)
    drawn = b""
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        drawn += chunk
    os.close(master)
    rest = proc.stdout if stream == "stderr" else proc.stderr
    assert rest is not None
    other_text = rest.read().decode()
    return proc.wait(timeout=60), drawn.decode(), other_text


@pytest.fixture
def samples(tmp_path: Path) -> Path:
    root = tmp_path / "jobs"
    shutil.copytree(SAMPLES, root)
    for path in root.rglob("progress.json"):
        os.utime(path, (1_700_000_000, 1_700_000_000))
    return root


# --- progress on a terminal --------------------------------------------------------------------------


def test_ingest_draws_its_phases_on_a_terminal(tmp_path: Path, samples: Path) -> None:
    code, drawn, stdout = on_terminal("ingest", str(samples), "--db", str(tmp_path / "w.duckdb"), cwd=tmp_path,
                                      stream="stderr")  # fmt: skip
    assert code == 0, drawn
    frames = [f.replace("\x1b[K", "").strip() for f in drawn.split("\r") if f.strip()]
    phases = [f.split()[0] for f in frames]
    # every phase, in order (a phase may be drawn more than once)
    assert list(dict.fromkeys(phases)) == ["discover", "read", "merge", "publish"], frames
    assert "discover [" + "#" * 30 + "] 3/3 files" in frames
    assert "merge    [" + "#" * 30 + "] 3/3 files" in frames
    assert frames[-1] == "publish  [" + "#" * 30 + "]"
    assert stdout.startswith(f"{tmp_path / 'w.duckdb'}: 3 files seen, 3 ingested"), stdout


@pytest.mark.parametrize("flag", ["--quiet", "--json"])
def test_quiet_and_json_draw_nothing_on_a_terminal(tmp_path: Path, samples: Path, flag: str) -> None:
    code, drawn, _ = on_terminal("ingest", str(samples), "--db", str(tmp_path / "w.duckdb"), flag, cwd=tmp_path,
                                 stream="stderr")  # fmt: skip
    assert (code, drawn) == (0, "")


def test_no_progress_when_stderr_is_not_a_terminal(tmp_path: Path, samples: Path) -> None:
    result = runlytics("ingest", str(samples), "--db", str(tmp_path / "w.duckdb"), cwd=tmp_path)
    assert (result.returncode, result.stderr) == (0, "")


def test_a_long_run_shows_its_eta() -> None:
    stream = io.StringIO()
    line = ProgressLine(stream)
    line("read", 3, 40)  # at once: no ETA yet
    line.began -= 10  # ten seconds into the run, a quarter done: 30 s to go
    line("read", 10, 40)
    line("merge", 40, 40)  # done: no ETA
    assert stream.getvalue().split("\r")[1:] == [
        "read     [##............................] 3/40 files\x1b[K",
        "read     [#######.......................] 10/40 files, ETA 0:30\x1b[K",
        "merge    [##############################] 40/40 files\x1b[K",
    ]


def test_eta_clock() -> None:
    assert [_clock(s) for s in (0, 12.4, 61, 3599.6, 3661)] == ["0:00", "0:12", "1:01", "1:00:00", "1:01:01"]


# --- warnings listed ----------------------------------------------------------------------------------


def many_warnings(root: Path, n: int) -> Path:
    """A job folder whose progress.json has ``n`` warnings: one unreadable utilization per step."""
    history = [
        {"step": s, "timestamp": 1_793_606_400 + 60 * s, "loss": 2.0, "samples_per_second": 10.0,
         "gpus": [{"index": 0, "utilization_percent": "n/a", "memory_used_mb": 1000}]}
        for s in range(1, n + 1)
    ]  # fmt: skip
    doc = {"status": "COMPLETED", "started_at": 1_793_606_400, "config": {"model_name": "m", "batch_size": 1},
           "current_step": n, "history": history}  # fmt: skip
    folder = root / "noisy"
    folder.mkdir(parents=True)
    (folder / "progress.json").write_text(json.dumps(doc))
    os.utime(folder / "progress.json", (1_700_000_000, 1_700_000_000))
    return folder


def test_the_summary_lists_the_first_20_warnings(tmp_path: Path) -> None:
    many_warnings(tmp_path / "jobs", 25)
    warehouse = str(tmp_path / "w.duckdb")
    text = runlytics("ingest", str(tmp_path / "jobs"), "--db", warehouse, cwd=tmp_path).stdout
    lines = text.splitlines()
    assert "; 25 step rows, 0 GPU samples, 25 warnings, " in lines[0], text
    assert lines[1] == "warnings:"
    path = tmp_path / "jobs" / "noisy" / "progress.json"
    messages = [
        f'history[{i}] (step {i + 1}) gpus[0]: utilization_percent "n/a" is not a number, dropped' for i in range(25)
    ]
    assert lines[2:22] == [f"  {path}: {m}" for m in messages[:20]], text
    assert lines[22:] == ["  … and 5 more (--json for all)"]

    status = runlytics("status", "--db", warehouse, cwd=tmp_path).stdout
    assert (
        f"warnings (25 in 1 file):\n  {path} (25 warnings):\n"
        + "\n".join("    " + m for m in messages[:3])
        + "\n  … and 22 more (--json for all)\n"
        in status
    ), status
    report = json.loads(runlytics("status", "--db", warehouse, "--json", cwd=tmp_path).stdout)
    [warned] = report["warning_files"]
    assert (warned["path"], warned["warning_count"], warned["warnings"]) == (str(path), 25, messages)


def test_json_lists_every_warning_of_the_run_only(tmp_path: Path) -> None:
    many_warnings(tmp_path / "jobs", 25)
    warehouse = str(tmp_path / "w.duckdb")
    summary = json.loads(runlytics("ingest", str(tmp_path / "jobs"), "--db", warehouse, "--json", cwd=tmp_path).stdout)
    assert summary["warnings"] == 25
    assert [w["message"].split(" ")[0] for w in summary["warning_list"]] == [f"history[{i}]" for i in range(25)]
    assert {w["path"] for w in summary["warning_list"]} == {str(tmp_path / "jobs" / "noisy" / "progress.json")}
    again = json.loads(runlytics("ingest", str(tmp_path / "jobs"), "--db", warehouse, "--json", cwd=tmp_path).stdout)
    assert (again["unchanged"], again["warnings"], again["warning_list"]) == (1, 0, [])


# --- read commands never create a warehouse -------------------------------------------------------------

READS = [
    ("sql", "FROM jobs"),
    ("analytics", "some-job"),
    ("status",),
    ("export", "out"),
    ("serve", "--port", "1"),
]


@pytest.mark.parametrize("command", READS, ids=[c[0] for c in READS])
def test_a_read_command_on_a_missing_warehouse_exits_3_and_creates_nothing(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    here = tmp_path / "here"
    here.mkdir()
    result = runlytics(*command, "--db", str(here / "none.duckdb"), cwd=here)
    assert result.returncode == 3, result.stderr
    prefix = f"runlytics {command[0]}: no warehouse at {here / 'none.duckdb'}: create it with"
    assert result.stderr.startswith(prefix), result.stderr
    assert list(here.iterdir()) == []
    # the default warehouse too
    default = runlytics(*command, cwd=here)
    assert (default.returncode, list(here.iterdir())) == (3, [])


# --- runlytics sql on a terminal -------------------------------------------------------------------------


def test_sql_draws_duckdbs_boxes_on_a_terminal_only(tmp_path: Path, samples: Path) -> None:
    warehouse = str(tmp_path / "w.duckdb")
    assert runlytics("ingest", str(samples), "--db", warehouse, "--quiet", cwd=tmp_path).returncode == 0
    query = "SELECT job_id FROM jobs ORDER BY job_id"
    code, drawn, stderr = on_terminal("sql", query, "--db", warehouse, cwd=tmp_path, stream="stdout")
    assert code == 0, stderr
    lines = drawn.replace("\r\n", "\n").splitlines()
    assert lines[0].startswith("┌") and lines[-1].startswith("└"), drawn
    assert [line.strip("│ ") for line in lines[1:3]] == ["job_id", "varchar"]
    assert lines[3].startswith("├")
    assert [line.strip("│ ") for line in lines[4:-1]] == ["legacy-gpt2-003", "llama-sft-001", "mistral-lora-002"]

    piped = runlytics("sql", query, "--db", warehouse, cwd=tmp_path).stdout
    assert "┌" not in piped and piped.endswith("(3 rows)\n"), piped
    code, drawn, _ = on_terminal("sql", query, "--db", warehouse, "--format", "csv", cwd=tmp_path, stream="stdout")
    assert drawn.replace("\r\n", "\n") == "job_id\nlegacy-gpt2-003\nllama-sft-001\nmistral-lora-002\n"


# --- an nvidia-smi log still being written -----------------------------------------------------------------

HEADER = "timestamp, index, utilization.gpu [%], power.draw [W]\n"


def smi_line(second: int, power: int) -> str:
    return f"2026/11/02 09:00:{second:02d}.000, 0, 50 %, {power} W"


def test_an_unterminated_last_line_is_left_for_the_next_run(tmp_path: Path) -> None:
    log = tmp_path / "gpu.csv"
    log.write_text(
        HEADER + smi_line(0, 100) + "\n" + smi_line(1, 101) + "\n" + smi_line(2, 105)[:-3]
    )  # mid-write: "…, 10"
    # changed seconds ago: past FRESH_SECONDS (it would get a fingerprint), not settled (a log that
    # has not changed for ledger.SETTLED_SECONDS has its last line read as final)
    then = time.time() - 10
    os.utime(log, (then, then))
    warehouse = tmp_path / "w.duckdb"
    args = ("ingest", "--nvidia-smi-csv", str(log), "--job-id", "j", "--db", str(warehouse))

    first = runlytics(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "; 0 step rows, 2 GPU samples, 0 warnings, " in first.stdout, first.stdout
    power = "SELECT power_w FROM gpu_samples ORDER BY ts"
    with db.connection(warehouse, read_only=True) as con:
        assert con.execute(power).fetchall() == [(100.0,), (101.0,)]
        # a fingerprint no stat has (read again next run), which still names the import's arguments
        ((fingerprint,),) = con.execute("SELECT fingerprint FROM ingest_files").fetchall()
        assert fingerprint.startswith("- ") and len(fingerprint.split(" ")) == 3

    # unchanged size and time, but not final: read again; the logger finished the line meanwhile
    with log.open("a") as f:
        f.write("5 W\n")
    os.utime(log, (then, then))
    second = json.loads(runlytics(*args, "--json", cwd=tmp_path).stdout)
    # the completed line's sample counted, the two read before not again (session 19), all 3 stored
    assert (second["ingested"], second["gpu_samples"], second["rows"], second["warnings"]) == (1, 1, 0, 0), second
    with db.connection(warehouse, read_only=True) as con:
        assert con.execute(power).fetchall() == [(100.0,), (101.0,), (105.0,)]
        assert con.execute("SELECT fingerprint IS NOT NULL FROM ingest_files").fetchall() == [(True,)]
    third = json.loads(runlytics(*args, "--json", cwd=tmp_path).stdout)
    assert (third["unchanged"], third["gpu_samples"]) == (1, 0)


# --- ingest --every --------------------------------------------------------------------------------------


def test_every_runs_until_sigterm_and_ends_between_runs(tmp_path: Path, samples: Path) -> None:
    warehouse = tmp_path / "w.duckdb"
    heartbeat = sidefiles.heartbeat(warehouse)
    proc = subprocess.Popen(
        [sys.executable, "-m", "runlytics", "ingest", "--every", "0.2", str(samples), "--db", str(warehouse)],
        cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    seen: set[str] = set()
    deadline = time.monotonic() + 90
    while len(seen) < 3 and time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError):
            seen.add(heartbeat.read_text())  # one heartbeat per run: each names its end time
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    assert len(seen) >= 3, "fewer than three runs seen"
    proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert time.monotonic() - sent < 30
    assert stderr == ""
    summaries = [line for line in stdout.splitlines() if line.startswith(str(warehouse))]
    assert len(summaries) >= 2 and summaries[0].startswith(f"{warehouse}: 3 files seen, 3 ingested"), stdout
    with db.connection(warehouse, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM ingest_runs WHERE outcome = 'running'").fetchone() == (0,)
        assert con.execute("SELECT count(*) FROM ingest_runs").fetchone()[0] >= 1


def test_every_exit_code_is_the_last_runs(tmp_path: Path, samples: Path) -> None:
    (samples / "bad").mkdir()
    (samples / "bad" / "progress.json").write_text("{not json")
    os.utime(samples / "bad" / "progress.json", (1_700_000_000, 1_700_000_000))
    warehouse = tmp_path / "w.duckdb"
    proc = subprocess.Popen(
        [sys.executable, "-m", "runlytics", "ingest", "--every", "30", "--quiet", str(samples), "--db", str(warehouse)],
        cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 90
    while not sidefiles.heartbeat(warehouse).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # while it waits for the next run: ends at once
    stdout, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "failed: " in stdout and "bad" in stdout, stdout  # --quiet still names the failure


def test_every_needs_a_positive_number(tmp_path: Path) -> None:
    result = runlytics("ingest", "--every", "0", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2 and "not a number of seconds above 0: 0" in result.stderr
