"""Bulk export (docs/export.md): `runlytics export` round-trips, and the API streams step histories.

The fleet below covers what a round trip can lose: NaN losses, JSON configs and trainer
metrics, lists (analytics warnings), GPU samples, an id that looks like a number ("123"),
one that needs escaping in a folder name, and a job named "export" (the API's route name).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
from conftest import DUCKDB_ENGINE, REPO, Engine, Lab
from fastapi.testclient import TestClient

from runlytics.api.app import create_app
from runlytics.warehouse import export, snapshots, times
from runlytics.warehouse.fleet import UnknownJobs

T0 = 1_735_689_600  # 2025-01-01T00:00:00Z
DAY = 86_400
ODD = "odd id=1%"
# docs/export.md: one way to read every table, partitioned or not, job_id always text
READ = "read_parquet($glob, hive_partitioning = true, hive_types_autocast = false)"
# What docs/export.md ("What is written") promises, written out here rather than read from the
# module under test: exported table -> the warehouse relation it must equal
SOURCES = {
    "jobs": "jobs",
    "steps": "step_facts",
    "step_gpus": "step_gpus",
    "checkpoints": "checkpoints",
    "gpu_samples": "gpu_samples",
    "analytics": "job_results",
}
TABLES = (*SOURCES, "analytics_long")
PARTITIONED = ("steps", "step_gpus", "checkpoints", "gpu_samples")  # by job_id, Hive style
# analytics_long's section of each numeric figure (analytics.md's sections; coverage for the counts)
SECTION_OF = {
    **dict.fromkeys(("total_seconds", "training_seconds", "overhead_seconds"), "duration"),
    **dict.fromkeys(
        ("total_iterations", "total_samples", "average_samples_per_second", "peak_samples_per_second",
         "average_iteration_time"), "performance"),
    **dict.fromkeys(
        ("initial_loss", "final_loss", "best_loss", "loss_reduction_percent", "final_eval_loss", "best_eval_loss"),
        "losses"),
    **dict.fromkeys(
        ("average_gpu_utilization", "average_gpu_memory_mb", "peak_gpu_memory_mb", "average_gpu_temp_celsius",
         "peak_gpu_temp_celsius"), "resource_utilization"),
    **dict.fromkeys(("total_checkpoints", "checkpoint_frequency_steps"), "checkpoints"),
    **dict.fromkeys(("gpu_utilization_score", "throughput_score", "overall_score"), "efficiency"),
    **dict.fromkeys(
        ("total_energy_wh", "energy_per_1000_samples_wh", "gpus_with_power", "idle_gpus", "average_throttled_share"),
        "energy"),
    **dict.fromkeys(("step_rows", "timed_rows", "nonfinite_losses"), "coverage"),
}  # fmt: skip
STEPS_API = "/api/training/export/steps"


def history(start: float, losses: list[float], gpus: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "step": 10 * (i + 1),
            "timestamp": start + 10 * (i + 1),
            "loss": loss,
            "learning_rate": 1e-4,
            "samples": 40,
            "iteration_time": 1.0,
            "gpus": [
                {"index": g, "utilization_percent": 50.0 + g, "memory_used_mb": 1000.0 * (g + 1), "temperature_c": 60}
                for g in range(gpus)
            ],
        }
        for i, loss in enumerate(losses)
    ]


def job(job_id: str, status: str, start: float, losses: list[float], **extra: Any) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "status": status,
        "started_at": start,
        "config": {"model_name": "m", "batch_size": 4, "nested": {"x": [1, "a,b"]}},
        "history": history(start, losses, gpus=extra.pop("gpus", 0)),
        **extra,
    }


FLEET: dict[str, dict[str, Any]] = {
    "alpha": job("alpha", "completed", T0, [3.0, float("nan"), 2.0, 1.5], gpus=2, ended_at=T0 + 100,
                 checkpoints=[{"step": 20}, {"step": 40, "eval_loss": 1.4}]),
    "bravo": job("bravo", "running", T0 + 10 * DAY, [2.5, 2.4], gpus=1),
    "123": job("123", "failed", T0 + 20 * DAY, [4.0, 3.0]),
    "export": job("export", "completed", T0 + 30 * DAY, [1.0, 0.5, 0.25]),
    ODD: job(ODD, "completed", T0 + 40 * DAY, [9.0]),
    "queued": {"job_id": "queued", "status": "queued"},
}  # fmt: skip


def trainer_state(steps: list[int]) -> dict[str, Any]:
    entries = [{"step": s, "loss": 3.0 - s / 100, "grad_norm": 0.5, "epoch": s / 100, "eval_acc": 0.9} for s in steps]
    return {"global_step": steps[-1], "max_steps": 100, "save_steps": 10, "train_batch_size": 8, "log_history": entries}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    lab = Lab(tmp_path_factory.mktemp("export"))
    for job_id, doc in FLEET.items():
        lab.write_job(job_id, doc)
    state = lab.root / "mixed" / "checkpoint-30"
    state.mkdir(parents=True)
    (state / "trainer_state.json").write_text(json.dumps(trainer_state([10, 20, 30])))
    lab.write_job("mixed", job("mixed", "running", T0 + 5 * DAY, [2.0]))
    spool = lab.root.parent / "spool"
    spool.mkdir()
    samples = [
        {"ts": T0 + 10 * DAY + t, "host": "node-1", "job_id": "bravo", "gpu_index": 0,
         "utilization_percent": 90.0, "memory_used_mb": 100.0, "temperature_c": 50.0, "power_w": 200.0}
        for t in (0, 5, 10)
    ]  # fmt: skip
    (spool / "node-1.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    summary = lab.ingest(lab.root, spool_root=spool)
    assert summary.failed == 0, summary.problems
    return lab


def norm(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple("NaN" if isinstance(v, float) and math.isnan(v) else v for v in row)


def columns(lab: Lab, relation: str) -> dict[str, str]:
    return {name: kind for name, kind, *_ in lab.query(f"DESCRIBE {relation}")}


def warehouse_rows(lab: Lab, relation: str, where: str = "", params: Any = None) -> list[tuple[Any, ...]]:
    names = ", ".join(f'"{c}"' for c in columns(lab, relation))
    return sorted((norm(r) for r in lab.query(f"SELECT {names} FROM {relation} {where}", params)), key=repr)


def exported(source: str, relation: str, names: list[str], params: Any) -> tuple[list[tuple[Any, ...]], dict]:
    """The rows (columns in the warehouse's order) and column types of an exported table."""
    con = duckdb.connect()
    try:
        quoted = ", ".join(f'"{c}"' for c in names)
        rows = con.execute(f"SELECT {quoted} FROM {source}", params).fetchall()
        kinds = {
            name: kind for name, kind, *_ in con.execute(f"DESCRIBE SELECT {quoted} FROM {source}", params).fetchall()
        }
    finally:
        con.close()
    return sorted((norm(r) for r in rows), key=repr), kinds


def parquet_table(out: Path, table: str, names: list[str]) -> tuple[list[tuple[Any, ...]], dict]:
    return exported(READ, table, names, {"glob": str(out / table / "**" / "*.parquet")})


def csv_table(out: Path, table: str, kinds: dict[str, str]) -> tuple[list[tuple[Any, ...]], dict]:
    source = "read_csv($path, header = true, columns = $columns)"
    return exported(source, table, list(kinds), {"path": str(out / f"{table}.csv"), "columns": kinds})


def run_export(
    lab: Lab, out: Path, fmt: str = "parquet", engine: Engine = DUCKDB_ENGINE, **selection: Any
) -> export.Result:
    """The export of the lab's warehouse read on ``engine`` (conftest's: DuckDB, or its PostgreSQL copy)."""
    with engine.reader(lab.db) as con:
        return export.export(con, out, fmt, export.Selection(**selection))


def long_rows(lab: Lab, job_ids: list[str] | None = None) -> list[tuple[Any, ...]]:
    """job_results in long form, worked out in Python: each numeric non-null figure, with its section."""
    kinds = columns(lab, "job_results")
    numeric = [c for c, k in kinds.items() if k in ("DOUBLE", "BIGINT")]
    out = []
    for row in lab.query(f"SELECT job_id, {', '.join(numeric)} FROM job_results"):
        if job_ids is None or row[0] in job_ids:
            for name, value in zip(numeric, row[1:], strict=True):
                if value is not None:
                    out.append((row[0], SECTION_OF[name], name, float(value)))
    return sorted(out, key=repr)


# --- the CLI's export -------------------------------------------------------------------


def test_parquet_round_trip_gives_the_warehouse_rows(fleet: Lab, module_engine: Engine, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_export(fleet, out, engine=module_engine)
    assert result.jobs == 7
    for table, relation in SOURCES.items():
        kinds = columns(fleet, relation)
        rows, read_kinds = parquet_table(out, table, list(kinds))
        assert rows == warehouse_rows(fleet, relation), table
        assert read_kinds == kinds, table
        assert result.rows[table] == len(rows) > 0, table
    long, _ = parquet_table(out, "analytics_long", ["job_id", "section", "metric", "value"])
    assert long == long_rows(fleet)
    assert result.rows["analytics_long"] == len(long)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "parquet"
    assert {t: v["rows"] for t, v in manifest["tables"].items()} == result.rows


@pytest.mark.parametrize("selection", [{}, {"job_ids": ("alpha", "mixed", ODD)}], ids=["all", "some"])
def test_partitions_written_a_few_jobs_at_a_time(
    fleet: Lab, module_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, selection: dict[str, Any]
) -> None:
    monkeypatch.setattr(export, "PART_ROWS", 3)  # a COPY per job (or two, for the small ones)
    out = tmp_path / "out"
    run_export(fleet, out, **selection, engine=module_engine)
    ids = list(selection.get("job_ids", [r[0] for r in fleet.query("SELECT job_id FROM jobs")]))
    for table in PARTITIONED:
        relation = SOURCES[table]
        kinds = columns(fleet, relation)
        expected = warehouse_rows(fleet, relation, "WHERE job_id IN (SELECT unnest($ids))", {"ids": ids})
        assert parquet_table(out, table, list(kinds))[0] == expected, table


def test_parquet_layout_is_hive_partitions_by_job(fleet: Lab, module_engine: Engine, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_export(fleet, out, engine=module_engine)
    assert sorted(p.name for p in out.iterdir()) == sorted([*TABLES, "manifest.json"])
    for table in PARTITIONED:
        for folder in (out / table).iterdir():
            assert folder.name.startswith("job_id=") and list(folder.glob("*.parquet")), folder
    steps = {p.name for p in (out / "steps").iterdir()}
    assert {"job_id=alpha", "job_id=123", "job_id=export", "job_id=odd%20id%3D1%25"} <= steps
    # the per-job tables are one file each, job_id inside
    for table in ("jobs", "analytics", "analytics_long"):
        assert [p.name for p in (out / table).iterdir()] == ["data_0.parquet"]
    # a reader that infers partition types makes "123" a number: docs/export.md says how not to
    con = duckdb.connect()
    glob = {"glob": str(out / "steps" / "**" / "*.parquet")}
    assert con.execute(f"SELECT DISTINCT job_id FROM {READ} WHERE job_id = '123'", glob).fetchall() == [("123",)]
    one = {"glob": str(out / "steps" / "job_id=123" / "*.parquet")}
    inferred = "read_parquet($glob, hive_partitioning = true)"
    assert con.execute(f"SELECT DISTINCT typeof(job_id) FROM {inferred}", one).fetchall() == [("BIGINT",)]
    assert con.execute(f"SELECT DISTINCT typeof(job_id) FROM {READ}", one).fetchall() == [("VARCHAR",)]
    # a table without rows is one empty file with the table's columns (still readable)
    empty = run_export(fleet, tmp_path / "empty", job_ids=("alpha",), engine=module_engine)
    assert empty.rows["gpu_samples"] == 0
    assert [p.name for p in (tmp_path / "empty" / "gpu_samples").iterdir()] == ["data_0.parquet"]
    rows, kinds = parquet_table(tmp_path / "empty", "gpu_samples", list(columns(fleet, "gpu_samples")))
    assert rows == [] and kinds == columns(fleet, "gpu_samples")


def test_csv_export_gives_the_warehouse_rows(fleet: Lab, module_engine: Engine, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_export(fleet, out, "csv", engine=module_engine)
    assert sorted(p.name for p in out.iterdir()) == sorted([*(f"{t}.csv" for t in TABLES), "manifest.json"])
    for table, relation in SOURCES.items():
        kinds = columns(fleet, relation)
        rows, _ = csv_table(out, table, kinds)
        assert rows == warehouse_rows(fleet, relation), table
        assert result.rows[table] == len(rows)
    long, _ = csv_table(out, "analytics_long", {"job_id": "VARCHAR", "section": "VARCHAR", "metric": "VARCHAR",
                                               "value": "DOUBLE"})  # fmt: skip
    assert long == long_rows(fleet)


def _documented_csv_readers() -> str:
    """docs/export.md's Python block that reads a CSV export (the one naming manifest.json)."""
    text = (REPO / "docs" / "export.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]
    (block,) = [b for b in blocks if "manifest.json" in b and "read_csv" in b]
    return block


def test_the_documented_csv_readers_give_back_nulls_empty_texts_and_ids_as_text(tmp_path: Path) -> None:
    """An id that looks like a number (every one here) stays text, and an empty field is NULL where a
    quoted empty one is "", in the column that holds both (a column of NULLs alone passed before)."""
    lab = Lab(tmp_path)
    for job_id, config in (("007", {"model_name": ""}), ("123", {"model_name": "m"}), ("1e3", {})):
        lab.write_job(job_id, {"job_id": job_id, "status": "completed", "config": config, "history": [{"step": 1}]})
    lab.ingest(lab.root)
    chosen = ["job_id", "model_name", "status"]
    expected = [("007", "", "completed"), ("123", "m", "completed"), ("1e3", None, "completed")]
    assert sorted(lab.query("SELECT job_id, model_name, status FROM jobs")) == expected
    out = tmp_path / "out"
    run_export(lab, out, "csv")
    found: dict[str, Any] = {}
    code = _documented_csv_readers().replace("OUT/", f"{out}/").replace("gpu_samples", "jobs")
    exec(code, found)  # noqa: S102 - the docs' own code, for the table of jobs (the same for each)
    assert sorted(found["in_duckdb"].select(*chosen).fetchall()) == expected

    def plain(value: Any) -> Any:
        return None if value is None or (isinstance(value, float) and math.isnan(value)) else value

    in_pandas = found["in_pandas"][chosen].itertuples(index=False)
    assert sorted(tuple(plain(v) for v in row) for row in in_pandas) == expected
    assert sorted(found["in_polars"].select(chosen).rows()) == expected


def test_jobs_selection(fleet: Lab, module_engine: Engine, tmp_path: Path) -> None:
    out = tmp_path / "out"
    chosen = ["alpha", "123", ODD]
    result = run_export(fleet, out, job_ids=tuple(chosen), engine=module_engine)
    assert result.jobs == 3
    where = "WHERE job_id IN (SELECT unnest($ids))"
    for table, relation in SOURCES.items():
        kinds = columns(fleet, relation)
        assert parquet_table(out, table, list(kinds))[0] == warehouse_rows(fleet, relation, where, {"ids": chosen})
    long, _ = parquet_table(out, "analytics_long", ["job_id", "section", "metric", "value"])
    assert long == long_rows(fleet, chosen)
    assert json.loads((out / "manifest.json").read_text())["selection"]["job_ids"] == chosen


def test_since_selection_on_start_time(fleet: Lab, module_engine: Engine, tmp_path: Path) -> None:
    out = tmp_path / "out"
    since = times.instant("2025-01-21T01:00:00+01:00")  # = 2025-01-21T00:00Z, "123"'s start
    assert since == datetime(2025, 1, 21)
    result = run_export(fleet, out, "csv", since=since, engine=module_engine)
    jobs, _ = csv_table(out, "jobs", columns(fleet, "jobs"))
    assert sorted(r[0] for r in jobs) == ["123", "export", ODD]  # at or after; never-started jobs left out
    assert result.jobs == 3
    both = run_export(fleet, tmp_path / "both", "csv", since=since, job_ids=("alpha", "export"), engine=module_engine)
    assert both.jobs == 1 and both.rows["jobs"] == 1


def test_unknown_jobs_are_named_and_nothing_is_written(fleet: Lab, module_engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(UnknownJobs) as caught:
        run_export(fleet, tmp_path / "out", job_ids=("alpha", "nope", "'; DROP TABLE jobs; --"), engine=module_engine)
    assert caught.value.job_ids == ["nope", "'; DROP TABLE jobs; --"]
    assert list(tmp_path.iterdir()) == []


def test_refuses_an_existing_out_unless_overwrite(fleet: Lab, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    run_export(fleet, out, job_ids=("alpha",))  # an empty folder is fine
    with pytest.raises(export.ExportError, match="not empty"):
        run_export(fleet, out)
    con = snapshots.connect_latest(fleet.db)
    try:
        export.export(con, out, "csv", export.Selection(job_ids=("bravo",)), overwrite=True)
    finally:
        con.close()
    assert not (out / "steps").exists() and (out / "steps.csv").exists()  # replaced, not merged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder left
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    con = snapshots.connect_latest(fleet.db)
    try:
        with pytest.raises(export.ExportError, match="holds no earlier export"):
            export.export(con, other, overwrite=True)
        (tmp_path / "file").write_text("x")
        with pytest.raises(export.ExportError, match="not a folder"):
            export.export(con, tmp_path / "file", overwrite=True)
    finally:
        con.close()
    assert (other / "notes.txt").read_text() == "mine"


def test_a_failed_export_leaves_no_output(fleet: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = export._copy

    def failing(con: Any, table: str, *args: Any) -> int:
        if table == "checkpoints":
            raise duckdb.IOException("disk full")
        return real(con, table, *args)

    monkeypatch.setattr(export, "_copy", failing)
    with pytest.raises(duckdb.IOException):
        run_export(fleet, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def runlytics(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RUNLYTICS_DB", None)
    command = [sys.executable, "-m", "runlytics", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_cli_export(fleet: Lab, tmp_path: Path) -> None:
    db = str(fleet.db)
    done = runlytics("export", "out", "--db", db, "--jobs", "alpha,export", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "parquet export of 2 jobs" in done.stdout and "steps 7" in done.stdout
    kinds = columns(fleet, "step_facts")
    rows, _ = parquet_table(tmp_path / "out", "steps", list(kinds))
    assert rows == warehouse_rows(fleet, "step_facts", "WHERE job_id IN ('alpha', 'export')")

    again = runlytics("export", "out", "--db", db, cwd=tmp_path)
    assert again.returncode == 2 and "not empty" in again.stderr
    csv_done = runlytics("export", "out", "--db", db, "--format", "csv", "--overwrite", "--quiet",
                         "--since", "2025-01-31", cwd=tmp_path)  # fmt: skip
    assert csv_done.returncode == 0 and csv_done.stdout == "", csv_done.stderr
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["jobs"] == 2  # export, ODD

    unknown = runlytics("export", "x", "--db", db, "--jobs", "alpha,nope", cwd=tmp_path)
    assert unknown.returncode == 4 and "'nope'" in unknown.stderr
    bad_time = runlytics("export", "x", "--db", db, "--since", "yesterday", cwd=tmp_path)
    assert bad_time.returncode == 2 and "--since" in bad_time.stderr
    no_jobs = runlytics("export", "x", "--db", db, "--jobs", ",", cwd=tmp_path)
    assert no_jobs.returncode == 2
    bad_format = runlytics("export", "x", "--db", db, "--format", "xlsx", cwd=tmp_path)
    assert bad_format.returncode == 2
    assert not (tmp_path / "x").exists()


# --- the API's streaming export ---------------------------------------------------------


@pytest.fixture
def client(fleet: Lab, module_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The API over the fleet on each engine (PostgreSQL: its copy); the answers are checked
    against the DuckDB file's rows."""
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    app = create_app(module_engine.warehouse(fleet.db))
    app.state.token = None
    with TestClient(app) as client:
        yield client
    assert list(temp.iterdir()) == []  # every temporary file is gone


def step_rows(fleet: Lab, job_ids: list[str]) -> list[tuple[Any, ...]]:
    rows = fleet.query("SELECT * FROM step_facts WHERE job_id IN (SELECT unnest($ids)) ORDER BY job_id, step",
                       {"ids": job_ids})  # fmt: skip
    return [norm(r) for r in rows]


def parse_csv(fleet: Lab, text: str, folder: Path) -> list[tuple[Any, ...]]:
    """The rows of a CSV answer, typed as step_facts' columns (and in the answer's order)."""
    kinds = columns(fleet, "step_facts")
    assert text.splitlines()[0] == ",".join(kinds)
    path = folder / "answer.csv"
    path.write_text(text)
    con = duckdb.connect()
    try:
        rows = con.execute("SELECT * FROM read_csv($p, header = true, columns = $c)", {"p": str(path), "c": kinds})
        return [norm(r) for r in rows.fetchall()]
    finally:
        con.close()


def test_api_streams_csv_by_job_and_step(fleet: Lab, client: TestClient, tmp_path: Path) -> None:
    response = client.get(STEPS_API, params={"job_ids": "mixed,alpha,123,queued,alpha"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert 'filename="steps.csv"' in response.headers["content-disposition"]
    assert parse_csv(fleet, response.text, tmp_path) == step_rows(fleet, ["123", "alpha", "mixed"])  # sorted by job


def test_api_csv_in_many_groups_and_chunks(
    fleet: Lab, client: TestClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(export, "GROUP_ROWS", 2)
    monkeypatch.setattr(export, "CHUNK_BYTES", 7)
    ids = ["alpha", "bravo", "123", "export", ODD, "mixed"]
    with client.stream("GET", STEPS_API, params={"job_ids": ",".join(ids)}) as response:
        assert response.status_code == 200
        chunks = list(response.iter_raw())
    assert len(chunks) > 10
    assert parse_csv(fleet, b"".join(chunks).decode(), tmp_path) == step_rows(fleet, ids)


@pytest.mark.parametrize("group_rows", [100_000, 3], ids=["one-part", "parts-joined"])
def test_api_streams_parquet(
    fleet: Lab, client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, group_rows: int
) -> None:
    monkeypatch.setattr(export, "GROUP_ROWS", group_rows)
    ids = ["alpha", "mixed", ODD, "bravo", "123"]
    response = client.get(STEPS_API, params={"job_ids": ",".join(ids), "format": "parquet"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/vnd.apache.parquet"
    assert int(response.headers["content-length"]) == len(response.content)
    path = tmp_path / "steps.parquet"
    path.write_bytes(response.content)
    con = duckdb.connect()
    try:
        rows = [norm(r) for r in con.execute("SELECT * FROM read_parquet($p)", {"p": str(path)}).fetchall()]
        kinds = {
            n: k for n, k, *_ in con.execute("DESCRIBE SELECT * FROM read_parquet($p)", {"p": str(path)}).fetchall()
        }
    finally:
        con.close()
    assert rows == step_rows(fleet, ids)  # in order: by job, then step
    assert kinds == columns(fleet, "step_facts")


def test_api_job_without_steps(fleet: Lab, client: TestClient, tmp_path: Path) -> None:
    text = client.get(STEPS_API, params={"job_ids": "queued"}).text
    assert text == ",".join(columns(fleet, "step_facts")) + "\n"
    response = client.get(STEPS_API, params={"job_ids": "queued", "format": "parquet"})
    path = tmp_path / "empty.parquet"
    path.write_bytes(response.content)
    con = duckdb.connect()
    try:
        kinds = {n: k for n, k, *_ in con.execute("DESCRIBE FROM read_parquet($p)", {"p": str(path)}).fetchall()}
        assert con.execute("SELECT count(*) FROM read_parquet($p)", {"p": str(path)}).fetchone() == (0,)
    finally:
        con.close()
    assert kinds == columns(fleet, "step_facts")


def test_api_unknown_jobs_are_404_naming_them(client: TestClient) -> None:
    for fmt in ("csv", "parquet"):
        response = client.get(STEPS_API, params={"job_ids": "alpha,nope,x" + "y" * 5000, "format": fmt})
        assert response.status_code == 404
        detail = response.json()["detail"]
        assert "'nope'" in detail and "alpha" not in detail and len(detail) < 1_000
    many = ",".join(f"missing-{i}" for i in range(50))
    assert "and 40 more" in client.get(STEPS_API, params={"job_ids": many}).json()["detail"]


@pytest.mark.parametrize(
    "params",
    [
        {"job_ids": "alpha", "format": "xlsx"},
        {"job_ids": "alpha", "format": ""},
        {"job_ids": ""},
        {"job_ids": " , ,"},
        {"job_ids": ",".join(f"j{i}" for i in range(1001))},
        {"job_ids": "x" * 64_001},
    ],
    ids=["format", "empty-format", "empty", "blank", "too-many", "too-long"],
)
def test_api_bad_requests_are_422(client: TestClient, params: dict[str, str]) -> None:
    response = client.get(STEPS_API, params=params)
    assert response.status_code == 422, response.text
    assert "detail" in response.json()


def test_api_nasty_ids_never_500(client: TestClient) -> None:
    for ids in ("%00", "a\x00b", "'; DROP TABLE jobs; --", "\u202ejöb🔥", "../../etc/passwd", "%FF%FE"):
        response = client.get(STEPS_API, params={"job_ids": ids})
        assert response.status_code == 404, (ids, response.text)
    raw = client.get(STEPS_API + "?job_ids=%FF%FE,%ED%A0%80")
    assert raw.status_code == 404


def test_a_job_named_export_does_not_take_the_route(fleet: Lab, client: TestClient, tmp_path: Path) -> None:
    response = client.get(STEPS_API, params={"job_ids": "export"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert parse_csv(fleet, response.text, tmp_path) == step_rows(fleet, ["export"])
    # without job_ids, the step page of the job named "export" (api/job_paths.py: a job whose id is a
    # route word has all its answers; without such a job it is the export's 422, tests/test_api.py)
    page = client.get(STEPS_API).json()
    assert (page["job_id"], [r["loss"] for r in page["steps"]]) == ("export", [1.0, 0.5, 0.25])
    assert client.get("/api/training/export/analytics").json()["job_id"] == "export"
    assert client.get("/api/training/jobs/export").json()["job_id"] == "export"
    assert client.get("/api/training/alpha/steps").json()["job_id"] == "alpha"
    paths = client.get("/openapi.json").json()["paths"]
    assert list(paths).index(STEPS_API) < list(paths).index("/api/training/{job_id}/steps")


def test_api_export_needs_the_token(fleet: Lab) -> None:
    client = TestClient(create_app(fleet.db, token="s3cret"))
    assert client.get(STEPS_API, params={"job_ids": "alpha"}).status_code == 401
    authorized = client.get(STEPS_API, params={"job_ids": "alpha"}, headers={"Authorization": "Bearer s3cret"})
    assert authorized.status_code == 200
