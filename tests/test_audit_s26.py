"""Audit 26: what independent readers of the contracts found.

1. nvidia-smi CSV: a logger restarted after the clocks went back (its first run up to 01:39:50
   EDT, the second from 01:20:00 EST, 40 minutes later) had the second run's repeated-hour lines
   read on their EDT instants: 120 of its samples stored over the first run's, an hour left empty
   (480 samples of 600, the mean utilization 46.25 for 55).
2. nvidia-smi CSV: a timestamp that is a date alone, an hour without minutes or an ISO week date
   was read as a time (midnight, 10:00); the spool refuses those forms.
3. TensorBoard: torch's add_hparams, which a Hugging Face Trainer calls at its start, writes into
   <logdir>/<time.time()>/: that folder was a job of its own (no rows, status unknown), and a
   warehouse ingested on a schedule kept it after the output folder became the job.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from conftest import Lab
from tensorboard.compat.proto import event_pb2, summary_pb2
from test_tool_logs import header, records, scalar_event

from runlytics.cli import main
from runlytics.ingest import nvidia_smi

NEW_YORK = "America/New_York"
HEADER = "timestamp, index, utilization.gpu [%]"


def smi(*lines: str) -> bytes:
    return "".join(line + "\n" for line in (HEADER, *lines)).encode()


def wall(first: datetime, count: int, step_s: int, value: int) -> list[str]:
    return [f"{first + timedelta(seconds=i * step_s):%Y/%m/%d %H:%M:%S}.000, 0, {value}" for i in range(count)]


# --- 1. a logger restarted in the repeated hour ------------------------------------------------


def test_a_logger_restarted_after_the_clocks_went_back_reads_its_second_pass() -> None:
    """New York, 2026-11-01: the first run logs 00:50:00-01:39:50 EDT every 10 s, the logger restarts
    (its header again) at 01:20:00 EST and logs to 02:09:50: 600 samples at 600 instants, the
    first run's 04:50:00Z-05:39:50Z, the second's 06:20:00Z-07:09:50Z."""
    first = wall(datetime(2026, 11, 1, 0, 50), 300, 10, 90)
    second = wall(datetime(2026, 11, 1, 1, 20), 300, 10, 20)
    parsed = nvidia_smi.parse(smi(*first, HEADER, *second), timezone=NEW_YORK)
    by_value: dict[object, list[datetime]] = {}
    for row in parsed.rows:
        by_value.setdefault(row["utilization_percent"], []).append(row["ts"])  # type: ignore[arg-type]
    assert parsed.warnings == []
    assert len(parsed.rows) == 600 and len({row["ts"] for row in parsed.rows}) == 600
    spans = {value: (min(times), max(times)) for value, times in by_value.items()}
    assert spans == {
        90.0: (datetime(2026, 11, 1, 4, 50), datetime(2026, 11, 1, 5, 39, 50)),
        20.0: (datetime(2026, 11, 1, 6, 20), datetime(2026, 11, 1, 7, 9, 50)),
    }


def test_a_first_run_inside_the_repeated_hour_then_a_restart_reads_the_second_pass() -> None:
    """A log all in the repeated hour is read as its first pass (with a warning); a restart whose
    clock is 10 minutes behind the last line is the second pass, not the first again."""
    first = wall(datetime(2026, 11, 1, 1, 10), 4, 60, 90)  # 01:10-01:13
    second = wall(datetime(2026, 11, 1, 1, 3), 3, 60, 20)  # 01:03-01:05, then 02:00 (EST)
    parsed = nvidia_smi.parse(smi(*first, HEADER, *second, "2026/11/01 02:00:00.000, 0, 20"), timezone=NEW_YORK)
    assert [row["ts"] for row in parsed.rows] == [
        *(datetime(2026, 11, 1, 5, m) for m in (10, 11, 12, 13)),
        *(datetime(2026, 11, 1, 6, m) for m in (3, 4, 5)),
        datetime(2026, 11, 1, 7),
    ]


def test_a_line_a_minute_out_of_order_in_the_repeated_hour_stays_in_its_pass() -> None:
    """What the rule must not change: in a log of a line a minute, 01:57 written after 01:58 EDT is
    a line written a minute late."""
    lines = wall(datetime(2026, 11, 1, 0, 50), 70, 60, 1)  # 00:50-01:59
    lines[67], lines[68] = lines[68], lines[67]
    parsed = nvidia_smi.parse(smi(*lines), timezone=NEW_YORK)
    last = [row["ts"] for row in parsed.rows][-4:]
    assert last == [datetime(2026, 11, 1, 5, m) for m in (56, 58, 57, 59)]


# --- 2. what is no time in an nvidia-smi log -----------------------------------------------------


@pytest.mark.parametrize("text", ["2026-01-10", "2026-W02-6", "2026-01-10T10", "20260110"])
def test_a_date_an_hour_or_a_week_date_is_no_time(text: str) -> None:
    parsed = nvidia_smi.parse(smi(f"{text}, 0, 50", "2026/01/10 10:00:00.000, 0, 60"), timezone="UTC")
    assert [row["ts"] for row in parsed.rows] == [datetime(2026, 1, 10, 10)]
    assert parsed.warnings == [f"line 2: timestamp {text!r} is not a time; skipped"]


@pytest.mark.parametrize(
    ("text", "instant"),
    [("2026-01-10T10:00:00+08:00", datetime(2026, 1, 10, 2)), ("2026-01-10 10:00", datetime(2026, 1, 10, 10))],
)
def test_an_iso_date_and_time_is_still_a_time(text: str, instant: datetime) -> None:
    parsed = nvidia_smi.parse(smi(f"{text}, 0, 50"), timezone="UTC")
    assert ([row["ts"] for row in parsed.rows], parsed.warnings) == ([instant], [])


# --- 3. torch's add_hparams folder -------------------------------------------------------------------


def hparams_record(wall: float) -> bytes:
    value = summary_pb2.Summary.Value(tag="_hparams_/experiment")
    value.metadata.plugin_data.plugin_name = "hparams"
    value.metadata.plugin_data.content = b"\x08\x01"
    return records(event_pb2.Event(wall_time=wall, summary=summary_pb2.Summary(value=[value])))


def test_a_sweeps_numbered_folder_under_event_files_is_still_a_run(lab: Lab) -> None:
    for folder in ("logs", "logs/0.1"):
        (lab.root / folder).mkdir(parents=True)
        (lab.root / folder / "events.out.tfevents.1700000000.h.1.0").write_bytes(
            header() + records(scalar_event("loss", 10, 1.0))
        )
    lab.ingest(lab.root)
    assert lab.query("SELECT job_id FROM jobs ORDER BY job_id") == [("logs",), ("logs/0.1",)]


def test_the_add_hparams_folder_of_a_trainers_run_is_no_job(lab: Lab, tmp_path: Path) -> None:
    run = lab.root / "out" / "runs" / "Nov14_22-13-20_host"
    (run / "1700000001.2345678").mkdir(parents=True)
    (run / "events.out.tfevents.1700000000.host.1.0").write_bytes(
        header() + records(scalar_event("train/loss", 10, 2.0), scalar_event("train/loss", 20, 1.0))
    )
    (run / "1700000001.2345678" / "events.out.tfevents.1700000001.host.1.1").write_bytes(
        header() + hparams_record(1_700_000_001.0)
    )
    lab.ingest(lab.root)
    assert lab.query("SELECT job_id FROM jobs") == [("out/runs/Nov14_22-13-20_host",)]
    # the first checkpoint: the output folder is the job, as a fresh warehouse reads it
    (lab.root / "out" / "checkpoint-20").mkdir()
    (lab.root / "out" / "checkpoint-20" / "trainer_state.json").write_text(
        '{"global_step": 20, "max_steps": 40, "log_history": [{"step": 10, "loss": 2.0}, {"step": 20, "loss": 1.0}]}'
    )
    lab.ingest(lab.root)
    (tmp_path / "fresh").mkdir()
    fresh = Lab(tmp_path / "fresh")
    fresh.ingest(lab.root)
    assert lab.query("SELECT job_id FROM jobs") == fresh.query("SELECT job_id FROM jobs") == [("out",)]


# --- 4. an MLflow line cut before its step ---------------------------------------------------------------

MLFLOW_RUN_META = "run_id: abc\nexperiment_id: '0'\nlifecycle_stage: active\nstatus: 3\nstart_time: 1700000000000\n"


def settle(folder: Path) -> None:
    for path in folder.rglob("*"):
        os.utime(path, (1_700_000_100, 1_700_000_100))


@pytest.mark.parametrize(
    ("reads", "cut"), [(1, "1700000040000 0.5"), (2, "1700000040000 0.5"), (1, "1700000040000 0.5 4")]
)
def test_an_mlflow_line_cut_before_its_step_is_skipped_not_step_0(lab: Lab, reads: int, cut: str) -> None:
    experiment = lab.root / "mlruns" / "0"
    (experiment / "abc" / "metrics").mkdir(parents=True)
    (experiment / "meta.yaml").write_text("experiment_id: '0'\nname: Default\nlifecycle_stage: active\n")
    (experiment / "abc" / "meta.yaml").write_text(MLFLOW_RUN_META)
    loss = experiment / "abc" / "metrics" / "loss"
    loss.write_text("1700000010000 2.0 10\n1700000020000 1.5 20\n1700000030000 1.2 30\n")
    if reads == 2:  # the whole lines read first, the cut one appended after
        settle(lab.root)
        lab.ingest(lab.root)
    with loss.open("a") as f:
        f.write(cut)
    settle(lab.root)
    summary = lab.ingest(lab.root)
    assert lab.query("SELECT step, loss FROM step_facts ORDER BY step") == [(10, 2.0), (20, 1.5), (30, 1.2)]
    analytics = lab.analytics("mlruns/0/abc")
    assert analytics is not None
    assert (analytics["losses"]["initial_loss"], analytics["losses"]["loss_reduction_percent"]) == (2.0, 40.0)
    assert [w for w in summary.listed_warnings if "cut short" in w[1]] == [
        (str(loss), f"line 4: {cut!r} has no newline: a line cut short, skipped")
    ]


def test_an_old_stores_line_without_a_step_is_still_step_0(lab: Lab) -> None:
    experiment = lab.root / "mlruns" / "0"
    (experiment / "abc" / "metrics").mkdir(parents=True)
    (experiment / "meta.yaml").write_text("experiment_id: '0'\nname: Default\nlifecycle_stage: active\n")
    (experiment / "abc" / "meta.yaml").write_text(MLFLOW_RUN_META)
    (experiment / "abc" / "metrics" / "loss").write_text("1700000010000 2.0\n")
    settle(lab.root)
    lab.ingest(lab.root)
    assert lab.query("SELECT step, loss FROM step_facts") == [(0, 2.0)]


# --- 5. an event file's last record cut ------------------------------------------------------------------


def test_a_settled_event_files_cut_last_record_is_said_once(lab: Lab) -> None:
    run = lab.root / "run"
    run.mkdir()
    events = run / "events.out.tfevents.1700000000.h.1.0"
    whole = header() + records(*(scalar_event("loss", step, 3.0 - step / 10) for step in (10, 20)))
    cut = records(scalar_event("loss", 30, 0.0))[:-7]
    events.write_bytes(whole + cut)
    settle(lab.root)
    first = lab.ingest(lab.root)
    assert lab.query("SELECT step FROM metric_points ORDER BY step") == [(10,), (20,)]
    assert first.listed_warnings == [
        (str(events), f"offset {len(whole)}: the last record is cut short ({len(cut)} bytes) and the file has settled:"
                      " not read (read on if the file grows)")
    ]  # fmt: skip
    assert lab.ingest(lab.root).listed_warnings == []


# --- 6. another program's DuckDB file -----------------------------------------------------------------------


@pytest.mark.parametrize("table", ["sales", "jobs"])
def test_a_duckdb_file_that_is_no_warehouse_is_refused_and_left_as_it_was(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], table: str
) -> None:
    theirs = tmp_path / "theirs.duckdb"
    with duckdb.connect(str(theirs)) as con:
        con.execute(f"CREATE TABLE {table} (x INTEGER)")
        con.execute(f"INSERT INTO {table} VALUES (42)")
    before = theirs.read_bytes()
    (tmp_path / "jobs" / "a").mkdir(parents=True)
    (tmp_path / "jobs" / "a" / "progress.json").write_text('{"job_id": "a", "status": "running", "history": []}')
    for command in (
        ["status"],
        ["analytics", "a"],
        ["sql", "SELECT 1"],
        ["db", "upgrade"],
        ["ingest", str(tmp_path / "jobs")],
    ):
        capsys.readouterr()
        code = main([*command, "--db", str(theirs)])
        out, err = capsys.readouterr()
        assert (code, out) == (3, ""), command
        assert err == (
            f"runlytics {' '.join(command[:2] if command[0] == 'db' else command[:1])}: {theirs} is not a runlytics"
            f" warehouse: it holds 1 table(s) ('{table}') and no runlytics schema revision; name another --db"
            " (a new file is built)\n"
        ), command
    assert theirs.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jobs", "theirs.duckdb", "theirs.duckdb.ingest.lock"]


# --- 7. alembic by hand on a moved warehouse ------------------------------------------------------------------


def test_alembic_by_hand_names_a_moved_warehouses_own_parts(tmp_path: Path) -> None:
    from alembic.config import main as alembic_main

    from runlytics.ingest.formats.nvidia_smi import CsvImport
    from runlytics.ingest.pipeline import ingest
    from runlytics.warehouse import db

    old = tmp_path / "old"
    (old / "jobs" / "j1").mkdir(parents=True)
    (old / "jobs" / "j1" / "progress.json").write_text('{"job_id": "j1", "history": [{"step": 1}]}')
    log = old / "gpu.csv"
    log.write_text("timestamp, index, utilization.gpu [%]\n2024/01/01 00:00:00.000, 0, 50 %\n")
    ingest(old / "w.duckdb", [old / "jobs"], csv_imports=[CsvImport(log, "j1")], wait=10)
    new = tmp_path / "new"
    shutil.copytree(old, new)  # the old folder still there: its parts would be read
    repo = Path(__file__).resolve().parent.parent
    alembic_main(["-c", str(repo / "alembic.ini"), "-x", f"db={new / 'w.duckdb'}", "upgrade", "head"])
    with db.connection(new / "w.duckdb", read_only=True) as con:
        views = con.execute("SELECT sql FROM duckdb_views() WHERE view_name IN ('gpu_samples', 'gpu_minutes')")
        for (sql,) in views.fetchall():
            assert str(new / "w.duckdb.parts") in sql and str(old) + "/" not in sql


# --- 8. an upgrade whose publish is held back ---------------------------------------------------------------------


def test_readers_are_refused_an_older_revisions_snapshot_the_upgrade_could_not_replace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from alembic.config import main as alembic_main

    from runlytics.ingest.pipeline import ingest
    from runlytics.warehouse import migrate, snapshots

    jobs, path = tmp_path / "jobs", tmp_path / "w.duckdb"
    (jobs / "a").mkdir(parents=True)
    (jobs / "a" / "progress.json").write_text('{"job_id": "a", "status": "running", "history": [{"step": 1}]}')
    ingest(path, [jobs], wait=10)
    # an older runlytics' warehouse, its last run killed after queueing a job, before its refresh
    repo = Path(__file__).resolve().parent.parent
    alembic_main(["-c", str(repo / "alembic.ini"), "-x", f"db={path}", "downgrade", "0043"])
    HEAD = migrate.HEAD_REVISION
    with duckdb.connect(str(path)) as con:
        con.execute("INSERT INTO refresh_queue VALUES ('a')")
    snapshots.publish(path)
    snapshots.mark_unpublished(path)
    refused = (
        f"warehouse {path} is at schema revision {HEAD}, but its newest snapshot is at 0043: an ingest run was"
        " killed before it refreshed the jobs it queued, and the next `runlytics ingest` publishes (run it)"
    )
    capsys.readouterr()
    assert main(["db", "upgrade", "--db", str(path)]) == 0
    assert capsys.readouterr() == (
        f"{path}: schema at revision {HEAD}\n",
        f"runlytics db upgrade: warning: {refused}\n",
    )
    assert main(["analytics", "a", "--db", str(path)]) == 3
    assert capsys.readouterr() == ("", f"runlytics analytics: {refused}\n")
    ingest(path, [jobs], wait=10)  # refreshes the queue and publishes
    assert main(["analytics", "a", "--db", str(path)]) == 0


# --- 9. what the command line refuses ------------------------------------------------------------------------------

NOT_UTF8 = b"x\xff".decode("utf-8", "surrogateescape")  # as Python keeps such a word of argv


@pytest.mark.parametrize(
    ("argv", "name"),
    [
        (["analytics", NOT_UTF8], "job-id"),
        (["insights", "--job", NOT_UTF8], "job"),
        (["sql", f"SELECT '{NOT_UTF8}'"], "query"),
        (["ingest", "--nvidia-smi-csv", "gpu.csv", "--job-id", "a", "--host", NOT_UTF8], "host"),
    ],
)
def test_an_argument_that_is_not_utf8_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], name: str
) -> None:
    capsys.readouterr()
    assert main([*argv, "--db", str(tmp_path / "w.duckdb")]) == 2
    word = next(word for word in argv if NOT_UTF8 in word)
    assert capsys.readouterr().err == f"runlytics {argv[0]}: the {name} argument {word!r} is not valid UTF-8\n"
    assert list(tmp_path.iterdir()) == []


def test_a_warehouse_named_by_the_environment_that_is_not_utf8_leaves_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "jobs").mkdir()
    named = str(tmp_path / f"bad{NOT_UTF8}.duckdb")
    monkeypatch.setenv("RUNLYTICS_DB", named)
    assert main(["ingest", str(tmp_path / "jobs")]) == 2
    assert (
        capsys.readouterr().err
        == f"runlytics ingest: $RUNLYTICS_DB {named!r} is not valid UTF-8: name another warehouse\n"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["jobs"]


def test_a_warehouse_name_that_is_not_utf8_leaves_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "jobs").mkdir()
    db = str(tmp_path / f"bad{NOT_UTF8}.duckdb")
    assert main(["ingest", str(tmp_path / "jobs"), "--db", db]) == 2
    assert capsys.readouterr().err == f"runlytics ingest: the db argument {db!r} is not valid UTF-8\n"
    assert [p.name for p in tmp_path.iterdir()] == ["jobs"]


@pytest.mark.parametrize(
    ("argv", "argument"),
    [
        (["ingest", ""], "roots"),
        (["ingest", "--spool", " "], "--spool"),
        (["ingest", "--nvidia-smi-csv", "", "--job-id", "a"], "--nvidia-smi-csv"),
        (["sql", "--allow-read", "", "SELECT 1"], "--allow-read"),
        (["export", ""], "out"),
    ],
)
def test_a_blank_path_is_a_usage_error_not_the_current_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], argument: str
) -> None:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--db", str(tmp_path / "w.duckdb")])
    blank = next(word for word in argv if not word.strip())
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"runlytics {argv[0]}: error: argument {argument}: {blank!r} is blank: name a file or folder"
    )
    assert list(tmp_path.iterdir()) == []


def test_serve_on_a_blank_host_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--host", "", "--db", str(tmp_path / "w.duckdb")])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "runlytics serve: error: argument --host: '' is blank: name an interface (127.0.0.1, 0.0.0.0, ...)"
    )


# --- 10. a newer runlytics' PostgreSQL database -----------------------------------------------------------------


def test_a_reader_of_a_newer_postgresql_database_says_to_upgrade_runlytics(
    pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import psycopg

    from runlytics.warehouse import db, migrate

    migrate.upgrade(db.PostgresUrl(pg_url))
    with psycopg.connect(pg_url) as con:
        con.execute("UPDATE alembic_version SET version_num = '9999'")
    capsys.readouterr()
    assert main(["analytics", "a", "--db", pg_url]) == 3
    err = capsys.readouterr().err
    assert "written by a newer version. Upgrade runlytics" in err and "db upgrade" not in err
    assert len(err.splitlines()) == 1


# --- 11. smaller ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "remedy"), [(errno.EROFS, "make its file system writable"), (errno.ENOSPC, "free some space")]
)
def test_a_refused_write_says_what_would_let_it_through(code: int, remedy: str) -> None:
    from runlytics.warehouse import db

    error = OSError(code, os.strerror(code), "w.duckdb")
    with pytest.raises(db.WarehouseWriteError) as refused, db.refused_writes("ingest of w.duckdb"):
        raise error
    assert str(refused.value) == (
        f"ingest of w.duckdb stopped, a write was refused: {error}. Nothing stored was lost: {remedy} and run again."
    )


def test_a_max_file_mb_below_a_byte_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["ingest", str(tmp_path), "--max-file-mb", "0.0000001", "--db", str(tmp_path / "w.duckdb")])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "runlytics ingest: error: argument --max-file-mb: not a number of MiB above 0 (a byte at least): 0.0000001"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["a", "--status", "running"], "--status: for the fleet's list of insights, not one job's"),
        (["--job", "a", "--limit", "5"], "--limit: for the fleet's list of insights, not one job's"),
        (["thresholds", "--kind", "bogus"], "--kind: for a list of insights, not `insights thresholds`"),
        (["set", "stall.factor", "3", "--severity", "info"], "--severity: for a list of insights, not `insights set`"),
    ],
)
def test_insights_options_that_would_be_ignored_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    capsys.readouterr()
    assert main(["insights", *argv, "--db", str(tmp_path / "w.duckdb")]) == 2
    assert capsys.readouterr().err == f"runlytics insights: {message}\n"


# --- 12. trainer states -----------------------------------------------------------------------------------------------


def epoch_state(global_step: int, **extra: object) -> str:
    """A state as the Trainer writes it under save_strategy="epoch" (30 steps an epoch): its
    save_steps is TrainingArguments' default, 500."""
    history = [{"step": s, "loss": round(2 - s / 200, 4)} for s in range(10, global_step + 1, 10)]
    return json.dumps(
        {"global_step": global_step, "max_steps": 150, "save_steps": 500, "log_history": history, **extra}
    )


