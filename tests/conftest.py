"""Shared fixtures: real DuckDB warehouses in temporary folders, and job folders to ingest."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from pg_server import PgServer, bin_dir

from runlytics.ingest.pipeline import ingest
from runlytics.ingest.summary import Summary
from runlytics.warehouse import queries

# a script (make mutations), not tests: never collected, whatever pytest's file patterns say
collect_ignore = ["mutations.py"]

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
REALDATA = SHARED / "realdata"


def _dump(doc: Any) -> str:
    # allow_nan: real training servers write NaN/Infinity (Python's json does)
    return json.dumps(doc, allow_nan=True)


class Lab:
    """A jobs root and a warehouse file in a temporary folder."""

    def __init__(self, tmp: Path) -> None:
        self.root = tmp / "jobs"
        self.root.mkdir()
        self.db = tmp / "warehouse.duckdb"

    def write_job(self, folder: str, doc: Any, *, raw: str | bytes | None = None) -> Path:
        """Write <root>/<folder>/progress.json from a dict (or raw text/bytes)."""
        path = self.root / folder / "progress.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        data = raw if raw is not None else _dump(doc)
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data)
        return path

    def ingest(self, *roots: Path, spool_root: Path | None = None) -> Summary:
        spools = [spool_root] if spool_root else None
        return ingest(self.db, list(roots) or [self.root], spools=spools, wait=10)

    def query(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        con = duckdb.connect(str(self.db), read_only=True)
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()

    def analytics(self, job_id: str) -> dict[str, Any] | None:
        con = duckdb.connect(str(self.db), read_only=True)
        try:
            return queries.job_analytics(con, job_id)
        finally:
            con.close()

    def facts(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every fact table's rows, sorted, with NaN made comparable: for equality checks."""

        def norm(row: tuple[Any, ...]) -> tuple[Any, ...]:
            return tuple("NaN" if isinstance(v, float) and math.isnan(v) else v for v in row)

        out = {}
        for table, cols in {
            "jobs": "* EXCLUDE (ingested_at)",
            "steps": "*",
            "step_gpus": "*",
            "checkpoints": "*",
        }.items():
            rows = self.query(f"SELECT {cols} FROM {table}")
            out[table] = sorted((norm(r) for r in rows), key=repr)
        return out


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    return Lab(tmp_path)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One throwaway PostgreSQL server per test process (tests/pg_server.py)."""
    bins = bin_dir()
    if bins is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed: .ci/run installs Debian's postgresql package")
        pytest.skip("PostgreSQL is not installed (Debian's postgresql package)")
    server = PgServer(bins)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """The URL of an empty PostgreSQL database of its own for this test."""
    return pg_server.new_database()
