"""Values bound, not pasted into SQL text (session 20): Python arrays reach DuckDB through
``db.registered``, and parts and archive files are written with ``COPY … TO $path``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pytest

from runlytics.ingest.pipeline import ingest
from runlytics.warehouse import db

T0 = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())


def test_registered_arrays_are_read_after_an_unread_result_and_gone_after() -> None:
    """DuckDB 2 registers nothing while a result is unread (a SELECT fetched once): the helper
    runs it to its end first."""
    con = duckdb.connect()
    con.execute("SELECT * FROM range(10)").fetchone()
    with db.registered(con, {"registered_rows": {"a": np.array([1, 2, 3], dtype=np.int64)}}):
        assert con.execute("SELECT sum(a) FROM registered_rows").fetchone() == (6,)
        con.execute("SELECT * FROM range(10)").fetchone()  # unread again when the block ends
    with pytest.raises(duckdb.CatalogException):
        con.execute("SELECT * FROM registered_rows")


def test_a_failed_statement_in_a_transaction_raises_its_own_error() -> None:
    """Nothing can be unregistered in an aborted transaction: the statement's own error is the
    one raised (not "transaction is aborted"), and the rollback drops the registration."""
    con = duckdb.connect()
    con.execute("CREATE TABLE t (a BIGINT PRIMARY KEY)")
    twice = {"a": np.array([1, 1], dtype=np.int64)}
    with pytest.raises(duckdb.ConstraintException), db.atomic(con), db.registered(con, {"registered_rows": twice}):
        con.execute("INSERT INTO t SELECT a FROM registered_rows")
    assert con.execute("SELECT count(*) FROM t").fetchone() == (0,)
    with pytest.raises(duckdb.CatalogException):
        con.execute("SELECT * FROM registered_rows")


def test_parts_and_archive_files_in_folders_whose_names_hold_quotes_and_brackets(tmp_path: Path) -> None:
    """Sealed parts and archived ones are written to paths bound as values: a quote or a bracket
    in a folder's name is part of the name."""
    warehouse = tmp_path / "it's [1]" / "w.duckdb"
    archive = tmp_path / "arch'ive [2]"
    spool = tmp_path / "spool"
    spool.mkdir()
    lines = [
        {"ts": T0 + 86400 * d + t, "host": "node'1", "job_id": f"job-{d}", "gpu_index": 0,
         "utilization_percent": float(t % 100)}
        for d in range(3) for t in range(0, 600, 30)
    ]  # fmt: skip
    (spool / "gpu.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert ingest(warehouse, [], spools=[spool], keep_raw_days=0, wait=10).failed == 0
    with db.connection(warehouse, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM gpu_parts WHERE table_name = 'gpu_samples'").fetchone() == (3,)
        assert con.execute("SELECT count(*) FROM gpu_samples").fetchone() == (60,)
    # the newest sample is of day 2: day 0 is archived and pruned
    assert ingest(warehouse, [], spools=[spool], keep_raw_days=1, archive=archive, wait=10).failed == 0
    # beside the day's folder, the stand-ins' list every archive holds (docs/ingest.md)
    assert sorted(path.name for path in archive.iterdir()) == ["_hosts.jsonl", "day=2026-01-01"]
    folder = archive / "day=2026-01-01"
    (host,) = folder.iterdir()
    assert host.name == "host=node%271"
    with duckdb.connect() as con:
        files = db.exact_paths([str(path) for path in host.glob("*.parquet")])
        assert con.execute("SELECT count(*), min(job_id) FROM read_parquet($f)", {"f": files}).fetchone() == (
            20,
            "job-0",
        )
    with db.connection(warehouse, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM gpu_samples").fetchone() == (40,)
        assert con.execute("SELECT count(*) FROM gpu_minutes").fetchone() == (30,)
