"""Session 20 audit: how writers and readers fail on a full disk, in a folder they can't write in,
on a snapshot they can't read and on a lost PostgreSQL connection (one line, exit 3, nothing lost),
and files dated in the future (read once their content stops changing, as any other)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest
import sqlalchemy as sa

from runlytics import cli
from runlytics.ingest import ledger
from runlytics.ingest.pipeline import ingest
from runlytics.warehouse import db, insights, migrate, pg_copy, results, snapshots
from tests.file_times import opened_under

# DuckDB 2's message for a Parquet write refused in its writer's thread, verbatim from the audit's run
ASYNC_FULL = (
    'IO Error: Async write failed for range [offset=243, size=55101]: {"exception_type":"IO","exception_message":'
    '"Could not write file \\"/x/w.duckdb.parts/gpu_samples/day=2026-01-01/host=h3/p.parquet.tmp\\": '
    'No space left on device","errno":"28"}'
)
WAL_FULL = 'TransactionContext Error: Failed to commit: Could not write file "{wal}": No space left on device'
NOBODY = 65534  # the user a test acts as when it runs as root, who may write anywhere
FUTURE = 4_070_908_800  # 2099-01-01


def history(steps: int) -> list[dict[str, Any]]:
    return [{"step": s, "loss": 1.0 / s, "timestamp": 1767225600 + s} for s in range(1, steps + 1)]


def write_job(root: Path, name: str, steps: int = 3, when: float | None = None) -> Path:
    path = root / name / "progress.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"job_id": name, "status": "running", "history": history(steps)}))
    when = time.time() - 3600 if when is None else when  # settled: not read again as a fresh file
    os.utime(path, (when, when))
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    """``runlytics ARGS`` in this process: its exit code and its lines on stderr."""
    capsys.readouterr()
    code = cli.main(list(args))
    return code, capsys.readouterr().err.splitlines()


# --- a full disk ---------------------------------------------------------------------------------


def test_duckdbs_async_write_error_is_a_refused_write_and_said_in_its_words() -> None:
    assert db.is_write_failure(duckdb.IOException(ASYNC_FULL))
    assert db.write_failure_reason(duckdb.IOException(ASYNC_FULL)) == (
        "IO Error: Async write failed for range [offset=243, size=55101]: Could not write file "
        '"/x/w.duckdb.parts/gpu_samples/day=2026-01-01/host=h3/p.parquet.tmp": No space left on device'
    )
    for code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):  # the number alone tells
        detail = {"exception_type": "IO", "exception_message": "write failed", "errno": str(code)}
        assert db.is_write_failure(duckdb.IOException(f"IO Error: Async write failed: {json.dumps(detail)}"))
    # a file NAME holding the words or a JSON object tells nothing, in the object's message or outside it
    named = {"exception_type": "IO", "exception_message": 'No files found "/jobs/No space left on device/x.json"'}
    assert not db.is_write_failure(duckdb.IOException(f"IO Error: Async read failed: {json.dumps(named)}"))
    missing = {"exception_type": "IO", "exception_message": "No such file", "errno": "2"}
    assert not db.is_write_failure(duckdb.IOException(f"IO Error: Async read failed: {json.dumps(missing)}"))
    assert not db.is_write_failure(duckdb.IOException('IO Error: No files found "/jobs/{"errno": "28"}/x.json"'))
    assert not db.is_write_failure(duckdb.IOException('IO Error: No files found "/jobs/x {"errno": "28"}"'))


def test_a_parquet_write_refused_stops_ingest_in_one_line_and_the_next_run_reads_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The audit's enospc.sh and ret.sh: a part (or an archived part) written on a full disk was a
    36-line traceback and exit 1, and `ingest --every` stopped for good."""
    roots, path = tmp_path / "jobs", tmp_path / "w.duckdb"
    write_job(roots, "a")
    assert run(capsys, "ingest", str(roots), "--db", str(path))[0] == 0
    write_job(roots, "b")

    def full(*_: Any) -> None:
        raise duckdb.IOException(ASYNC_FULL)

    with monkeypatch.context() as patched:
        patched.setattr(results, "refresh_queued", full)
        code, lines = run(capsys, "ingest", str(roots), "--db", str(path))
    assert code == cli.EXIT_WAREHOUSE
    assert lines == [
        f"runlytics ingest: ingest of {path} stopped, a write was refused: IO Error: Async write failed for range "
        '[offset=243, size=55101]: Could not write file "/x/w.duckdb.parts/gpu_samples/day=2026-01-01/host=h3/'
        'p.parquet.tmp": No space left on device. Nothing stored was lost: free some space and run again; what '
        "this run could not store is read again then."
    ]
    assert run(capsys, "ingest", str(roots), "--db", str(path))[0] == 0
    with duckdb.connect(str(snapshots.latest(path)), read_only=True) as con:
        assert con.execute("SELECT job_id FROM jobs ORDER BY job_id").fetchall() == [("a",), ("b",)]


