"""Session 18's audit of the docs against the command: what a refused writer leaves beside the
file it was given (no ``.unpublished`` marker, no lock file beside a file that is no warehouse),
and what readers then say."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_cli_s14 import run

from runlytics import cli
from runlytics.cli import db_commands
from runlytics.cli import insights as insights_command
from runlytics.warehouse import db, lock, sidefiles, snapshots

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples" / "jobs"
COUNT_JOBS = "SELECT count(*) AS n FROM jobs"


def beside(path: Path) -> set[str]:
    """The names runlytics left beside ``path`` (the path itself left out)."""
    return {p.name for p in path.parent.iterdir() if p.name.startswith(path.name) and p != path}


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A warehouse of the sample jobs, ingested once for the module (tests copy its file)."""
    folder = tmp_path_factory.mktemp("s18")
    path = folder / "w.duckdb"
    assert cli.main(["ingest", str(SAMPLES), "--db", str(path), "--quiet"]) == 0
    return path


def bare_copy(warehouse: Path, tmp_path: Path) -> Path:
    """The warehouse file alone (restored from a backup, say): no snapshot, no marker beside it."""
    path = tmp_path / "w.duckdb"
    shutil.copyfile(warehouse, path)
    return path


# --- finding 2: the unpublished marker only once the warehouse is checked and about to be written --


