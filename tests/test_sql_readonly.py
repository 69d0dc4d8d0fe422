"""`runlytics sql` writes nothing and reads no file it was not allowed to (issue #15, point 1).

Every probe runs the real command on a real warehouse of the sample jobs; after each one, every
file under the test's folder (the warehouse, its WAL and lock files, every snapshot, the
opted-in folders) must be byte-identical and no file may have appeared.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from runlytics.cli import main
from runlytics.ingest.formats.nvidia_smi import CsvImport
from runlytics.ingest.pipeline import ingest
from runlytics.warehouse import readonly, snapshots

REPO = Path(__file__).resolve().parent.parent
SAMPLE_JOBS = ["legacy-gpt2-003", "llama-sft-001", "mistral-lora-002"]
REFUSED = "runlytics sql: only one read-only SELECT per call; refused: "


class Lab:
    """A warehouse of the sample jobs, a folder the analyst opts into and one they did not."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.db = root / "w.duckdb"
        self.allowed = root / "allowed"
        self.outside = root / "outside"

    def sql(self, query: str, *options: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "runlytics", "sql", "--db", str(self.db), *options, query],
            cwd=self.root,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            timeout=120,
        )

    def sql_here(self, capsys: pytest.CaptureFixture[str], query: str, *options: str) -> tuple[int, str, str]:
        """``runlytics sql`` run in this process (``cli.main``): its exit code, stdout and stderr.
        The command's own process (its start, streams and exit) is the other tests' ``sql``."""
        capsys.readouterr()
        code = main(["sql", "--db", str(self.db), *options, query])
        out, err = capsys.readouterr()
        return code, out, err

    def files(self) -> dict[str, str]:
        """Every file under the lab and its SHA-256."""
        return {
            str(path.relative_to(self.root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(self.root.rglob("*"))
            if path.is_file()
        }


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    lab = Lab(tmp_path_factory.mktemp("sql"))
    shutil.copytree(REPO / "samples" / "jobs", lab.root / "jobs")
    ingest(lab.db, [lab.root / "jobs"], wait=10)
    assert snapshots.latest(lab.db) is not None
    lab.allowed.mkdir()
    lab.outside.mkdir()
    con = duckdb.connect()
    con.execute(
        f"COPY (SELECT * FROM (VALUES ('llama-sft-001', 12.5::DOUBLE), ('mistral-lora-002', 3.25)) t(job_id, usd)) "
        f"TO '{lab.allowed / 'cost.parquet'}'"
    )
    con.execute(f"COPY (SELECT 'llama-sft-001' AS job_id, 'alice' AS owner) TO '{lab.allowed / 'owners.csv'}'")
    con.execute(f"COPY (SELECT 'llama-sft-001' AS job_id, 1 AS secret) TO '{lab.outside / 'secret.parquet'}'")
    con.close()
    (lab.allowed / "leak.parquet").symlink_to(lab.outside / "secret.parquet")
    return lab


ALLOW = ["--allow-read", "{allowed}"]
# (query, options, what stderr must say) for every write or escape attempt; {db}, {root},
# {allowed} (the opted-in folder) and {outside} stand for the lab's paths
PROBES = [
    # the reproduction of issue #15: both statements, and each alone
    ("ATTACH '{db}' AS w (READ_WRITE); DELETE FROM w.jobs", [], REFUSED + "2 statements (ATTACH; DELETE)"),
    ("ATTACH '{db}' AS w (READ_WRITE)", [], REFUSED + "ATTACH"),
    ("ATTACH '{allowed}/new.duckdb' AS n", ALLOW, REFUSED + "ATTACH"),
    ("DETACH w", [], REFUSED + "DETACH"),
    ("USE memory", [], REFUSED + "USE (kind: SET)"),
    ("DELETE FROM jobs", [], REFUSED + "DELETE"),
    ("/* a comment */ delete from jobs", [], REFUSED + "DELETE"),
    ("TRUNCATE jobs", [], REFUSED + "TRUNCATE (kind: DELETE)"),
    ("INSERT INTO jobs SELECT * FROM jobs", [], REFUSED + "INSERT"),
    ("WITH j AS (SELECT * FROM jobs) INSERT INTO jobs SELECT * FROM j", [], REFUSED + "INSERT"),
    ("UPDATE jobs SET status = 'failed'", [], REFUSED + "UPDATE"),
    ("MERGE INTO jobs USING jobs j ON jobs.job_id = j.job_id WHEN MATCHED THEN DELETE", [], REFUSED + "MERGE"),
    ("CREATE TABLE t AS SELECT 1 AS x", [], REFUSED + "CREATE"),
    ("CREATE VIEW v AS SELECT 1 AS x", [], REFUSED + "CREATE"),
    ("CREATE TEMP TABLE t (x INT)", [], REFUSED + "CREATE"),
    ("CREATE MACRO m(x) AS x + 1", [], REFUSED + "CREATE"),
    ("CREATE SECRET s (TYPE s3, KEY_ID 'k', SECRET 's')", [], REFUSED + "CREATE"),
    ("DROP VIEW job_analytics", [], REFUSED + "DROP"),
    ("ALTER TABLE jobs ADD COLUMN x INT", [], REFUSED + "ALTER"),
    ("COPY (SELECT 1) TO '{root}/out.csv'", [], REFUSED + "COPY"),
    ("COPY jobs TO '{allowed}/jobs.parquet'", ALLOW, REFUSED + "COPY"),
    ("COPY jobs FROM '{allowed}/owners.csv'", ALLOW, REFUSED + "COPY"),
    ("EXPORT DATABASE '{root}/export'", [], REFUSED + "EXPORT"),
    ("EXPORT DATABASE '{allowed}/export'", ALLOW, REFUSED + "EXPORT"),
    ("EXPLAIN ANALYZE COPY (SELECT 1) TO '{allowed}/e.csv'", ALLOW, REFUSED + "EXPLAIN"),
    ("INSTALL httpfs", [], REFUSED + "INSTALL (kind: LOAD)"),
    ("LOAD httpfs", [], REFUSED + "LOAD"),
    ("UPDATE EXTENSIONS", [], REFUSED + "UPDATE (kind: UNKNOWN)"),
    ("SET enable_external_access = true", [], REFUSED + "SET"),
    ("SET threads = 1", [], REFUSED + "SET"),
    ("SET VARIABLE x = 1", [], REFUSED + "SET"),
    ("RESET lock_configuration", [], REFUSED + "RESET (kind: SET)"),
    ("PRAGMA threads = 1", [], REFUSED + "PRAGMA (kind: SET)"),
    ("PRAGMA enable_profiling", [], REFUSED + "PRAGMA"),
    ("CHECKPOINT", [], REFUSED + "CHECKPOINT (kind: CALL)"),
    ("FORCE CHECKPOINT", [], REFUSED + "FORCE (kind: CALL)"),
    ("CALL force_checkpoint()", [], REFUSED + "CALL"),
    ("VACUUM", [], REFUSED + "VACUUM"),
    ("ANALYZE", [], REFUSED + "ANALYZE (kind: VACUUM)"),
    ("BEGIN TRANSACTION", [], REFUSED + "BEGIN (kind: TRANSACTION)"),
    ("PREPARE p AS SELECT 1", [], REFUSED + "PREPARE"),
    ("SELECT 1; SELECT 2", [], REFUSED + "2 statements (SELECT; SELECT)"),
    ("", [], REFUSED + "no statement"),
    # SELECTs that try to reach outside: DuckDB's own locks refuse them
    ("SELECT * FROM read_text('/etc/passwd')", [], 'Permission Error: Cannot access file "/etc/passwd"'),
    ("SELECT * FROM read_csv('/etc/passwd')", [], 'Permission Error: Cannot access file "/etc/passwd"'),
    ("SELECT * FROM read_csv('/etc/passwd')", ALLOW, 'Permission Error: Cannot access file "/etc/passwd"'),
    ("FROM glob('/etc/*')", [], "Permission Error"),
    ("FROM read_blob('{db}')", [], "Permission Error"),
    ("FROM read_parquet('{outside}/secret.parquet')", ALLOW, "Permission Error"),
    ("FROM read_parquet('{allowed}/../outside/secret.parquet')", ALLOW, "Permission Error"),
    ("FROM read_parquet('{allowed}/leak.parquet')", ALLOW, "Permission Error"),  # a symlink out
    ("FROM read_parquet('{allowed}/cost.parquet')", [], "Permission Error"),
    ("FROM read_parquet('https://example.com/x.parquet')", [], "Permission Error"),
]


@pytest.mark.parametrize(
    ("query", "options", "message"), PROBES, ids=[f"{i}:{p[0][:40]}" for i, p in enumerate(PROBES)]
)
def test_probe_is_refused_and_changes_nothing(
    lab: Lab,
    query: str,
    options: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # in this process (a process each took 55 x ~0.5 s): the refusal is the command's, not its start's
    monkeypatch.chdir(lab.root)
    paths = {"db": lab.db, "root": lab.root, "allowed": lab.allowed, "outside": lab.outside}
    before = lab.files()
    code, out, err = lab.sql_here(capsys, query.format(**paths), *(o.format(**paths) for o in options))
    assert code == 4, (query, out, err)
    assert out == ""
    assert err.startswith("runlytics sql: ")
    assert err.count("\n") == 1, err  # one line
    assert message.format(**paths) in err, err
    assert lab.files() == before


@pytest.mark.parametrize("inner", ["DELETE FROM jobs", "ATTACH ''{db}'' AS w (READ_WRITE)", "SET threads = 1"])
def test_query_function_runs_only_selects(lab: Lab, inner: str) -> None:
    before = lab.files()
    done = lab.sql(f"SELECT * FROM query('{inner.format(db=lab.db)}')")
    assert done.returncode == 4
    assert done.stderr.startswith("runlytics sql: Parser Error: Expected a single SELECT statement")
    assert lab.files() == before


def test_the_reproduction_leaves_every_job(lab: Lab) -> None:
    before = lab.files()
    assert lab.sql(f"ATTACH '{lab.db}' AS w (READ_WRITE); DELETE FROM w.jobs").returncode == 4
    assert lab.sql(f"ATTACH '{lab.db}' AS w (READ_WRITE)").returncode == 4
    assert lab.files() == before
    done = lab.sql("SELECT job_id FROM jobs ORDER BY job_id", "--format", "json")
    assert done.returncode == 0, done.stderr
    assert [r["job_id"] for r in json.loads(done.stdout)] == SAMPLE_JOBS


def test_a_refused_query_opens_no_warehouse(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    done = lab.sql("DELETE FROM jobs")
    assert done.returncode == 4
    assert list(tmp_path.iterdir()) == []  # not even created and migrated


def test_every_view_answers_as_on_an_open_connection(lab: Lab) -> None:
    snapshot = snapshots.latest(lab.db)
    assert snapshot is not None
    before = lab.files()
    con = duckdb.connect(str(snapshot), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        views = [
            v for (v,) in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1").fetchall()
        ]
        expected = {v: repr(con.execute(f'SELECT * FROM "{v}" ORDER BY ALL').fetchall()) for v in views}
    finally:
        con.close()
    assert len(views) >= 10 and "job_analytics" in views
    locked = readonly.connect(lab.db, [])
    try:
        assert locked.execute("SELECT current_setting('enable_external_access')").fetchone() == (False,)
        answered = {v: repr(locked.execute(f'SELECT * FROM "{v}" ORDER BY ALL').fetchall()) for v in views}
    finally:
        locked.close()
    assert answered == expected
    assert lab.files() == before


def test_selects_still_answer_through_the_command(lab: Lab) -> None:
    before = lab.files()
    done = lab.sql("SELECT job_id, status FROM job_analytics ORDER BY job_id", "--format", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [
        {"job_id": "legacy-gpt2-003", "status": "failed"},
        {"job_id": "llama-sft-001", "status": "completed"},
        {"job_id": "mistral-lora-002", "status": "running"},
    ]
    for query in ("DESCRIBE jobs", "SHOW TABLES", "SUMMARIZE steps", "FROM job_results LIMIT 1", "VALUES (1)"):
        done = lab.sql(query)
        assert done.returncode == 0, (query, done.stderr)
    # a table function that would write on a writable database is harmless on the snapshot
    assert lab.sql("FROM checkpoint()").returncode == 0
    assert lab.files() == before


def test_allow_read_joins_own_files_with_the_views(lab: Lab) -> None:
    before = lab.files()
    query = (
        f"SELECT j.job_id, j.status, c.usd, o.owner FROM job_analytics j "
        f"JOIN '{lab.allowed}/cost.parquet' c USING (job_id) "
        f"LEFT JOIN read_csv('{lab.allowed}/*.csv') o USING (job_id) ORDER BY j.job_id"
    )
    done = lab.sql(query, "--allow-read", str(lab.allowed), "--format", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [
        {"job_id": "llama-sft-001", "status": "completed", "usd": 12.5, "owner": "alice"},
        {"job_id": "mistral-lora-002", "status": "running", "usd": 3.25, "owner": None},
    ]
    # relative to the working folder, and with the option repeated
    done = lab.sql(
        "SELECT count(*) AS n FROM 'allowed/cost.parquet' JOIN 'outside/secret.parquet' USING (job_id)",
        "--allow-read", "allowed", "--allow-read", "outside", "--format", "json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [{"n": 1}]
    assert lab.files() == before


def test_allow_read_needs_a_folder(lab: Lab) -> None:
    done = lab.sql("SELECT 1", "--allow-read", str(lab.root / "missing"))
    assert done.returncode == 2
    assert "not a folder" in done.stderr


def test_the_settings_cannot_be_undone_from_inside(lab: Lab) -> None:
    con = readonly.connect(lab.db, [lab.allowed])
    try:
        for statement in ("SET enable_external_access = true", "SET lock_configuration = false"):
            with pytest.raises(duckdb.Error, match="locked"):
                con.execute(statement)
        settings = dict(
            con.execute(
                "SELECT name, value FROM duckdb_settings() WHERE name IN ('enable_external_access', "
                "'autoload_known_extensions', 'autoinstall_known_extensions', 'lock_configuration', 'temp_directory')"
            ).fetchall()
        )
    finally:
        con.close()
    assert settings == {
        "enable_external_access": "false",
        "autoload_known_extensions": "false",
        "autoinstall_known_extensions": "false",
        "lock_configuration": "true",
        "temp_directory": "",
    }


def test_views_over_sealed_gpu_samples_answer(tmp_path: Path) -> None:
    """The views read the warehouse's own Parquet parts (samples older than the hot hour are
    sealed there at once): the lock-down allows reading them, and nothing else."""
    (tmp_path / "jobs" / "j1").mkdir(parents=True)
    (tmp_path / "jobs" / "j1" / "progress.json").write_text(
        '{"job_id": "j1", "status": "completed", "history": [{"step": 1, "timestamp": "2024-01-01T00:00:02Z"}]}'
    )
    log = tmp_path / "gpu.csv"
    log.write_text(
        "timestamp, index, utilization.gpu [%], memory.used [MiB]\n"
        "2024/01/01 00:00:00.000, 0, 50 %, 100 MiB\n2024/01/01 00:00:01.000, 0, 70 %, 300 MiB\n"
    )
    lab = Lab(tmp_path)
    ingest(lab.db, [tmp_path / "jobs"], csv_imports=[CsvImport(log, "j1")], wait=10)
    assert list((tmp_path / "w.duckdb.parts").rglob("*.parquet"))  # sealed, not in the file
    before = lab.files()
    query = "SELECT job_id, average_gpu_utilization AS u, peak_gpu_memory_mb AS m FROM job_analytics"
    done = lab.sql(query, "--format", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [{"job_id": "j1", "u": 60.0, "m": 300.0}]
    done = lab.sql("SELECT count(*) AS n, max(utilization_percent) AS u FROM gpu_samples", "--format", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [{"n": 2, "u": 70.0}]
    # the parts folder is readable, the folder beside it is not
    done = lab.sql(f"SELECT count(*) FROM '{tmp_path / 'gpu.csv'}'")
    assert done.returncode != 0 and "file system operations are disabled" in done.stderr
    assert lab.files() == before