@pytest.fixture(scope="module")
def old_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A warehouse one revision behind this runlytics, with a job and a snapshot of its revision."""
    folder = tmp_path_factory.mktemp("old")
    path = folder / "w.duckdb"
    before = migrate.revision_order()[-2]
    migrate.upgrade(path, before)
    with db.connection(path) as con:
        con.execute("INSERT INTO jobs (job_id, status, ingested_at) VALUES ('a', 'completed', TIMESTAMP '2026-01-01')")
        con.execute("CHECKPOINT")
    snapshots.publish(path)
    return path


@pytest.fixture
def old(old_warehouse: Path, tmp_path: Path) -> Path:
    shutil.copytree(old_warehouse.parent, tmp_path / "w")
    return tmp_path / "w" / old_warehouse.name


def disk_full_at(monkeypatch: pytest.MonkeyPatch, module: Any, name: str, error: BaseException) -> None:
    def full(*_: Any, **__: Any) -> None:
        raise error

    monkeypatch.setattr(module, name, full)


NOT_LOST = "Nothing stored was lost: free some space and run again."
COPY_FULL = OSError(errno.ENOSPC, "No space left on device")  # the snapshot's copy


@pytest.mark.parametrize(
    ("command", "said"),
    [
        (["db", "upgrade"], "runlytics db upgrade: upgrade of {path}"),
        (["insights", "set", "stall.factor", "4"], "runlytics insights set: write to {path}"),
        (["sql", "SELECT count(*) FROM jobs"], "runlytics sql: upgrade of {path} to schema revision {head}, which "
                                               "reading it needs,"),
        (["status"], "runlytics status: upgrade of {path} to schema revision {head}, which reading it needs,"),
    ],
    ids=["db-upgrade", "insights-set", "sql", "status"],
)  # fmt: skip
def test_a_full_disk_stops_an_upgrade_and_a_publish_in_one_line_and_loses_nothing(
    old: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: list[str], said: str
) -> None:
    """The audit's upg2.sh: db upgrade, insights set, and a reader's first use of an older
    warehouse (which upgrades it) were a traceback (exit 1) when the disk was full at the commit
    (DuckDB's write-ahead log, under SQLAlchemy's error) or at the snapshot's copy."""
    wal_full = sa.exc.OperationalError("COMMIT", {}, duckdb.TransactionException(WAL_FULL.format(wal=f"{old}.wal")))
    head = migrate.HEAD_REVISION
    begins = said.format(path=old, head=head) + " stopped, a write was refused: "
    with monkeypatch.context() as patched:
        disk_full_at(patched, migrate, "run_chain", wal_full)
        code, lines = run(capsys, *command, "--db", str(old))
    assert code == cli.EXIT_WAREHOUSE
    assert lines == [f"{begins}{WAL_FULL.format(wal=f'{old}.wal')}. {NOT_LOST}"]
    with monkeypatch.context() as patched:
        disk_full_at(patched, snapshots.shutil, "copyfile", COPY_FULL)
        code, lines = run(capsys, *command, "--db", str(old))
    assert code == cli.EXIT_WAREHOUSE
    assert lines == [f"{begins}[Errno 28] No space left on device. {NOT_LOST}"]
    assert snapshots.unpublished(old).exists()  # upgraded, not published: the next writer publishes
    assert run(capsys, *command, "--db", str(old))[0] == 0
    assert not snapshots.unpublished(old).exists()
    with duckdb.connect(str(snapshots.latest(old)), read_only=True) as con:
        assert migrate.current_revision(con) == head
        assert con.execute("SELECT job_id FROM jobs").fetchall() == [("a",)]


def test_a_checkpoint_refused_stops_insights_set_in_one_line(
    old: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "db", "upgrade", "--db", str(old))[0] == 0
    refused = f'Could not write file "{old}": No space left on device'
    fatal = duckdb.FatalException(f"FATAL Error: Failed to create checkpoint because of error: {refused}")
    with monkeypatch.context() as patched:
        disk_full_at(patched, insights, "set_threshold", fatal)
        code, lines = run(capsys, "insights", "set", "stall.factor", "4", "--db", str(old))
    assert code == cli.EXIT_WAREHOUSE
    assert lines == [f"runlytics insights set: write to {old} stopped, a write was refused: {fatal}. {NOT_LOST}"]