def test_a_trainers_save_steps_its_checkpoints_do_not_follow_is_no_frequency(lab: Lab) -> None:
    history = [{"step": s, "timestamp": 1_767_225_600 + s * 10, "loss": 2 - s / 200, "iteration_time": 10.0}
               for s in range(10, 131, 10)]  # fmt: skip
    lab.write_job("f1", {"job_id": "f1", "status": "failed", "config": {"model_name": "m"}, "history": history})
    for step in (30, 60):  # saved once an epoch; the run failed at 130
        (lab.root / "f1" / f"checkpoint-{step}").mkdir()
        (lab.root / "f1" / f"checkpoint-{step}" / "trainer_state.json").write_text(epoch_state(step))
    for step in (30, 60, 90):  # a job of trainer states alone
        (lab.root / "f2" / f"checkpoint-{step}").mkdir(parents=True)
        (lab.root / "f2" / f"checkpoint-{step}" / "trainer_state.json").write_text(epoch_state(step))
    # the Trainer's own schedule: every 20 steps, and a last save at its end (step 50; the gaps' median 25)
    for step in (20, 50):
        (lab.root / "f3" / f"checkpoint-{step}").mkdir(parents=True)
        (lab.root / "f3" / f"checkpoint-{step}" / "trainer_state.json").write_text(
            json.dumps(
                {"global_step": step, "max_steps": 50, "save_steps": 20, "log_history": [{"step": step, "loss": 1.0}]}
            )
        )
    lab.ingest(lab.root)
    frequency = dict(lab.query("SELECT job_id, checkpoint_frequency_steps FROM job_analytics"))
    assert frequency == {"f1": 30.0, "f2": 30.0, "f3": 20.0}
    # f1: 130 - 60 = 70 steps since its last checkpoint, more than 2 x 30
    assert lab.query("SELECT job_id, value, reference FROM job_insights WHERE kind = 'work_at_risk'") == [
        ("f1", 70.0, 30.0)
    ]


def test_a_summarys_value_that_is_no_number_is_said_and_max_steps_0_is_not_set(lab: Lab) -> None:
    job = lab.root / "s1"
    job.mkdir()
    history = [
        {"step": 10, "loss": 1.0},
        {"step": 10, "train_runtime": "12.5", "train_loss": "0.7", "train_samples_per_second": 3.2},
    ]
    (job / "trainer_state.json").write_text(json.dumps({"global_step": 10, "max_steps": 0, "log_history": history}))
    summary = lab.ingest(lab.root)
    assert sorted(message for _, message in summary.listed_warnings) == [
        "log_history[1] (step 10): train_loss '0.7' is not a number, dropped",
        "log_history[1] (step 10): train_runtime '12.5' is not a number, dropped",
    ]
    (job / "trainer_state.json").write_text(
        json.dumps({"global_step": 50, "max_steps": 0, "log_history": [{"step": 50, "loss": 1.0}]})
    )
    lab.ingest(lab.root)
    assert lab.query("SELECT status, total_steps FROM jobs") == [("unknown", None)]
