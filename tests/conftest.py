"""Shared fixtures: real DuckDB warehouses in temporary folders, job folders to ingest, a
throwaway PostgreSQL server, and ``engine``: a test's warehouse read on DuckDB or PostgreSQL."""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pytest
from pg_server import PgServer, bin_dir

from runlytics.ingest.pipeline import ingest
from runlytics.ingest.summary import Summary
from runlytics.warehouse import db, insights, migrate, pg_copy, pg_reader, queries, results, snapshots
from runlytics.warehouse.postgres import SESSION_OPTIONS

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

    def __init__(self, tmp: Path, engine: Engine | None = None) -> None:
        self.root = tmp / "jobs"
        self.root.mkdir()
        self.db = tmp / "warehouse.duckdb"
        # where ``analytics`` and ``query`` read: the file itself, or a PostgreSQL copy of it (``engine``)
        self.engine = engine or DUCKDB_ENGINE

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

    def on(self, engine: Engine) -> Lab:
        """This lab (the same folder and file), reading on ``engine``."""
        other = copy.copy(self)
        other.engine = engine
        return other

    def query(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        """The rows of ``sql`` read on the lab's engine (on PostgreSQL: portable SQL, ``$name`` parameters)."""
        if self.engine.postgres:
            with self.engine.reader(self.db) as reader:
                return reader.execute(sql, params).fetchall()
        con = duckdb.connect(str(self.db), read_only=True)
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()

    def analytics(self, job_id: str) -> dict[str, Any] | None:
        """The job's analytics as the API answers them, read on the lab's engine."""
        if self.engine.postgres:
            with self.engine.reader(self.db) as con:
                return queries.job_analytics(con, job_id)
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


# --- both engines (issue #18): docs/testing.md, "Both engines" -------------------------------

ENGINES = ("duckdb", "postgresql")


class Engine:
    """Where a test reads the warehouse it ingested into a DuckDB file: that file itself, or a
    PostgreSQL database that ``runlytics db copy`` (warehouse/pg_copy.py) filled from it, whose
    job_results and insights PostgreSQL's views then compute again (``_recompute``).

    ``warehouse(path)`` names it for ``create_app`` and the CLI; ``reader(path)`` opens it with
    the API's cursor. A PostgreSQL copy is made once per state of the file (its newest
    snapshot, which every ingest publishes), into a database created from a template that
    ``runlytics db upgrade`` built once per test process: a test that ingests again reads a
    new copy, one that reads twice pays once.
    """

    def __init__(self, name: str, server: PgServer | None = None) -> None:
        self.name = name
        self.server = server
        self._made: list[str] = []  # the databases this engine made (dropped by ``close``)

    @property
    def postgres(self) -> bool:
        return self.name == "postgresql"

    def __repr__(self) -> str:
        return f"Engine({self.name})"

    def warehouse(self, path: Path) -> Path | db.PostgresUrl:
        if not self.postgres:
            return path
        assert self.server is not None
        key = (str(path), str(snapshots.latest(path)))
        if key not in _COPIES:
            url = self.empty()
            pg_copy.copy(path, url, wait=10)
            _recompute(url)
            _COPIES[key] = url
        return _COPIES[key]

    def empty(self) -> db.PostgresUrl:
        """A new PostgreSQL database at the head revision, holding no data (a clone of the
        template): for a test that writes its facts itself, as tests/test_insights.py's ``Facts``."""
        assert self.server is not None, "empty() is PostgreSQL's"
        url = _from_template(self.server)
        self._made.append(url.rsplit("/", 1)[1])
        return db.PostgresUrl(url)

    def close(self) -> None:
        """Drop the databases this engine made (a test's copies don't outlive it)."""
        import psycopg

        if self.server is None or not self._made:
            return
        for key in [k for k, url in _COPIES.items() if url.url.rsplit("/", 1)[1] in self._made]:
            del _COPIES[key]
        with psycopg.connect(self.server.admin_url, autocommit=True) as con:
            for name in self._made:
                con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._made.clear()

    @contextmanager
    def reader(self, path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read connection on this engine: the newest snapshot, or the API's PostgreSQL cursor
        (typed as DuckDB's connection, whose calls it answers)."""
        target = self.warehouse(path)
        con: Any = (
            pg_reader.Cursor(pg_reader.connect(target))
            if isinstance(target, db.PostgresUrl)
            else snapshots.connect_latest(target)
        )
        try:
            yield con
        finally:
            con.close()


DUCKDB_ENGINE = Engine("duckdb")
_COPIES: dict[tuple[str, str], db.PostgresUrl] = {}  # (file, snapshot) -> its copy, per test process
_TEMPLATES: dict[int, str] = {}  # server port -> the name of its database at the head revision
_NAMES = itertools.count()


def _recompute(url: db.PostgresUrl) -> None:
    """job_results and the insights computed again by PostgreSQL's own views (the statements
    that refill them on DuckDB), in place of the copied rows DuckDB computed: a test of a figure
    then checks PostgreSQL's views, not DuckDB's answer carried over. (utilization_minutes
    stays as copied: its refill text is DuckDB's.)"""
    import psycopg

    with psycopg.connect(url.libpq_url, options=SESSION_OPTIONS) as conn:
        conn.execute(results.REFILL)
        conn.execute(insights.REFILL)


def _from_template(server: PgServer) -> str:
    """A new database of ``server`` at the head revision, holding no data: a copy (CREATE
    DATABASE … TEMPLATE) of one ``runlytics db upgrade`` built once, which db copy fills as it
    fills a database db upgrade built (0.1 s instead of running the chain's 0.8 s again)."""
    import psycopg

    if server.port not in _TEMPLATES:
        url = server.new_database()
        migrate.upgrade(db.PostgresUrl(url), "head")
        _TEMPLATES[server.port] = url.rsplit("/", 1)[1]
    name = f"e{os.getpid()}_{next(_NAMES)}"
    with psycopg.connect(server.admin_url, autocommit=True) as con:
        con.execute(f'CREATE DATABASE "{name}" TEMPLATE "{_TEMPLATES[server.port]}"')
    return server.admin_url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """Each engine in turn: a test taking it runs on DuckDB, then on PostgreSQL (a server of
    ``pg_server``, started only for the second; skipped where PostgreSQL is not installed)."""
    yield from _engine(request)


@pytest.fixture(scope="module", params=ENGINES)
def module_engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """``engine`` for module-scoped fixtures (one warehouse built per module, read on each engine)."""
    yield from _engine(request)


def _engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    if request.param == "duckdb":
        yield DUCKDB_ENGINE
        return
    engine = Engine(request.param, request.getfixturevalue("pg_server"))
    try:
        yield engine
    finally:
        engine.close()