def test_the_files_db_upgrade_creates_are_private_as_an_ingests(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "w.duckdb"
    previous = os.umask(0o022)
    try:
        assert run(capsys, "db", "upgrade", "--db", str(path))[0] == 0
    finally:
        os.umask(previous)
    made = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.name for p in made} >= {"w.duckdb", "w.duckdb.ingest.lock"}
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in made} == {p.name: 0o600 for p in made}


# --- a folder a writer can't write in, a snapshot a reader can't read ----------------------------


@pytest.fixture
def shared_folder() -> Iterator[Path]:
    """A folder another user may enter (a test's tmp_path is its owner's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="runlytics-s20-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        for sub in [folder, *folder.rglob("*")]:
            if sub.is_dir() and not sub.is_symlink():
                sub.chmod(0o755)
        shutil.rmtree(folder)


@contextmanager
def another_user(*owned: Path) -> Iterator[None]:
    """Within: this process acts as a user that the folders' permissions apply to, and ``owned``
    (with what they hold) are that user's. Run as root (CI), the process acts as nobody (root may
    write in any folder); run as another user, it stays that user, who owns what it made."""
    if os.geteuid() != 0:
        yield
        return
    for top in owned:
        for sub in [top, *top.rglob("*")]:
            os.chown(sub, NOBODY, NOBODY, follow_symlinks=False)
    os.setegid(NOBODY)
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


WRITERS = {
    "ingest": lambda path, roots: ["ingest", str(roots), "--db", str(path)],
    "db-upgrade": lambda path, roots: ["db", "upgrade", "--db", str(path)],
    "insights-set": lambda path, roots: ["insights", "set", "stall.factor", "4", "--db", str(path)],
}


@pytest.mark.parametrize("marked", [False, True], ids=["unmarked", "marked"])
@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_a_writer_in_a_folder_it_can_no_longer_write_in_says_so_in_one_line(
    shared_folder: Path, capsys: pytest.CaptureFixture[str], writer: str, marked: bool
) -> None:
    """The audit's f_rofolder.sh: the folder made read-only after the first ingest (its lock file
    there): a PermissionError traceback naming `.unpublished` (or, the marker there, DuckDB's
    TransactionException on the `.wal`), exit 1."""
    roots, folder = shared_folder / "jobs", shared_folder / "wh"
    path = folder / "w.duckdb"
    write_job(roots, "a")
    assert run(capsys, "ingest", str(roots), "--db", str(path))[0] == 0
    write_job(roots, "b")  # something to read: the full road
    if marked:
        snapshots.unpublished(path).touch()
    before = sorted(p.name for p in folder.iterdir())
    with another_user(folder):
        folder.chmod(0o555)
        try:
            code, lines = run(capsys, *WRITERS[writer](path, roots))
        finally:
            folder.chmod(0o755)
    assert code == cli.EXIT_WAREHOUSE
    assert len(lines) == 1, lines
    assert lines[0].endswith(
        f": cannot write to warehouse {path}: its folder {folder} can't be written in (Permission denied): "
        "a writer needs a folder it may write in"
    )
    assert sorted(p.name for p in folder.iterdir()) == before


def test_a_reader_that_cannot_open_the_newest_snapshot_says_so_and_never_opens_the_file(
    shared_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The audit's f_fallback.sh: the newest snapshot unreadable to this user (an ingest as root
    made it 0600), the reader silently opened the warehouse file itself, holding DuckDB's lock
    while it read: the next ingest waited and exited 75."""
    roots, path = shared_folder / "jobs", shared_folder / "w.duckdb"
    write_job(roots, "a")
    assert run(capsys, "ingest", str(roots), "--db", str(path))[0] == 0
    newest = snapshots.latest(path)
    assert newest is not None
    snapshots.folder(path).chmod(0o755)
    path.chmod(0o644)  # the file itself this user may read
    newest.chmod(0o000 if os.geteuid() != 0 else 0o600)  # the snapshot not (root's)
    with another_user():
        with pytest.raises(db.WarehouseError) as refused:
            snapshots.connect_latest(path, wait=0).close()
        code, lines = run(capsys, "sql", "--db", str(path), "SELECT count(*) FROM jobs")
    assert str(newest) in str(refused.value) and "Permission denied" in str(refused.value)
    assert (code, lines) == (cli.EXIT_WAREHOUSE, [f"runlytics sql: {refused.value}"])


