"""What `runlytics status`, /api/ingest/runs and /metrics say about ingest runs and problem files
(audit 20): no server path in the API's error texts, problem paths never alike, a gauge of the
files that keep failing, a quick run's heartbeat naming no recorded run, an unreadable heartbeat
said as such."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import duckdb
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from runlytics.api import metrics
from runlytics.api.app import TOKEN_ENV, create_app
from runlytics.cli import EXIT_OK, main
from runlytics.ingest import journal, quick
from runlytics.ingest.pipeline import ingest
from runlytics.warehouse import db, ingest_status, pg_reader, sidefiles, snapshots

OLD = 1_700_000_000  # well past the 2 s a fresh file waits, and the 5 minutes a torn one does
LFS = "version https://git-lfs.github.com/spec/v1\noid sha256:00\n"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.utime(path, (OLD, OLD))
    return path


def _link(path: Path, target: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.delenv(metrics.STALE_ENV, raising=False)
    return lambda db: TestClient(create_app(db, token=None))


def _scrape(app: TestClient) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    response = app.get("/metrics")
    assert response.status_code == 200, response.text
    return {
        family.name: {tuple(sorted(s.labels.items())): s.value for s in family.samples}
        for family in text_string_to_metric_families(response.text)
    }


def _status(db: Path, capsys: pytest.CaptureFixture[str], *flags: str) -> str:
    assert main(["status", "--db", str(db), *flags]) == EXIT_OK
    return capsys.readouterr().out


# --- /api/ingest/runs: paths and errors --------------------------------------------------------


def test_problem_files_show_no_server_path_and_never_two_alike(
    tmp_path: Path, client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    for team in ("team", "other"):  # the same job folder name under two folders: not alike
        _write(root / team / "run-1" / "progress.json", "{bad")
    for run in ("hf-a", "hf-b"):  # failed before any job was known: no job id in the ledger
        _write(root / run / "checkpoint-500" / "trainer_state.json", LFS)
    outside = _write(tmp_path / "outside" / "progress.json", '{"job_id": "x", "status": "running"}')
    _link(root / "j" / "progress.json", outside)  # leads outside the root
    _link(root / "k" / "progress.json", root / "k" / "nothing")  # to nothing, inside the root
    _link(root / "m" / "progress.json", tmp_path / "gone" / "nothing")  # to nothing, outside
    db = tmp_path / "w.duckdb"
    ingest(db, [root], wait=10)

    body = client(db).get("/api/ingest/runs").json()
    shown = {f["path"]: f["error"] for f in body["problem_files"]}
    assert sorted(shown) == [
        "hf-a/checkpoint-500/trainer_state.json",
        "hf-b/checkpoint-500/trainer_state.json",
        "j/progress.json",
        "k/progress.json",
        "m/progress.json",
        "other/run-1/progress.json",
        "team/run-1/progress.json",
    ]
    assert shown["j/progress.json"] == "a symbolic link leading outside the ingest root"
    assert shown["k/progress.json"] == "a symbolic link to k/nothing, which does not exist: not read"
    assert shown["m/progress.json"] == "a symbolic link to …/nothing, which does not exist: not read"
    assert str(tmp_path) not in json.dumps(body)
    assert "/tmp" not in json.dumps(body["problem_files"])

    # `runlytics status` (the server's operator) keeps the stored paths and errors whole
    status = json.loads(_status(db, capsys, "--json"))
    errors = {f["path"]: f["error"] for f in status["problem_files"]}
    assert errors[str(root / "j" / "progress.json")].endswith(f"outside the ingest root {root}")


def _ledger(*paths: str) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("CREATE TABLE ingest_files (path VARCHAR)")
    con.executemany("INSERT INTO ingest_files VALUES (?)", [(p,) for p in paths])
    return con


def test_a_shown_path_is_told_apart_from_every_file_of_the_ledger() -> None:
    failing = "/srv/jobs/team/run-1/progress.json"
    ingested = "/srv/jobs/other/run-1/progress.json"  # not a problem file, but named alike
    con = _ledger(failing, ingested, "/srv/jobs/solo/progress.json")
    assert ingest_status.shown_paths(con, [(failing, None)]) == {failing: "team/run-1/progress.json"}
    # from its job folder on when a folder bears its job id; further up only when it must
    assert ingest_status.shown_paths(con, [(failing, "team/run-1")]) == {failing: "team/run-1/progress.json"}
    solo = "/srv/jobs/solo/progress.json"
    assert ingest_status.shown_paths(con, [(solo, None)]) == {solo: "solo/progress.json"}
    # the same path below two roots: the folders above them tell the files apart (and nothing less does)
    a, b = "/data/a/x/progress.json", "/scratch/a/x/progress.json"
    assert ingest_status.shown_paths(_ledger(a, b), [(a, None), (b, None)]) == {
        a: "data/a/x/progress.json",
        b: "scratch/a/x/progress.json",
    }
    # a path that is the tail of another: the longer one shows more, never the two alike
    short, long = "/a/x/progress.json", "/m/a/x/progress.json"
    shown = ingest_status.shown_paths(_ledger(short, long), [(short, None), (long, None)])
    assert shown == {short: "a/x/progress.json", long: "m/a/x/progress.json"}


def test_a_postgresql_ledger_path_shows_no_stage_and_its_host_where_it_must() -> None:
    one = "gpu-07:/var/lib/runlytics/stage.duckdb:/data/runs/run-42/progress.json"
    two = "gpu-08:/var/lib/runlytics/stage.duckdb:/data/runs/run-42/progress.json"
    alone = "gpu-08:/var/lib/runlytics/stage.duckdb:/data/runs/run-43/progress.json"
    con = _ledger(one, two, alone)
    shown = ingest_status.shown_paths(con, [(one, None), (two, None), (alone, None)])
    # the same file path on two hosts: told apart by the host, not by the server's folders
    assert shown == {
        one: "gpu-07:run-42/progress.json",
        two: "gpu-08:run-42/progress.json",
        alone: "run-43/progress.json",
    }
    # one host's two roots holding the same path: by the folders above them, as on DuckDB
    a, b = "h:/s.duckdb:/data/a/x/progress.json", "h:/s.duckdb:/scratch/a/x/progress.json"
    assert ingest_status.shown_paths(_ledger(a, b), [(a, None), (b, None)]) == {
        a: "data/a/x/progress.json",
        b: "scratch/a/x/progress.json",
    }


def test_two_stages_of_one_host_are_told_by_their_names_never_their_folders() -> None:
    # the review's shown.py: both showed gpu-07:data/runs/run-42/progress.json (alike, and server folders)
    a = "gpu-07:/var/lib/a.duckdb:/data/runs/run-42/progress.json"
    b = "gpu-07:/var/lib/b.duckdb:/data/runs/run-42/progress.json"
    other = "gpu-08:/var/lib/a.duckdb:/data/runs/run-42/progress.json"
    assert ingest_status.shown_paths(_ledger(a, b, other), [(a, None), (b, None), (other, None)]) == {
        a: "gpu-07:a.duckdb:run-42/progress.json",
        b: "gpu-07:b.duckdb:run-42/progress.json",
        other: "gpu-08:run-42/progress.json",  # its host tells it
    }
    # two stages of one name: as many of their folders as tell them apart
    x, y = "h:/srv/x/stage.duckdb:/d/run-1/progress.json", "h:/srv/y/stage.duckdb:/d/run-1/progress.json"
    assert ingest_status.shown_paths(_ledger(x, y), [(x, None), (y, None)]) == {
        x: "h:x/stage.duckdb:run-1/progress.json",
        y: "h:y/stage.duckdb:run-1/progress.json",
    }
    # a path that is the tail of another of its stage (two roots, one inside the other), on two
    # stages of the host: its whole path, with its stage's name
    short_a, long_a = "h:/s/a.duckdb:/r/x/progress.json", "h:/s/a.duckdb:/m/r/x/progress.json"
    short_b, long_b = "h:/s/b.duckdb:/r/x/progress.json", "h:/s/b.duckdb:/m/r/x/progress.json"
    con = _ledger(short_a, long_a, short_b, long_b)
    shown = ingest_status.shown_paths(con, [(short_a, None), (short_b, None), (long_a, None)])
    assert shown == {
        short_a: "h:a.duckdb:r/x/progress.json",
        short_b: "h:b.duckdb:r/x/progress.json",
        long_a: "h:a.duckdb:m/r/x/progress.json",
    }


def test_a_problem_files_error_names_no_folder_of_its_stage() -> None:
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE ingest_files (path VARCHAR, kind VARCHAR, job_id VARCHAR, outcome VARCHAR, error VARCHAR,"
        " last_read_at TIMESTAMP)"
    )
    for stage in ("a", "b"):
        path = f"gpu-07:/var/lib/{stage}.duckdb:/data/runs/run-42/progress.json"
        error = "cannot read: [Errno 13] Permission denied: '/data/runs/run-42/progress.json'"
        values = {"p": path, "e": error}
        con.execute("INSERT INTO ingest_files VALUES ($p, 'progress', NULL, 'failed', $e, NULL)", values)
    rows = ingest_status.problem_files(con)
    denied = "cannot read: [Errno 13] Permission denied: 'run-42/progress.json'"
    shown = [(f"gpu-07:{stage}.duckdb:run-42/progress.json", denied) for stage in ("a", "b")]
    assert [(row["path"], row["error"]) for row in rows] == shown


def test_shown_paths_on_postgresql(pg_url: str) -> None:
    # the API's reader on PostgreSQL: the same scan of the ledger (PostgreSQL has no suffix function)
    import psycopg

    paths = [
        "gpu-07:/var/lib/a.duckdb:/data/runs/run-42/progress.json",
        "gpu-07:/var/lib/b.duckdb:/data/runs/run-42/progress.json",
        "gpu-08:/var/lib/a.duckdb:/data/team/run-1/progress.json",
        "gpu-08:/var/lib/a.duckdb:/data/other/run-1/progress.json",
        "gpu-08:/var/lib/a.duckdb:/data/solo/progress.json",
        "gpu-08:/var/lib/a.duckdb:/data/100%_done/progress.json",  # no pattern: % and _ are characters
    ]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE ingest_files (path TEXT PRIMARY KEY)")
        for path in paths:
            conn.execute("INSERT INTO ingest_files VALUES (%s)", [path])
    reader = pg_reader.Reader(db.PostgresUrl(pg_url))
    cursor = reader.cursor()
    try:
        shown = ingest_status.shown_paths(cursor, [(path, None) for path in paths])
        assert shown == ingest_status.shown_paths(_ledger(*paths), [(path, None) for path in paths])
    finally:
        cursor.close()
        reader.close()
    assert list(shown.values()) == [
        "gpu-07:a.duckdb:run-42/progress.json",
        "gpu-07:b.duckdb:run-42/progress.json",
        "team/run-1/progress.json",
        "other/run-1/progress.json",
        "solo/progress.json",
        "100%_done/progress.json",
    ]


def test_error_texts_lose_every_absolute_path() -> None:
    public = ingest_status.public_text
    # a run's error: every path as its name
    assert (
        public("OSError: [Errno 28] No space left on device: '/srv/w.duckdb.parts/gpu_samples/p-1.parquet'")
        == "OSError: [Errno 28] No space left on device: '…/p-1.parquet'"
    )
    assert public('IO Error: Could not write file "/srv/w.duckdb.wal": disk full') == (
        'IO Error: Could not write file "…/w.duckdb.wal": disk full'
    )
    # no path: a URL, a ratio, a relative path stay
    text = "a Git LFS pointer (version https://git-lfs.github.com/spec/v1), 1/2 of runs/x"
    assert public(text) == text
    # a path right after a colon: DuckDB's file: names (the review's shown.py kept it whole)
    assert public("IO Error: file:/srv/secret/x.json") == "IO Error: file:…/x.json"
    assert public("see file:///srv/secret/x.json, or scp h:/srv/y.json") == "see file://…/x.json, or scp h:…/y.json"
    assert public(None) is None
    # a file's error: its own path and those below the folders its shown path leaves out, from there on
    own = "/srv/jobs/b/progress.json"
    assert public(f"cannot read: [Errno 13] Permission denied: '{own}'", own, "/srv/jobs/") == (
        "cannot read: [Errno 13] Permission denied: 'b/progress.json'"
    )
    claim = ": a second folder can't claim it (give one of them another job_id)"
    conflict = f"job id 'x' belongs to the folder /srv/jobs/my a{claim}"  # a blank in the folder's name
    assert public(conflict, own, "/srv/jobs/") == f"job id 'x' belongs to the folder my a{claim}"
    assert public("job id x belongs to another folder, /elsewhere/x: not read", own, "/srv/jobs/") == (
        "job id x belongs to another folder, …/x: not read"
    )
    outside = "a symbolic link to /etc/passwd, outside the ingest root /srv/jobs"
    assert public(outside, own, "/srv/jobs/") == "a symbolic link leading outside the ingest root"


def test_a_runs_error_in_the_api_names_no_server_path(
    tmp_path: Path, client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    _write(root / "a" / "progress.json", '{"job_id": "a", "status": "running", "history": [{"step": 1}]}')
    db = tmp_path / "w.duckdb"
    ingest(db, [root], wait=10)
    con = duckdb.connect(str(db))
    con.execute("UPDATE ingest_runs SET error = $e", {"e": f"OSError: cannot write '{tmp_path}/w.duckdb.parts/x'"})
    con.close()
    snapshots.publish(db)  # the copy the API reads
    runs = client(db).get("/api/ingest/runs").json()["runs"]
    assert runs[-1]["error"] == "OSError: cannot write '…/x'"
    assert str(tmp_path) in json.loads(_status(db, capsys, "--json"))["recent_runs"][-1]["error"]  # status: whole


# --- /metrics: the files that keep failing ----------------------------------------------------


def test_a_file_that_keeps_failing_stays_counted(tmp_path: Path, client: Any) -> None:
    root = tmp_path / "root"
    _write(root / "a" / "progress.json", '{"job_id": "a", "status": "running", "history": [{"step": 1}]}')
    _write(root / "b" / "progress.json", "{bad")
    db = tmp_path / "w.duckdb"
    for run in range(3):
        ingest(db, [root], wait=10)
        families = _scrape(client(db))
        assert families["runlytics_problem_files"] == {(("outcome", "failed"),): 1, (("outcome", "pending"),): 0}
        # the last run's count is what that run met: the unchanged file is not read again
        assert families["runlytics_last_ingest_files_failed"][()] == (1 if run == 0 else 0)
        paths = [f["path"] for f in client(db).get("/api/ingest/runs").json()["problem_files"]]
        assert paths == ["b/progress.json"]
    _write(root / "b" / "progress.json", '{"job_id": "b", "status": "running", "history": [{"step": 1}]}')
    os.utime(root / "b" / "progress.json", (OLD + 10, OLD + 10))
    ingest(db, [root], wait=10)
    failed = _scrape(client(db))["runlytics_problem_files"][(("outcome", "failed"),)]
    assert failed == 0


# --- the heartbeat -------------------------------------------------------------------------------


def test_a_quick_runs_heartbeat_names_no_recorded_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "root"
    _write(root / "b" / "progress.json", "{bad")
    db = tmp_path / "w.duckdb"
    ingest(db, [root], wait=10)
    full = journal.read_heartbeat(db)
    assert full is not None and full["outcome"] == "files_failed"
    assert full["run_id"] == full["recorded_run_id"] is not None
    assert quick.nothing_to_do(db, [root]) is not None
    report = json.loads(_status(db, capsys, "--json"))
    last = report["last_ingest"]
    # the quick run's outcome and counts, and no run id that names another run's row
    assert last["run_id"] is None and last["outcome"] == "ok" and last["summary"]["failed"] == 0
    assert last["recorded_run_id"] == full["run_id"] == report["recent_runs"][0]["run_id"]
    assert report["recent_runs"][0]["outcome"] == "files_failed" and len(report["recent_runs"]) == 1
    assert ": ok (nothing to do: not in ingest_runs); " in _status(db, capsys)
    assert quick.nothing_to_do(db, [root]) is not None  # a second one carries the recorded run on
    assert journal.read_heartbeat(db)["recorded_run_id"] == full["run_id"]  # type: ignore[index]


@pytest.mark.parametrize("how", ["folder", "mode", "garbled"])
def test_an_unreadable_heartbeat_is_said_as_such(
    tmp_path: Path, client: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    root = tmp_path / "root"
    _write(root / "a" / "progress.json", '{"job_id": "a", "status": "running", "history": [{"step": 1}]}')
    db = tmp_path / "w.duckdb"
    ingest(db, [root], wait=10)
    heartbeat = sidefiles.heartbeat(db)
    reason = {"folder": "is a directory", "mode": "permission denied", "garbled": "not JSON"}[how]
    if how == "folder":
        heartbeat.unlink()
        heartbeat.mkdir()
    elif how == "garbled":
        heartbeat.write_text("{half")
    elif os.geteuid() != 0:
        heartbeat.chmod(0)
    else:  # root reads a file of mode 000: the error another user meets, raised where it is read
        read_text = Path.read_text

        def refused(path: Path, *args: Any, **kwargs: Any) -> str:
            if path == heartbeat:
                raise PermissionError(13, "Permission denied", str(path))
            return read_text(path, *args, **kwargs)

        monkeypatch.setattr(Path, "read_text", refused)

    text = _status(db, capsys)
    assert f"last ingest unknown: {heartbeat} can't be read: {reason}" in text and "never" not in text
    report = json.loads(_status(db, capsys, "--json"))
    assert report["last_ingest"] is None and report["last_ingest_unreadable"] == f"{heartbeat} can't be read: {reason}"

    app = client(db)
    families = _scrape(app)
    assert families["runlytics_ingest_heartbeat_readable"] == {(): 0}
    assert families["runlytics_ingest_stale"] == {(): 1}  # a check that can't be made does not pass
    assert not families.get("runlytics_last_ingest_timestamp_seconds")  # unknown: no series
    ready = app.get("/readyz")
    assert ready.status_code == 503 and ready.json()["status"] == "stale"
    assert ready.json()["detail"].startswith(f"the ingest heartbeat w.duckdb.last-ingest.json can't be read ({reason})")
    assert str(tmp_path) not in ready.text
    monkeypatch.setenv(metrics.STALE_ENV, "0")  # the check off: nothing stale, still said unreadable
    assert app.get("/readyz").status_code == 200
    assert _scrape(app)["runlytics_ingest_heartbeat_readable"] == {(): 0}

    # the next ingest replaces a garbled one (an unreadable record is none to the ingest itself)
    if how == "garbled":
        ingest(db, [root], wait=10)
        assert journal.read_heartbeat(db) is not None


def test_a_readable_heartbeat_and_none_at_all(tmp_path: Path, client: Any, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "root"
    _write(root / "a" / "progress.json", '{"job_id": "a", "status": "running", "history": [{"step": 1}]}')
    db = tmp_path / "w.duckdb"
    ingest(db, [root], wait=10)
    assert _scrape(client(db))["runlytics_ingest_heartbeat_readable"] == {(): 1}
    assert json.loads(_status(db, capsys, "--json"))["last_ingest_unreadable"] is None
    sidefiles.heartbeat(db).unlink()
    assert "runlytics_ingest_heartbeat_readable" not in {k for k, v in _scrape(client(db)).items() if v}
    assert "last ingest never" in _status(db, capsys)