def test_a_refused_upgrade_leaves_no_marker_and_readers_still_read(
    warehouse: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = bare_copy(warehouse, tmp_path)
    assert run(capsys, "sql", COUNT_JOBS, "--db", str(path), "--format", "csv") == (0, "n\n3\n", "")
    code, out, err = run(capsys, "db", "upgrade", "--revision", "0001", "--db", str(path))
    assert code == 2 and "never downgrades" in err, err
    assert not snapshots.unpublished(path).exists()
    assert run(capsys, "sql", COUNT_JOBS, "--db", str(path), "--format", "csv") == (0, "n\n3\n", "")


def test_a_warehouse_of_a_newer_runlytics_gets_no_marker(
    warehouse: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = bare_copy(warehouse, tmp_path)
    with db.connection(path) as con:
        con.execute("UPDATE alembic_version SET version_num = '9999'")
    for argv in (["ingest", str(SAMPLES)], ["insights", "set", "loss_spike.mad_factor", "8"], ["db", "upgrade"]):
        code, out, err = run(capsys, *argv, "--db", str(path))
        assert code == 3 and "newer version" in err, (argv, err)
        assert not snapshots.unpublished(path).exists(), argv


@pytest.mark.parametrize("kind", ["text", "folder", "random", "empty"])
def test_a_file_that_is_no_warehouse_is_refused_with_nothing_left_beside_it(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "notes.txt"
    if kind == "folder":
        path.mkdir()
    else:
        path.write_bytes({"text": b"hello\n", "random": bytes(range(256)) * 20, "empty": b""}[kind])
    writers = (["ingest", str(SAMPLES)], ["db", "upgrade"], ["insights", "set", "loss_spike.mad_factor", "8"])
    readers = (["analytics", "llama-sft-001"], ["sql", COUNT_JOBS], ["status"])
    for argv in (*writers, *readers, *writers):  # a writer again: what the first left changes nothing
        code, out, err = run(capsys, *argv, "--db", str(path))
        assert beside(path) == set(), argv  # no lock file, no marker
        assert code == 3 and out == "", (argv, out)
        assert len(err.strip().splitlines()) == 1, (argv, err)
        assert "not a DuckDB database file" in err, (argv, err)
    # a marker an earlier runlytics left there is no run's: readers say what the file is
    snapshots.unpublished(path).touch()
    for argv in readers:
        code, out, err = run(capsys, *argv, "--db", str(path))
        assert code == 3 and "not a DuckDB database file" in err and "no snapshot" not in err, (argv, err)


def test_a_killed_first_run_still_keeps_readers_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The marker's purpose stays: no snapshot yet and the marker beside a real warehouse (a first
    ingest killed before its publish) refuses readers rather than opening the file."""
    path = tmp_path / "w.duckdb"
    assert run(capsys, "db", "upgrade", "--db", str(path))[0] == 0
    shutil.rmtree(sidefiles.snapshots(path))
    snapshots.mark_unpublished(path)
    code, out, err = run(capsys, "sql", COUNT_JOBS, "--db", str(path))
    assert code == 3 and "no snapshot" in err, err


# --- finding 3: a snapshots folder that can't be used: exit 3 in one line, no commit first --------

READERS = (
    ["analytics", "llama-sft-001"], ["status"], ["insights"], ["sql", COUNT_JOBS], ["export", "OUT"],
)  # fmt: skip
WRITERS = (["ingest", str(SAMPLES)], ["insights", "set", "loss_spike.mad_factor", "8"], ["db", "upgrade"])
# the command each message names: "runlytics COMMAND: …"
COMMANDS = {"analytics": "analytics", "status": "status", "insights": "insights", "sql": "sql", "export": "export",
            "ingest": "ingest", "db": "db upgrade"}  # fmt: skip


def ingest_runs(path: Path) -> int:
    with db.connection(path, read_only=True) as con:
        return int(db.one(con, "SELECT count(*) FROM ingest_runs")[0])


def check_refused(capsys: pytest.CaptureFixture[str], path: Path, tmp_path: Path, why: str) -> None:
    runs = ingest_runs(path)
    for argv in (*READERS, *WRITERS):
        argv = [str(tmp_path / "out") if word == "OUT" else word for word in argv]
        code, out, err = run(capsys, *argv, "--db", str(path))
        assert (code, out) == (3, ""), (argv, code, out)
        command = "insights set" if argv[:2] == ["insights", "set"] else COMMANDS[argv[0]]
        assert err.strip().splitlines() == [
            f"runlytics {command}: cannot use warehouse {path}: its snapshots folder {sidefiles.snapshots(path)}: "
            f"{why} "
            "(it must be a folder this user may read, and a writer write in)"
        ], argv
    assert ingest_runs(path) == runs  # the ingest refused before its first commit
    assert not snapshots.unpublished(path).exists()
    assert not (tmp_path / "out").exists()


def test_a_file_in_place_of_the_snapshots_folder(
    warehouse: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = bare_copy(warehouse, tmp_path)
    sidefiles.snapshots(path).write_text("x\n")
    check_refused(capsys, path, tmp_path, "Not a directory")


def test_a_snapshots_folder_this_user_may_not_read(
    warehouse: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """chmod 000 as a user without CAP_DAC_OVERRIDE (the tests may run as root): the listing and
    the access check are refused for that folder alone."""
    path = bare_copy(warehouse, tmp_path)
    folder = sidefiles.snapshots(path)
    shutil.copytree(sidefiles.snapshots(warehouse), folder)
    real_scandir, real_access = os.scandir, os.access

    def scandir(target: Any) -> Any:
        if Path(target) == folder:
            raise PermissionError(errno.EACCES, "Permission denied", str(target))
        return real_scandir(target)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "access", lambda target, mode, **kw: Path(target) != folder and real_access(target, mode))
    check_refused(capsys, path, tmp_path, "Permission denied")


def test_a_snapshots_folder_this_user_may_read_but_not_write(
    warehouse: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """chmod 500: readers read; writers are refused before their first commit (the publish after
    it could not happen)."""
    path = bare_copy(warehouse, tmp_path)
    folder = sidefiles.snapshots(path)
    shutil.copytree(sidefiles.snapshots(warehouse), folder)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda target, mode, **kw: Path(target) != folder and real_access(target, mode))
    runs = ingest_runs(path)
    assert run(capsys, "sql", COUNT_JOBS, "--db", str(path), "--format", "csv") == (0, "n\n3\n", "")
    for argv in WRITERS:
        code, out, err = run(capsys, *argv, "--db", str(path))
        assert code == 3 and "Permission denied" in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert ingest_runs(path) == runs
    assert not snapshots.unpublished(path).exists()


# --- finding 4: the table output and `insights set` show doubles in full ------------------------


def test_the_table_shows_doubles_in_full(warehouse: Path, capsys: pytest.CaptureFixture[str]) -> None:
    query = (
        "SELECT 1645323.0::DOUBLE AS whole, 0.1::DOUBLE + 0.2::DOUBLE AS sum, 1e300::DOUBLE AS big, "
        "'nan'::DOUBLE AS nan, 2.0::DOUBLE ^ 60 AS past_2_53, 42 AS int"
    )
    code, out, err = run(capsys, "sql", query, "--db", str(warehouse), "--format", "table")
    assert code == 0, err
    assert out.splitlines()[2].split() == [
        "1645323", "0.30000000000000004", "1e+300", "nan", "1.152921504606847e+18", "42"
    ]  # fmt: skip


def test_a_threshold_set_and_listed_in_full(
    warehouse: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = bare_copy(warehouse, tmp_path)
    for name, value in (("silent_running.min_seconds", "1234567"), ("loss_spike.mad_factor", "8.123456789")):
        assert run(capsys, "insights", "set", name, value, "--db", str(path)) == (
            0, f"{path}: {name} = {value}; insights recomputed\n", ""
        )  # fmt: skip
    code, out, _ = run(capsys, "insights", "thresholds", "--db", str(path))
    rows = dict(line.split() for line in out.splitlines()[2:-1])
    assert (rows["silent_running.min_seconds"], rows["loss_spike.mad_factor"]) == ("1234567", "8.123456789")
    code, out, _ = run(capsys, "insights", "--db", str(path))
    assert "silent_running.min_seconds=1234567," in out and "loss_spike.mad_factor=8.123456789," in out


# --- finding 5: the summary's step rows are the rows stored, as status counts them ----------------


def test_the_summary_and_status_count_the_same_step_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "jobs"
    shutil.copytree(SAMPLES, root)  # mistral-lora-002's `latest` repeats its history's step 300
    repeats = root / "repeats" / "progress.json"  # a history holding step 2 twice, and a latest of it
    repeats.parent.mkdir()
    repeats.write_text(
        json.dumps({
            "job_id": "repeats", "status": "completed",
            "history": [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}, {"step": 2, "loss": 1.4}],
            "latest": {"step": 2, "loss": 1.4},
        })
    )  # fmt: skip
    path = tmp_path / "w.duckdb"
    code, out, err = run(capsys, "ingest", str(root), "--db", str(path), "--json")
    assert code == 0, err
    summary = json.loads(out)
    code, out, err = run(capsys, "status", "--db", str(path), "--json")
    status = json.loads(out)
    assert summary["rows"] == status["step_rows"] == 6 + 2
    assert status["last_ingest"]["summary"]["rows"] == 8
    with db.connection(path, read_only=True) as con:
        stored = dict(con.execute("SELECT job_id, count(*) FROM steps GROUP BY job_id").fetchall())
        ledger = dict(con.execute("SELECT job_id, rows FROM ingest_files").fetchall())
    assert ledger == stored == {"llama-sft-001": 2, "mistral-lora-002": 3, "legacy-gpt2-003": 1, "repeats": 2}


# --- finding 6: views.md's PIVOT sentence, as `runlytics sql` answers -----------------------------


@pytest.mark.parametrize(
    ("query", "code", "refused"),
    [
        ("PIVOT jobs ON status IN ('completed', 'failed') USING count(*) GROUP BY model_name", 0, None),
        ("FROM jobs PIVOT (count(*) FOR status IN ('completed', 'failed'))", 0, None),
        ("PIVOT jobs ON status USING count(*)", 4, "PIVOT (kind: MULTI)"),
        ("SELECT * FROM (PIVOT jobs ON status USING count(*))", 4, "SELECT (kind: MULTI)"),
        ("FROM (PIVOT jobs ON status USING count(*))", 4, "FROM (kind: MULTI)"),
    ],
)
def test_pivot_runs_with_an_in_list_only(
    warehouse: Path, capsys: pytest.CaptureFixture[str], query: str, code: int, refused: str | None
) -> None:
    done, out, err = run(capsys, "sql", query, "--db", str(warehouse), "--format", "csv")
    assert done == code, err
    assert (refused is None and err == "") or (refused is not None and err.strip().endswith(f"refused: {refused}"))


# --- finding 1: the dashboard benchmark runs as a script, outside pytest's path ------------------


def test_the_dashboard_bench_script_runs(tmp_path: Path) -> None:
    pytest.importorskip("playwright")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "dashboard.py"), "--help"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: dashboard.py")


# --- finding 9: what runlytics writes beside a warehouse is ignored by git ------------------------


def test_the_files_beside_a_warehouse_are_ignored_by_git(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if shutil.which("git") is None:
        pytest.skip("no git")
    shutil.copyfile(REPO / ".gitignore", tmp_path / ".gitignore")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    path = tmp_path / "runlytics.duckdb"  # README's first command: `runlytics ingest samples/jobs`
    assert run(capsys, "ingest", str(SAMPLES), "--db", str(path), "--quiet")[0] == 0
    snapshots.mark_unpublished(path)  # and what a run leaves for a moment, or when killed
    named = [sidefiles.new_build(path), sidefiles.wal(path), path.with_name(path.name + ".rebuild.tmp")]
    named += [path.with_name(path.name + suffix) for suffix in (".last-ingest.json.tmp", ".publish.ingest.lock")]
    for each in named:
        each.touch()
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"], cwd=tmp_path, capture_output=True, text=True
    )
    assert status.stdout.splitlines() == ["?? .gitignore"]


# --- finding 8: PostgreSQL seams: a new stage only once PostgreSQL answers; --stage named as typed --

NOWHERE = "postgresql://nobody@127.0.0.1:1/x"  # port 1: refused at once


@pytest.mark.parametrize("given_stage", [False, True])
def test_a_database_that_cannot_be_reached_leaves_no_stage(
    given_stage: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    stage = ["--stage", str(tmp_path / "stages" / "s.duckdb")] if given_stage else []
    code, out, err = run(capsys, "ingest", str(SAMPLES), "--db", NOWHERE, *stage)
    assert code == 3 and out == "", err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"runlytics ingest: cannot connect to {NOWHERE}: "), line
    assert not state.exists() and not (tmp_path / "stages").exists()


def test_a_stage_given_as_a_url_is_named_as_typed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "ingest", str(SAMPLES), "--db", NOWHERE, "--stage", "postgresql://x/y")
    assert code == 3 and out == ""
    assert err.strip().splitlines() == [
        "runlytics ingest: --stage 'postgresql://x/y' is a URL, not a DuckDB file's path: the stage is the local "
        "DuckDB file a run ingests into before publishing to the database of --db postgresql://…"
    ]


def test_the_suite_never_writes_the_users_state_folder() -> None:
    """tests/conftest.py gives each test process a state folder of its own (a default stage of a
    test that forgets --stage lands there, not in ~/.local/state/runlytics/)."""
    state = Path(os.environ["XDG_STATE_HOME"])
    assert state.name.startswith("runlytics-state-") and state != Path.home() / ".local" / "state"


# --- finding 7: errors name their command; RUNLYTICS_STALE_AFTER refused when it is no number ----


def test_every_error_names_its_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "none.duckdb")
    for argv, command in (
        (["sql", COUNT_JOBS], "sql"), (["insights", "set", "stall.factor", "5"], "insights set"),
        (["insights", "thresholds"], "insights thresholds"), (["db", "copy", "--to", NOWHERE], "db copy"),
        (["export", str(tmp_path / "out")], "export"), (["serve"], "serve"),
    ):  # fmt: skip
        code, out, err = run(capsys, *argv, "--db", missing)
        assert code == 3 and err.startswith(f"runlytics {command}: no warehouse at {missing}: "), (argv, err)
    path = tmp_path / "w.duckdb"
    with lock.run_lock(path, wait=0):  # another writer holds the warehouse
        code, out, err = run(capsys, "ingest", str(SAMPLES), "--db", str(path), "--wait", "0")
    assert code == 75 and err.startswith(f"runlytics ingest: another ingest into {path} is running"), err


@pytest.mark.parametrize("raw", ["soon", "-5", "nan", "inf", "-inf"])
def test_serve_refuses_a_stale_after_that_is_no_number_of_seconds(
    raw: str, warehouse: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNLYTICS_STALE_AFTER", raw)
    code, out, err = run(capsys, "serve", "--db", str(warehouse), "--port", "0")
    assert (code, out) == (2, "")
    assert err.strip().splitlines() == [
        f"runlytics serve: RUNLYTICS_STALE_AFTER={raw!r} is not a number of seconds: give one above 0 (the age "
        "past which the last successful ingest is stale; default 3600), or 0 to turn the check off"
    ]


def test_ctrl_c_names_the_command_as_its_errors_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # README's exit 130: `runlytics COMMAND: interrupted`, the command named as its errors name it
    # (it was the first word alone: `runlytics db: interrupted`)
    def interrupted(*args: Any) -> int:
        raise KeyboardInterrupt

    def query_interrupted(*args: Any) -> int:
        raise RuntimeError("Query interrupted")  # what DuckDB raises for Ctrl-C inside a query

    monkeypatch.setattr(db_commands, "run_db_upgrade", interrupted)
    monkeypatch.setattr(insights_command, "_insights_set", query_interrupted)
    for argv, command in (
        (["db", "upgrade"], "db upgrade"),
        (["insights", "set", "stall.factor", "5"], "insights set"),
    ):
        monkeypatch.setattr(sys, "argv", ["runlytics", *argv, "--db", str(tmp_path / "w.duckdb")])
        with pytest.raises(SystemExit) as stop:
            cli.entry()
        assert (stop.value.code, capsys.readouterr().err) == (130, f"runlytics {command}: interrupted\n"), argv