def test_a_snapshot_replaced_while_it_is_opened_is_still_left_for_the_newer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the retry is for: a copy gone between listing and opening; the newer one is opened."""
    path = tmp_path / "w.duckdb"
    migrate.upgrade(path)
    first = snapshots.latest(path)
    real = db.connect
    calls: list[Path] = []

    def replaced_meanwhile(where: Path, **options: Any) -> duckdb.DuckDBPyConnection:
        calls.append(where)
        if where == first and len(calls) == 1:
            snapshots.publish(path)  # the writer's next copy removes this one
        return real(where, **options)

    monkeypatch.setattr(db, "connect", replaced_meanwhile)
    snapshots.connect_latest(path, wait=0).close()
    assert calls == [first, snapshots.latest(path)] and calls[1] != first


# --- a lost PostgreSQL connection ----------------------------------------------------------------


def test_a_db_copy_whose_connection_is_lost_says_why_in_one_line(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The audit: the server ended the copy's session mid-copy (pg_terminate_backend): the
    one-line error was hidden by the rollback the connection's end tried on the dead connection,
    a 111-line traceback."""
    roots, path = tmp_path / "jobs", tmp_path / "w.duckdb"
    write_job(roots, "a")
    assert run(capsys, "ingest", str(roots), "--db", str(path))[0] == 0
    real: Callable[..., int] = pg_copy._copy_table

    def ended_by_the_server(con: Any, raw: psycopg.Connection[Any], *args: Any) -> int:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (raw.info.backend_pid,))
        return real(con, raw, *args)

    monkeypatch.setattr(pg_copy, "_copy_table", ended_by_the_server)
    code, lines = run(capsys, "db", "copy", "--db", str(path), "--to", pg_url)
    assert code == cli.EXIT_WAREHOUSE
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        f"runlytics db copy: copy into {db.PostgresUrl(pg_url)} failed at table jobs, nothing written: "
    )
    with psycopg.connect(pg_url) as con:
        assert con.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)


# --- file times in the future --------------------------------------------------------------------


def test_a_file_dated_in_the_future_is_read_once_not_at_every_run(tmp_path: Path) -> None:
    """The audit's mt.sh 2099-01-01: a progress.json dated in the future counted as written within
    the last 2 s for ever, so it got no fingerprint and was read, counted and published again by
    every run."""
    roots, path = tmp_path / "jobs", tmp_path / "w.duckdb"
    progress = write_job(roots, "a", when=FUTURE)
    assert ledger.stat(progress).fingerprint is not None
    assert ingest(path, [roots]).ingested == 1
    published = snapshots.latest(path)
    again = ingest(path, [roots])
    assert (again.ingested, again.unchanged) == (0, 1)
    assert snapshots.latest(path) == published  # nothing new: no copy
    # a change of size under the same future time is a change
    progress.write_text(json.dumps({"job_id": "a", "status": "running", "history": history(5)}))
    os.utime(progress, (FUTURE, FUTURE))
    assert ingest(path, [roots]).ingested == 1
    with duckdb.connect(str(snapshots.latest(path)), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM steps").fetchone() == (5,)


def test_a_file_changed_this_moment_is_still_fresh_however_its_clock_reads(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_text("x")
    for offset in (0.0, -1.0, 1.0):  # a file server's clock a second behind or ahead: written now
        os.utime(path, (time.time() + offset, time.time() + offset))
        assert ledger.stat(path).fresh
    for offset in (-3.0, 3.0, FUTURE - time.time()):
        os.utime(path, (time.time() + offset, time.time() + offset))
        assert not ledger.stat(path).fresh


def spool_line(i: int) -> str:
    ts = int(time.time()) // 3600 * 3600 - 7200 + i
    return json.dumps({"ts": ts, "job_id": "s", "gpu_index": 0, "utilization_percent": float(i)})


def test_a_spool_file_dated_in_the_future_has_its_last_line_read_and_is_then_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The audit: a spool file dated in the future never counted as settled, so its last line
    without a newline was never read, and the file was opened by every run."""
    roots, spool, path = tmp_path / "jobs", tmp_path / "spool", tmp_path / "w.duckdb"
    roots.mkdir()
    spool.mkdir()
    gpu = spool / "gpu.jsonl"
    gpu.write_text(spool_line(1) + "\n" + spool_line(2))  # a writer that writes no final newline
    os.utime(gpu, (FUTURE, FUTURE))
    first = ingest(path, [roots], spools=[spool])
    assert first.gpu_samples == 2
    opened = opened_under(spool, monkeypatch)
    again = ingest(path, [roots], spools=[spool])
    assert (again.gpu_samples, again.unchanged) == (0, 1)
    assert opened == []
