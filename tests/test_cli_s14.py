"""The command's answers to user mistakes: one line and an exit code (README, "Exit codes"), never a
traceback, never a value taken silently. A warehouse folder a writer can't write; a --db that is
another URL; sizes, ports, seconds out of range; a --revision unknown or older than the
warehouse's; a blank --job-id; a file root no job is found by; status counting step rows as the
ingest summary does."""

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
from conftest import Engine, Lab

from runlytics import cli
from runlytics.warehouse import db, lock, migrate, sidefiles

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples" / "jobs"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``runlytics ARGV`` in this process: (exit code, stdout, stderr); argparse's refusals too."""
    try:
        code = cli.main(list(argv))
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def last_line(err: str) -> str:
    return err.strip().splitlines()[-1]


@pytest.fixture
def jobs(tmp_path: Path) -> Path:
    root = tmp_path / "jobs"
    shutil.copytree(SAMPLES, root)
    return root


# --- S1: a warehouse folder a writer can't write: exit 3, one line ----------------------------


def test_a_lock_file_that_cannot_be_created_is_a_warehouse_error(
    tmp_path: Path, jobs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    warehouse = tmp_path / "w.duckdb"
    sidefiles.lock(warehouse).mkdir()  # a folder in the lock file's place: IsADirectoryError
    for argv, command in ((["ingest", str(jobs)], "ingest"), (["db", "upgrade"], "db upgrade")):
        code, out, err = run(capsys, *argv, "--db", str(warehouse))
        assert code == 3, err
        assert err.strip().splitlines() == [
            f"runlytics {command}: cannot write to warehouse {warehouse}: its lock file {sidefiles.lock(warehouse)} "
            "can't be created or opened (Is a directory): a writer needs a folder it may write in"
        ]
    assert not warehouse.exists()


def test_a_read_only_folder_is_a_warehouse_error_for_every_writer(
    tmp_path: Path, jobs: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    warehouse = tmp_path / "w.duckdb"
    migrate.upgrade(warehouse)
    real_open = os.open

    def read_only_folder(path: Any, flags: int, *rest: Any, **kw: Any) -> int:
        if str(path).endswith(".ingest.lock"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *rest, **kw)

    monkeypatch.setattr(lock.os, "open", read_only_folder)
    for argv in (["ingest", str(jobs)], ["db", "upgrade"], ["insights", "set", "loss_spike.mad_factor", "8"]):
        code, _, err = run(capsys, *argv, "--db", str(warehouse))
        assert code == 3, (argv, err)
        assert len(err.strip().splitlines()) == 1, err
        assert "(Read-only file system): a writer needs a folder it may write in" in err


def test_a_warehouse_folder_that_cannot_be_created_is_a_warehouse_error(
    tmp_path: Path, jobs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("not a folder")
    for argv, command in ((["ingest", str(jobs)], "ingest"), (["db", "upgrade"], "db upgrade")):
        code, _, err = run(capsys, *argv, "--db", str(tmp_path / "file" / "w.duckdb"))
        assert code == 3, err
        assert err.strip().splitlines() == [
            f"runlytics {command}: cannot create the folder {tmp_path / 'file'} of warehouse "
            f"{tmp_path / 'file' / 'w.duckdb'}: File exists"
        ]


# --- S2: --db naming another URL: refused before DuckDB sees it -------------------------------

OTHER_URLS = [
    "mysql://x@h/db",
    "md:foo",
    "./md:foo",
    "sqlite:x.db",
    "./sqlite:x.db",
    "s3://bucket/x.duckdb",
    ":memory:",
    "foo:bar.duckdb",
]


@pytest.mark.parametrize("url", OTHER_URLS)
def test_a_db_of_another_url_scheme_is_refused_naming_it(
    url: str, tmp_path: Path, jobs: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    message = (
        f"warehouse {url!r} is neither a DuckDB file nor a postgresql:// URL "
        "(a file whose name holds ':' is named by its absolute path)"
    )
    for argv, command in (
        (["ingest", str(jobs)], "ingest"), (["db", "upgrade"], "db upgrade"), (["status"], "status"),
        (["insights", "set", "stall.factor", "5"], "insights set"),
    ):  # fmt: skip
        code, _, err = run(capsys, *argv, "--db", url)
        assert (code, err.strip().splitlines()) == (3, [f"runlytics {command}: {message}"]), argv
    # $RUNLYTICS_DB too
    monkeypatch.setenv(db.ENV_DB, url)
    code, _, err = run(capsys, "ingest", str(jobs))
    assert (code, err.strip().splitlines()) == (3, [f"runlytics ingest: {message}"])
    assert list(here.iterdir()) == []  # no stray lock files or folders (`mysql:/x@h/`)


def test_ingest_every_with_another_url_stops_at_once(tmp_path: Path, jobs: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "runlytics", "ingest", str(jobs), "--every", "5", "--db", "md:foo"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert done.returncode == 3
    assert done.stderr.strip().splitlines() == [
        "runlytics ingest: warehouse 'md:foo' is neither a DuckDB file nor a postgresql:// URL "
        "(a file whose name holds ':' is named by its absolute path)"
    ]


def test_a_stage_of_another_url_scheme_is_refused(
    tmp_path: Path, jobs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "ingest", str(jobs), "--db", "postgresql://nobody@nohost.invalid/x", "--stage", "md:s")
    assert (code, last_line(err)) == (
        3,
        "runlytics ingest: --stage 'md:s' is not a DuckDB file's path "
        "(a file whose name holds ':' is named by its absolute path)",
    )


def test_a_file_whose_name_holds_a_colon_is_named_by_its_absolute_path(
    tmp_path: Path, jobs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    warehouse = tmp_path / "md:runs.duckdb"
    code, _, err = run(capsys, "ingest", str(jobs), "--db", str(warehouse), "--quiet")
    assert code == 0, err
    code, out, err = run(capsys, "status", "--json", "--db", str(warehouse))
    assert code == 0, err
    assert json.loads(out)["jobs"] == 3


def test_the_writers_connections_install_and_load_no_extension(tmp_path: Path) -> None:
    warehouse = tmp_path / "w.duckdb"
    migrate.upgrade(warehouse)
    setting = "SELECT current_setting('autoinstall_known_extensions'), current_setting('autoload_known_extensions')"
    with db.connection(warehouse) as con:
        assert con.execute(setting).fetchone() == (False, False)
    with db.connection(warehouse, read_only=True) as con:
        assert con.execute(setting).fetchone() == (False, False)


# --- S3, S4, S7: numbers out of range are usage errors (exit 2) -------------------------------


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0", "x", "0.0000001"])
def test_max_file_mb_must_be_a_size_above_0(
    value: str, tmp_path: Path, jobs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "ingest", str(jobs), "--db", str(tmp_path / "w.duckdb"), "--max-file-mb", value)
    assert (code, last_line(err)) == (
        2,
        f"runlytics ingest: error: argument --max-file-mb: not a number of MiB above 0 (a byte at least): {value}",
    )
    assert not (tmp_path / "w.duckdb").exists()


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--spool-max-mb", "inf", "not a number of MiB, 0 (no bound) or more: inf"),
        ("--spool-max-mb", "nan", "not a number of MiB, 0 (no bound) or more: nan"),
        ("--spool-max-mb", "-1", "not a number of MiB, 0 (no bound) or more: -1"),
        ("--interval", "inf", "not a number of seconds: inf"),
        ("--interval", "nan", "not a number of seconds: nan"),
    ],
)
def test_sample_sizes_and_intervals_must_be_finite(
    option: str, value: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "sample", "--job-id", "j", "--spool", str(tmp_path / "s"), option, value)
    assert (code, last_line(err)) == (2, f"runlytics sample: error: argument {option}: {message}")
    assert not (tmp_path / "s").exists()


def test_sample_spool_max_mb_0_still_means_no_bound() -> None:
    args = cli._parser().parse_args(["sample", "--job-id", "j", "--spool-max-mb", "0", "--interval", "0.5"])
    assert (args.spool_max_mb, args.interval) == (0.0, 0.5)


@pytest.mark.parametrize("value", ["99999", "65536", "-1", "x", "8e3"])
def test_serve_port_must_be_0_to_65535(value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "serve", "--db", str(tmp_path / "w.duckdb"), "--port", value)
    assert (code, last_line(err)) == (
        2,
        f"runlytics serve: error: argument --port: not a port number (0 to 65535): {value}",
    )


def test_serve_port_0_and_65535_are_ports() -> None:
    assert cli._parser().parse_args(["serve", "--port", "0"]).port == 0
    assert cli._parser().parse_args(["serve", "--port", "65535"]).port == 65535


WAITS = [
    ["ingest", "ROOT"],
    ["db", "upgrade"],
    ["db", "copy", "--to", "postgresql://x@h/d"],
    ["sql", "SELECT 1"],
    ["status"],
]


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "-inf", "x"])
def test_wait_must_be_0_or_more_seconds(
    value: str, tmp_path: Path, jobs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in WAITS:
        argv = [str(jobs) if a == "ROOT" else a for a in argv]
        code, _, err = run(capsys, *argv, "--db", str(tmp_path / "w.duckdb"), f"--wait={value}")
        assert (code, last_line(err).split(": error: ", 1)[1]) == (
            2, f"argument --wait: not a number of seconds, 0 or more: {value}"
        ), argv  # fmt: skip
    assert not (tmp_path / "w.duckdb").exists()


def test_wait_0_means_do_not_wait(tmp_path: Path, jobs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    warehouse = tmp_path / "w.duckdb"
    assert run(capsys, "ingest", str(jobs), "--db", str(warehouse), "--wait", "0", "--quiet")[0] == 0
    with lock.run_lock(warehouse, wait=0):
        code, _, err = run(capsys, "ingest", str(jobs), "--db", str(warehouse), "--wait", "0")
    assert code == 75, err


def test_an_unknown_revision_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for value in ("zzzz", "0000", "base"):
        code, _, err = run(capsys, "db", "upgrade", "--db", str(tmp_path / "w.duckdb"), "--revision", value)
        assert (code, err.strip().splitlines()) == (
            2,
            [f"runlytics db upgrade: unknown --revision {value!r}: give head or a revision from 0001 to "
             f"{migrate.HEAD_REVISION}"],
        )  # fmt: skip
    assert list(tmp_path.iterdir()) == []  # nothing built, no lock file


@pytest.fixture
def head_warehouse(tmp_path: Path, engine: Engine) -> Path | db.PostgresUrl:
    """A warehouse at the head revision: a DuckDB file, or an empty PostgreSQL database."""
    if engine.postgres:
        return engine.empty()
    path = tmp_path / "w.duckdb"
    migrate.upgrade(path)
    return path


def test_an_older_revision_than_the_warehouses_is_refused(
    head_warehouse: Path | db.PostgresUrl, capsys: pytest.CaptureFixture[str]
) -> None:
    target = head_warehouse.url if isinstance(head_warehouse, db.PostgresUrl) else str(head_warehouse)
    code, out, err = run(capsys, "db", "upgrade", "--db", target, "--revision", "0001")
    assert (code, out) == (2, "")
    assert err.strip().splitlines() == [
        f"runlytics db upgrade: {head_warehouse} is at revision {migrate.HEAD_REVISION}, past --revision 0001: "
        "db upgrade never downgrades (`alembic -x db=PATH downgrade 0001` does)"
    ]
    # its own revision and head are no downgrade
    for revision in (migrate.HEAD_REVISION, "head"):
        code, out, err = run(capsys, "db", "upgrade", "--db", target, "--revision", revision)
        assert (code, out) == (0, f"{head_warehouse}: schema at revision {migrate.HEAD_REVISION}\n"), err


def test_an_older_warehouse_still_upgrades_to_a_revision_between(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    warehouse = tmp_path / "w.duckdb"
    migrate.upgrade(warehouse, "0036")
    code, out, err = run(capsys, "db", "upgrade", "--db", str(warehouse), "--revision", "0037")
    assert (code, out) == (0, f"{warehouse}: schema at revision 0037\n"), err


# --- S16: a blank --job-id ---------------------------------------------------------------------


@pytest.mark.parametrize("job_id", ["   ", "\t"])
def test_a_blank_job_id_for_an_nvidia_smi_log_is_a_usage_error(
    job_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "gpu.csv"
    log.write_text("timestamp, index, utilization.gpu [%]\n2026/03/01 12:00:00.000, 0, 50 %\n")
    warehouse = tmp_path / "w.duckdb"
    code, _, err = run(capsys, "ingest", "--nvidia-smi-csv", str(log), "--job-id", job_id, "--db", str(warehouse))
    assert (code, err.strip().splitlines()) == (
        2, [f"runlytics ingest: --job-id {job_id!r} is blank: no job is named so (name the job the log belongs to)"]
    )  # fmt: skip
    assert not warehouse.exists()


# --- S6: a file given as a root ----------------------------------------------------------------


def test_a_file_root_no_job_is_found_by_is_a_usage_error(
    tmp_path: Path, jobs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notes = tmp_path / "notes.txt"  # beside the jobs folder: its folder holds three jobs
    notes.write_text("todo")
    warehouse = tmp_path / "w.duckdb"
    code, out, err = run(capsys, "ingest", str(notes), "--db", str(warehouse))
    assert (code, out) == (2, "")
    assert err.strip().splitlines() == [
        f"runlytics ingest: ingest root {notes} is a file, not a job's (progress.json, trainer_state.json or a "
        "training tool's log): name a folder of jobs, a job folder or a job's file"
    ]
    assert not warehouse.exists()


def test_a_jobs_file_as_a_root_reads_its_job(tmp_path: Path, jobs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    warehouse = tmp_path / "w.duckdb"
    progress = jobs / "llama-sft-001" / "progress.json"
    code, out, err = run(capsys, "ingest", str(progress), "--db", str(warehouse), "--json")
    assert code == 0, err
    assert (json.loads(out)["files_seen"], json.loads(out)["ingested"]) == (1, 1)
    state = tmp_path / "hf" / "run" / "trainer_state.json"
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps(TRAINER_STATE))
    code, out, err = run(capsys, "ingest", str(state), "--db", str(warehouse), "--json")
    assert code == 0, err
    assert (json.loads(out)["ingested"], json.loads(out)["rows"]) == (1, 4)


# --- S5: status counts step rows as the ingest summary does -------------------------------------

TRAINER_STATE = {
    "global_step": 40,
    "max_steps": 40,
    "save_steps": 10,
    "train_batch_size": 8,
    "best_model_checkpoint": None,
    "log_history": [
        {"step": s, "loss": 3.0 - s / 100, "learning_rate": 1e-4, "epoch": s / 40} for s in (10, 20, 30, 40)
    ],
}


def test_status_counts_trainer_state_steps_as_step_rows(
    tmp_path: Path, ingest_engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    lab = Lab(tmp_path, ingest_engine)
    shutil.copytree(SAMPLES / "llama-sft-001", lab.root / "llama-sft-001")  # a progress.json job
    state = lab.root / "hf-run" / "trainer_state.json"
    state.parent.mkdir()
    state.write_text(json.dumps(TRAINER_STATE))
    summary = lab.ingest()
    assert (summary.ingested, summary.failed, summary.rows) == (2, 0, lab.query("SELECT count(*) FROM steps")[0][0] + 4)
    target = lab.warehouse()
    name = target.url if isinstance(target, db.PostgresUrl) else str(target)
    code, out, err = run(capsys, "status", "--json", "--db", name)
    assert code == 0, err
    report = json.loads(out)
    assert (report["jobs"], report["step_rows"]) == (2, summary.rows)
    code, out, err = run(capsys, "status", "--db", name)
    assert code == 0, err
    assert f"2 jobs, {summary.rows} step rows," in out


@pytest.mark.parametrize("name", ["w-10:00.duckdb", "./w-10:00.duckdb", "x.y:z.duckdb", "c:w.duckdb"])
def test_a_relative_name_holding_a_colon_duckdb_takes_for_a_file_still_works(
    name: str, tmp_path: Path, jobs: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only what DuckDB reads as other than a file is refused (scheme://, an extension's `md:`, :memory:)."""
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "ingest", str(jobs), "--db", name, "--quiet")
    assert code == 0, err
    code, out, err = run(capsys, "status", "--json", "--db", name)
    assert code == 0, err
    assert json.loads(out)["jobs"] == 3
    assert (tmp_path / name).is_file()


@pytest.mark.parametrize("job_id", ["", "   ", "\t"])
def test_sample_refuses_a_blank_job_id(job_id: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A sample line naming no job is skipped at ingest: refused before a GPU is read."""
    code, _, err = run(capsys, "sample", "--job-id", job_id, "--interval", "1")
    assert code == 2
    assert last_line(err) == f"runlytics sample: error: argument --job-id: {job_id!r} is blank: no job is named so"


@pytest.mark.parametrize("how", ["--db", "RUNLYTICS_DB"])
def test_a_quoted_tilde_is_the_home_folder_as_duckdb_reads_it(
    how: str, tmp_path: Path, jobs: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--db "~/w.duckdb"`` (the shell leaves a quoted ~): DuckDB opens the home's file, so the lock,
    the snapshots and the checks go there too (they went to ./~/, and the second run was a traceback)."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    given = ["--db", "~/w.duckdb"] if how == "--db" else []
    if how == "RUNLYTICS_DB":
        monkeypatch.setenv("RUNLYTICS_DB", "~/w.duckdb")
    for _ in range(2):
        code, _, err = run(capsys, "ingest", str(jobs), *given, "--quiet")
        assert code == 0, err
    code, out, err = run(capsys, "status", "--json", *given)
    assert code == 0, err
    assert json.loads(out)["jobs"] == 3
    assert (home / "w.duckdb").is_file()
    assert list(work.iterdir()) == []  # nothing made under ./~/
