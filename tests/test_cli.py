"""The runlytics command as cron and analysts run it: real processes, real warehouse files."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import deep_case

from runlytics.warehouse import db, sidefiles
from runlytics.warehouse.lock import run_lock

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples" / "jobs"


def runlytics(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runlytics", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        timeout=120,
    )


@pytest.fixture
def samples(tmp_path: Path) -> Path:
    root = tmp_path / "jobs"
    shutil.copytree(SAMPLES, root)
    for path in root.rglob("progress.json"):
        os.utime(path, (1_700_000_000, 1_700_000_000))  # settled files: not re-read when unchanged
    return root


def test_ingest_default_db_then_unchanged_rerun(tmp_path: Path, samples: Path) -> None:
    first = runlytics("ingest", str(samples), "--json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert (summary["files_seen"], summary["ingested"], summary["failed"], summary["rows"]) == (3, 3, 0, 6)
    assert (tmp_path / "runlytics.duckdb").exists()  # the default warehouse, created on first use

    again = json.loads(runlytics("ingest", str(samples), "--json", cwd=tmp_path).stdout)
    assert (again["ingested"], again["unchanged"], again["rows"]) == (0, 3, 0)


def test_quiet_prints_nothing_on_success(tmp_path: Path, samples: Path) -> None:
    result = runlytics("ingest", str(samples), "--quiet", cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_env_var_names_the_warehouse(tmp_path: Path, samples: Path) -> None:
    target = tmp_path / "elsewhere.duckdb"
    result = runlytics("ingest", str(samples), "--quiet", cwd=tmp_path, env={db.ENV_DB: str(target)})
    assert result.returncode == 0
    assert target.exists() and not (tmp_path / "runlytics.duckdb").exists()


def test_analytics_of_the_worked_example(tmp_path: Path, samples: Path) -> None:
    runlytics("ingest", str(samples), "--quiet", cwd=tmp_path)
    result = runlytics("analytics", "llama-sft-001", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    assert job["performance"]["average_samples_per_second"] == pytest.approx(4.2)
    assert job["efficiency"]["throughput_score"] == pytest.approx(84.0)
    assert job["efficiency"]["overall_score"] == pytest.approx(91.25)
    assert round(job["losses"]["loss_reduction_percent"], 1) == 86.9
    assert job["checkpoints"] == {
        "total_checkpoints": 2,
        "checkpoint_frequency_steps": 10.0,
        "final_checkpoint": "checkpoint-20",
        "best_checkpoint": "checkpoint-20",
    }


def test_analytics_unknown_job_exits_4(tmp_path: Path, samples: Path) -> None:
    runlytics("ingest", str(samples), "--quiet", cwd=tmp_path)
    result = runlytics("analytics", "no-such-job", cwd=tmp_path)
    assert result.returncode == 4
    assert "no-such-job" in result.stderr


def test_sql_formats(tmp_path: Path, samples: Path) -> None:
    runlytics("ingest", str(samples), "--quiet", cwd=tmp_path)
    query = "SELECT job_id, total_seconds FROM job_analytics ORDER BY job_id"
    as_json = json.loads(runlytics("sql", query, "--format", "json", cwd=tmp_path).stdout)
    assert as_json == [
        {"job_id": "legacy-gpt2-003", "total_seconds": 300.0},
        {"job_id": "llama-sft-001", "total_seconds": 25.0},
        {"job_id": "mistral-lora-002", "total_seconds": 360.0},
    ]
    as_csv = list(csv.reader(io.StringIO(runlytics("sql", query, "--format", "csv", cwd=tmp_path).stdout)))
    assert as_csv == [
        ["job_id", "total_seconds"],
        ["legacy-gpt2-003", "300.0"],
        ["llama-sft-001", "25.0"],
        ["mistral-lora-002", "360.0"],
    ]
    table = runlytics("sql", query, cwd=tmp_path).stdout.splitlines()
    assert table[0].split() == ["job_id", "total_seconds"]
    assert table[2].split() == ["legacy-gpt2-003", "300"]
    assert table[-1] == "(3 rows)"


def test_sql_json_is_plain_inside_lists_and_structs(tmp_path: Path, samples: Path) -> None:
    """NaN and infinity are null and a TIMESTAMP ISO with Z at any depth (docs/views.md), as at
    the top: a NaN in a list was a traceback, a time in a struct Python's str()."""
    runlytics("ingest", str(samples), "--quiet", cwd=tmp_path)
    query = (
        "SELECT ['nan'::DOUBLE, 1.5, 'inf'::DOUBLE] AS xs,"
        " {'at': TIMESTAMP '2026-01-01 00:00:10', 'v': [['-inf'::DOUBLE]]} AS s"
    )
    done = runlytics("sql", query, "--format", "json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [{"xs": [None, 1.5, None], "s": {"at": "2026-01-01T00:00:10Z", "v": [[None]]}}]


def test_sql_is_read_only_and_errors_exit_4(tmp_path: Path, samples: Path) -> None:
    runlytics("ingest", str(samples), "--quiet", cwd=tmp_path)
    bad = runlytics("sql", "SELECT no_such_column FROM jobs", cwd=tmp_path)
    assert bad.returncode == 4 and "no_such_column" in bad.stderr
    write = runlytics("sql", "DELETE FROM steps", cwd=tmp_path)
    assert write.returncode == 4 and "read-only" in write.stderr
    count = runlytics("sql", "SELECT count(*) AS n FROM steps", "--format", "json", cwd=tmp_path)
    assert json.loads(count.stdout) == [{"n": 6}]  # 7 entries, one step twice


def test_a_failed_file_exits_1_and_names_it(tmp_path: Path, samples: Path) -> None:
    bad = samples / "broken" / "progress.json"
    bad.parent.mkdir()
    bad.write_text('{"job_id": "broken", "history": [1, 2,, 3]}')
    result = runlytics("ingest", str(samples), cwd=tmp_path)
    assert result.returncode == 1
    assert str(bad) in result.stdout and "invalid JSON at line 1" in result.stdout
    assert "3 ingested" in result.stdout  # the others went in


def test_busy_lock_exits_75(tmp_path: Path, samples: Path) -> None:
    path = tmp_path / "runlytics.duckdb"
    runlytics("db", "upgrade", cwd=tmp_path)
    with run_lock(path, wait=0):
        result = runlytics("ingest", str(samples), "--wait", "0.2", cwd=tmp_path)
    assert result.returncode == 75
    assert "another ingest" in result.stderr


def test_newer_schema_exits_3(tmp_path: Path) -> None:
    assert runlytics("db", "upgrade", cwd=tmp_path).returncode == 0
    from runlytics.warehouse import snapshots

    for path in (tmp_path / "runlytics.duckdb", snapshots.latest(tmp_path / "runlytics.duckdb")):
        with db.connection(path) as con:
            con.execute("UPDATE alembic_version SET version_num = 'from_the_future'")
    result = runlytics("sql", "SELECT 1", cwd=tmp_path)
    assert result.returncode == 3
    assert "newer version" in result.stderr


def test_missing_root_is_a_usage_error(tmp_path: Path) -> None:
    result = runlytics("ingest", str(tmp_path / "nope"), cwd=tmp_path)
    assert result.returncode == 2
    assert "nope" in result.stderr


def test_a_reader_that_stops_early_gets_no_traceback(tmp_path: Path, samples: Path) -> None:
    assert runlytics("ingest", str(samples), "--db", str(tmp_path / "w.duckdb"), cwd=tmp_path).returncode == 0
    query = "SELECT range AS n FROM range(200000)"
    reader = subprocess.Popen(
        [sys.executable, "-m", "runlytics", "sql", query, "--db", str(tmp_path / "w.duckdb")],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert reader.stdout is not None and reader.stderr is not None
    reader.stdout.read(100)
    reader.stdout.close()  # like `| head`
    stderr = reader.stderr.read().decode()
    assert reader.wait(timeout=60) == 141
    assert "Traceback" not in stderr, stderr


def test_one_warning_is_singular(tmp_path: Path, samples: Path) -> None:
    result = runlytics("ingest", str(samples), "--db", str(tmp_path / "w.duckdb"), cwd=tmp_path)
    assert "; 6 step rows, 0 GPU samples, 1 warning, " in result.stdout, result.stdout


# --- a run with nothing to do (ingest/quick.py) ---------------------------------------------------

RUNS = "SELECT count(*) FROM ingest_runs"
QUICK = """
import sys
from runlytics import cli
code = cli.main(sys.argv[1:])
print("duckdb imported" if "duckdb" in sys.modules else "duckdb not imported", file=sys.stderr)
sys.exit(code)
"""


def quick_run(samples: Path, db_file: Path) -> tuple[dict[str, int], str]:
    done = subprocess.run(
        [sys.executable, "-c", QUICK, "ingest", str(samples), "--db", str(db_file), "--json"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), done.stderr.strip().splitlines()[-1]


def recorded_runs(db_file: Path) -> int:
    return db.connect(db_file, read_only=True).execute(RUNS).fetchone()[0]


def test_a_run_with_nothing_to_do_never_opens_the_warehouse(tmp_path: Path, samples: Path) -> None:
    db_file = tmp_path / "w.duckdb"
    first, imported = quick_run(samples, db_file)
    assert first["ingested"] == 3 and imported == "duckdb imported"
    again, imported = quick_run(samples, db_file)
    assert (again["files_seen"], again["unchanged"], again["ingested"]) == (3, 3, 0)
    assert imported == "duckdb not imported"
    assert recorded_runs(db_file) == 1  # the heartbeat has it; ingest_runs holds runs that read
    heartbeat = json.loads(sidefiles.heartbeat(db_file).read_text())
    assert heartbeat["outcome"] == "ok" and heartbeat["summary"]["unchanged"] == 3


# a checkpoint folder's change in deep runs only: every run checks a rewritten file and a written
# warehouse, and the checkpoint folders' own reading (tests/test_ingest_forms.py)
@pytest.mark.parametrize("change", ["file rewritten", deep_case("checkpoint folder"), "warehouse written"])
def test_any_change_takes_the_full_road(tmp_path: Path, samples: Path, change: str) -> None:
    db_file = tmp_path / "w.duckdb"
    quick_run(samples, db_file)
    job = next(p.parent for p in sorted(samples.rglob("progress.json")))
    if change == "file rewritten":
        path = job / "progress.json"
        path.write_text(path.read_text())  # same bytes, new mtime
        os.utime(path, (1_700_000_100, 1_700_000_100))
    elif change == "checkpoint folder":
        (job / "checkpoint-999999").mkdir()
    else:
        assert runlytics("db", "upgrade", "--db", str(db_file), cwd=tmp_path).returncode == 0
        con = db.connect(db_file)
        con.execute("CREATE TABLE analyst_notes (note VARCHAR)")
        con.close()
    summary, imported = quick_run(samples, db_file)
    assert imported == "duckdb imported" and recorded_runs(db_file) == 2
    assert summary["ingested"] == (1 if change == "file rewritten" else 0)
    if change == "checkpoint folder":
        con = db.connect(db_file, read_only=True)
        assert con.execute("SELECT count(*) FROM checkpoints WHERE step = 999999").fetchone()[0] == 1
