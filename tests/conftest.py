"""Shared fixtures: real DuckDB warehouses in temporary folders, job folders to ingest, a
throwaway PostgreSQL server, and ``engine``: a test's warehouse read on DuckDB or PostgreSQL."""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pytest
from depth import DEEP
from pg_server import PgServer, bin_dir

from runlytics.ingest import postgres as pg_ingest
from runlytics.ingest.pipeline import ingest
from runlytics.ingest.sql import install_macros
from runlytics.ingest.summary import Summary
from runlytics.warehouse import db, insights, migrate, pg_copy, pg_reader, pg_samples, queries, results, snapshots
from runlytics.warehouse.postgres import SESSION_OPTIONS

# a script (make mutations), not tests: never collected, whatever pytest's file patterns say
collect_ignore = ["mutations.py"]

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
REALDATA = SHARED / "realdata"


def _dump(doc: Any) -> str:
    # allow_nan: real training servers write NaN/Infinity (Python's json does)
    return json.dumps(doc, allow_nan=True)


# Reads of warehouse files in this test process go through one in-memory DuckDB: the file attached
# read-only, read, detached (~12 ms). A new connection to the file costs ~30 ms (a DuckDB instance
# and its catalog each time), and the suite's labs read their files tens of thousands of times.
# Detached after each read: a writer (an ingest in this process or another) can open the file at
# once, as after closing a connection of its own. One read at a time (the attach is the instance's).
_files = duckdb.connect()
_files_lock = threading.RLock()  # a read inside a read (same thread) attaches the file again
_attached = itertools.count()


@contextmanager
def read_file(path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection to the warehouse file ``path``, its database the default one."""
    alias = db.quote_identifier(f"lab_file_{next(_attached)}")
    with _files_lock:
        _files.execute(f"ATTACH {db.quote_literal(str(path))} AS {alias} (READ_ONLY)")
        try:
            con = _files.cursor()
            try:
                con.execute(f"USE {alias}")
                yield con
            finally:
                con.close()
        finally:
            _files.execute(f"DETACH {alias}")


class Lab:
    """A jobs root and a warehouse file in a temporary folder."""

    def __init__(self, tmp: Path, engine: Engine | None = None) -> None:
        self.root = tmp / "jobs"
        self.root.mkdir()
        self.db = tmp / "warehouse.duckdb"
        # where ``analytics`` and ``query`` read: the file itself, or a PostgreSQL copy of it (``engine``)
        self.engine = engine or DUCKDB_ENGINE
        # the PostgreSQL database ``ingest`` publishes to, when the engine ingests (``Engine.ingests``),
        # and the ingester's name there (None: the stage's own, ingest/postgres.py)
        self._target: db.PostgresUrl | None = None
        self.ingester: str | None = None

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

    def ingest(self, *roots: Path, spool_root: Path | None = None, **options: Any) -> Summary:
        """``runlytics ingest`` of ``roots`` (the lab's by default): into the file, or, on an engine
        that ingests, ``ingest --db URL`` with the file as its stage (ingest/postgres.py)."""
        spools = [spool_root] if spool_root else None
        if self.engine.ingests:
            summary, _ = pg_ingest.ingest(
                self.target(),
                list(roots) or [self.root],
                stage=self.db,
                ingester=self.ingester,
                spools=spools,
                wait=10,
                **options,
            )
            self._check_published()
            return summary
        return ingest(self.db, list(roots) or [self.root], spools=spools, wait=10, **options)

    def _check_published(self) -> None:
        """PostgreSQL holds as many rows of every per-job table ``ingest --db`` publishes as the stage,
        for the stage's jobs it published (not owed: publish_queue; not another ingester's): an ingest
        case then checks the publish even where it reads only the Summary or compares empty results."""
        import psycopg

        name = self.ingester_name
        tables = [t for t in pg_copy.COPIED if t in pg_ingest.PER_JOB or t == pg_samples.VIEW]
        with duckdb.connect(str(self.db), read_only=True) as stage:
            owed = "SELECT job_id FROM publish_queue"
            # a job id holding NUL is never published (PostgreSQL's text holds no NUL: ingest/postgres.py)
            rows = stage.execute(f"SELECT job_id FROM jobs WHERE job_id NOT IN ({owed})").fetchall()
            jobs = [j for (j,) in rows if pg_ingest.NUL not in j]
            with psycopg.connect(self.target().libpq_url, options=SESSION_OPTIONS) as pg:
                owners = dict(pg.execute("SELECT job_id, ingester FROM job_owners WHERE job_id = ANY(%s)", (jobs,)))
                mine = [j for j in jobs if owners.get(j, name) == name]
                # one query on each side (a count per table): this runs after every ingest of the suite
                peers = {
                    t: " AND kind <> 'slow_vs_peers'" if t == "insight_results" else "" for t in tables
                }  # PG recomputes them
                duck_counts = count_rows(tables, lambda t: f" WHERE job_id IN (SELECT unnest($jobs)){peers[t]}")
                pg_counts = count_rows(tables, lambda t: f" WHERE job_id = ANY(%(jobs)s){peers[t]}")
                want = stage.execute(duck_counts, {"jobs": mine}).fetchone() or ()
                got = pg.execute(pg_counts, {"jobs": mine}).fetchone() or ()
                for table, g, w in zip(tables, got, want, strict=True):
                    assert g == w, f"PostgreSQL: {g} rows of {table} for the published jobs, the stage {w}"

    def own_query(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        """The rows of ``sql`` in the lab's own file: the warehouse, or on an engine that ingests the
        stage of ``ingest --db`` (what stays there: the ledger of spool files, read offsets)."""
        with duckdb.connect(str(self.db), read_only=True) as con:
            return con.execute(sql, params).fetchall()

    def warehouse(self) -> Path | db.PostgresUrl:
        """What the API and the CLI's ``--db`` are given: the file, or the database ingest published to."""
        return self.target() if self.engine.ingests else self.db

    def ledger_path(self, path: Path | str) -> str:
        """``path`` as the warehouse's ledger (ingest_files) names it: on PostgreSQL prefixed with the
        ingester's name (ingest/postgres.py: paths of different hosts would collide)."""
        if not self.engine.ingests:
            return str(path)
        return f"{self.ingester_name}:{path}"

    @property
    def ingester_name(self) -> str:
        """The name this lab's ingests publish under (``ingest --ingester``, else the default)."""
        return self.ingester or pg_ingest.default_ingester(self.db)

    def target(self) -> db.PostgresUrl:
        """The PostgreSQL database this lab ingests into (made on first use: a clone of the template)."""
        if self._target is None:
            self._target = self.engine.empty()
        return self._target

    @contextmanager
    def _reader(self) -> Iterator[Any]:
        """A read connection where the lab's facts are: the file, the database ingest published
        to, or the engine's copy of the file."""
        if self.engine.ingests:
            con: Any = pg_reader.Cursor(pg_reader.connect(self.target()))
            try:
                yield con
            finally:
                con.close()
        elif self.engine.postgres:
            with self.engine.reader(self.db) as con:
                yield con
        else:
            with read_file(self.db) as con:
                yield con

    def sharing(self, tmp: Path) -> Lab:
        """A new lab in ``tmp`` (its own jobs root and file) that ingests into this lab's PostgreSQL
        database as the same ingester: for many small cases (hypothesis' examples) in one database,
        each with job ids of its own (a new stage of the same ingester merges with the jobs the
        database holds, docs/postgresql.md). On DuckDB, just a new lab."""
        other = Lab(tmp, self.engine)
        if self.engine.ingests:
            self.ingester = self.ingester or "lab"
            other._target, other.ingester = self.target(), self.ingester
        return other

    def on(self, engine: Engine) -> Lab:
        """This lab (the same folder and file), reading on ``engine``."""
        other = copy.copy(self)
        other.engine = engine
        return other

    def query(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        """The rows of ``sql`` read on the lab's engine (on PostgreSQL: portable SQL, ``$name`` parameters)."""
        with self._reader() as con:
            return con.execute(sql, params).fetchall()

    def columns(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        """The column names and rows of ``sql`` (portable SQL), read on the lab's engine."""
        with self._reader() as con:
            cursor = con.execute(sql)
            rows = cursor.fetchall()
            return [d[0] for d in cursor.description], rows

    def analytics(self, job_id: str) -> dict[str, Any] | None:
        """The job's analytics as the API answers them, read on the lab's engine."""
        with self._reader() as con:
            return queries.job_analytics(con, job_id)

    def facts(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every fact table's rows, sorted, with NaN made comparable: for equality checks."""

        def norm(row: tuple[Any, ...]) -> tuple[Any, ...]:
            return tuple("NaN" if isinstance(v, float) and math.isnan(v) else v for v in row)

        out = {}
        for table in ("jobs", "steps", "step_gpus", "checkpoints"):
            names, rows = self.columns(f"SELECT * FROM {table}")
            kept = [i for i, name in enumerate(names) if name != "ingested_at"]
            out[table] = sorted((norm(tuple(r[i] for i in kept)) for r in rows), key=repr)
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
# the fixtures parametrised by ENGINES (a test's ``[postgresql]`` case: one of them is "postgresql")
ENGINE_FIXTURES = ("engine", "module_engine", "ingest_engine", "module_ingest_engine")


class Engine:
    """Where a test reads the warehouse it ingested into a DuckDB file: that file itself, or a
    PostgreSQL database that ``runlytics db copy`` (warehouse/pg_copy.py) filled from it, whose
    job_results and insights PostgreSQL's views then compute again (``_recompute``).

    ``warehouse(path)`` names it for ``create_app`` and the CLI; ``reader(path)`` opens it with
    the API's cursor. A PostgreSQL copy is made once per state of the file (its newest
    snapshot, which every ingest publishes), into a database created from a template that
    ``runlytics db upgrade`` built once per test process: a test that ingests again reads a
    new copy, one that reads twice pays once.

    An engine that ``ingests`` (``ingest_engine``) fills PostgreSQL as an operator does instead:
    ``Lab.ingest`` runs ``runlytics ingest --db URL`` with the lab's file as its stage
    (ingest/postgres.py: a stage ingest, then a publish), and the lab reads what was published,
    so that an ingest test checks PostgreSQL's result against its hand values.
    """

    def __init__(self, name: str, server: PgServer | None = None, *, ingests: bool = False) -> None:
        self.name = name
        self.server = server
        self._made: list[str] = []  # the databases this engine made (dropped by ``close``)
        self.ingests = ingests and self.postgres

    @property
    def postgres(self) -> bool:
        return self.name == "postgresql"

    def __repr__(self) -> str:
        return f"Engine({self.name}{', ingests' if self.ingests else ''})"

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


def count_rows(tables: Iterable[str], where: Callable[[str], str] = lambda table: "") -> str:
    """One query giving the row count of each table (filtered by ``where(table)``, a WHERE clause or
    ""), in the tables' order: the checks after every ingest and mirror cost one round trip each."""
    counts = (f"(SELECT count(*) FROM {db.quote_identifier(t)}{where(t)})" for t in tables)
    return "SELECT " + ", ".join(counts)


def mirror(con: duckdb.DuckDBPyConnection, target: db.PostgresUrl) -> None:
    """Make the PostgreSQL database ``target`` hold what the DuckDB warehouse ``con`` holds (every
    table ``db copy`` copies, in place of the target's rows), then let PostgreSQL's views compute
    job_results again: for a test that writes facts straight into a warehouse (tests/test_insights.py's
    ``Facts``) and reads a view on PostgreSQL. Cheaper than a ``db copy`` into a new database per read
    (one connection, no ANALYZE, no schema checks)."""
    import psycopg

    with psycopg.connect(target.libpq_url, options=SESSION_OPTIONS) as raw:
        for table, origin in pg_copy.COPIED.items():
            if table == pg_samples.VIEW:  # PostgreSQL's samples: packed per minute in a table of their own
                raw.execute(f"DELETE FROM {pg_samples.TABLE}")
                pg_samples.copy(con, raw)
                continue
            columns = pg_copy.target_columns(raw, table)
            raw.execute(f"DELETE FROM {db.quote_identifier(table)}")
            names = ", ".join(db.quote_identifier(name) for name, _ in columns)
            pg_copy.copy_rows(con, raw, table, columns, f"SELECT {names} FROM {db.quote_identifier(origin)}")
        # every copied table holds the warehouse's rows (its view for gpu_samples), before the refill:
        # a test comparing empty results then compares the warehouse's, not a copy that lost them
        # (one query on each side: a count per table)
        tables = list(pg_copy.COPIED.items())
        want = con.execute(count_rows(o for _, o in tables)).fetchone()
        got = raw.execute(count_rows(t for t, _ in tables)).fetchone()
        for (table, _), g, w in zip(tables, got or (), want or (), strict=True):
            assert g == w, f"mirror: PostgreSQL holds {g} rows of {table}, the warehouse {w}"
        raw.execute(results.REFILL)


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


# ``@pytest.mark.xfail_postgres("why")``: the test's ``[postgresql]`` case fails for a known reason
# that another module owes (docs/testing.md, "Both engines"): xfail(strict=True) there alone
XFAIL_POSTGRES = "xfail_postgres"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{XFAIL_POSTGRES}(reason): the [postgresql] case is a known failure")
    config.addinivalue_line("markers", f"{DEEP_ONLY_MARK}: runs in deep runs only (HYPOTHESIS_PROFILE=deep)")
    # ingest --db postgresql://… without --stage makes its stage under $XDG_STATE_HOME/runlytics/
    # (ingest/postgres.py default_stage): never the user's own ~/.local/state in a test, whatever
    # the test forgets (a folder per test process, its subprocesses included, removed at the end)
    global _STATE_HOME
    _STATE_HOME = tempfile.mkdtemp(prefix="runlytics-state-")
    os.environ["XDG_STATE_HOME"] = _STATE_HOME


def pytest_unconfigure(config: pytest.Config) -> None:
    if _STATE_HOME is not None:
        shutil.rmtree(_STATE_HOME, ignore_errors=True)


_STATE_HOME: str | None = None


# PostgreSQL in an ordinary run: the schema's chain (test_postgres_schema). Every other PostgreSQL
# test, the other test_postgres_* modules (every view's rows against DuckDB's, test_postgres_views,
# and the ingesters with kills and concurrency, test_postgres_ingest, since session 26) and the
# [postgresql] cases of the rest, runs in deep runs (HYPOTHESIS_PROFILE=deep), for CI's 15 minutes:
# docs/testing.md, "Suite time".
POSTGRES_IN_EVERY_RUN = frozenset({"test_postgres_schema"})

# Modules that run in deep runs only: the audits' regression tests of sessions 14 to 20 whose tests
# cost over a second each (each a few ingests of an edge case); their rules' ordinary cases stay in
# every run in the modules of the figures, inputs, kills and API. The cheap audit modules and
# those that tests/mutations.py names stay in every run (docs/testing.md, "Deep runs", session 21);
# session 22 added the CLI and API audits of sessions 14-18 (67 s of an ordinary run's test time);
# session 23 the audits of sessions 16-22 and the edge cases of the merge, damaged inputs and the
# telemetry's seals and splits, each rule's ordinary case kept in a module of every run.
DEEP_MODULES = frozenset({
    "test_merge_s14", "test_retention_s14", "test_tool_nan_s14", "test_tool_logs_s14", "test_cli_s14",
    "test_spool_s16", "test_tool_log_tail_s16", "test_cli_s16", "test_not_utf8_s16",
    "test_archive_s17", "test_tool_logs_s17", "test_rollup_gaps_s17", "test_dashboard_s17",
    "test_publish_s17", "test_config_settings_s17", "test_kills_s17",
    "test_inputs_s18", "test_api_s18",
    "test_cli_seams_s20", "test_archive_s20", "test_write_failures_s20", "test_ingest_status_s20", "test_spool_s20",
    "test_audit_fixes", "test_audit_fixes2",
    # session 23 (CI took 952 s at session 22's stop): ~370 s of an ordinary run's test time
    "test_audit_s22", "test_phantom_jobs", "test_merge_order", "test_merge_rules2", "test_damaged_values",
    "test_unreadable_inputs", "test_damaged_tool_logs", "test_split_read", "test_seal_backlog",
    "test_gpu_chart_spikes_s17", "test_cli_s18", "test_incremental_s19", "test_csv_incremental_s19",
    "test_export_s16", "test_times_s19", "test_ledger_s20", "test_metrics_s16", "test_insight_messages_s17",
    "test_analytics_s17", "test_api_s14", "test_api_s20", "test_export_s20", "test_cli_feedback",
    "test_api_fuzz", "test_gpu_parts",
    # session 26 (CI took 816 s at session 25's stop; a fresh clone here 17:13 in a slow hour)
    "test_audit_s25", "test_dashboard_s25",
})  # fmt: skip

# ``@DEEP_ONLY`` on a test, ``deep_case(...)`` for a parametrized case: it runs in deep
# runs only, its rule checked in every run by a cheaper test or case (docs/testing.md, "Deep runs")
DEEP_ONLY_MARK = "deep_only"
DEEP_ONLY = pytest.mark.deep_only


def deep_case(*values: object) -> Any:
    """A parametrized case that runs in deep runs only: ``pytest.param(*values, marks=DEEP_ONLY)``."""
    return pytest.param(*values, marks=DEEP_ONLY)


def _module_name(item: pytest.Item) -> str:
    module = getattr(item, "module", None)
    return module.__name__.rsplit(".", 1)[-1] if module is not None else ""


def _on_postgres(item: pytest.Item) -> bool:
    params = getattr(item, "callspec", None)
    return params is not None and any(params.params.get(name) == "postgresql" for name in ENGINE_FIXTURES)


def _deep_only(item: pytest.Item) -> bool:
    """Whether the test runs in deep runs only: marked so, of a DEEP_MODULES module, or a PostgreSQL
    test outside the core."""
    module = _module_name(item)
    if item.get_closest_marker(DEEP_ONLY_MARK) is not None or _deep_only_module(module):
        return True
    if module in POSTGRES_IN_EVERY_RUN:
        return False
    return "pg_server" in getattr(item, "fixturenames", ()) or _on_postgres(item)


def _deep_only_module(name: str) -> bool:
    """Whether every test of this module runs in deep runs only."""
    return name in DEEP_MODULES or (name.startswith("test_postgres") and name not in POSTGRES_IN_EVERY_RUN)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Outside deep runs a module whose every test would be deselected is not imported at all:
    collecting them cost each of CI's three processes seconds (the assertion rewriting, and
    schemathesis building its cases at import). A module named on the command line is still
    collected, its tests then deselected as any deep-only test."""
    if DEEP or collection_path.suffix != ".py" or not _deep_only_module(collection_path.stem):
        return None
    return True


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test marked ``xfail_postgres`` is xfail(strict=True) where one of its engine fixtures (of any
    scope: a module's database too) is PostgreSQL: the fix shows as an XPASS that fails until the mark goes.
    Tests that run in deep runs only (``_deep_only``) are deselected outside them."""
    if not DEEP:
        later = [i for i in items if _deep_only(i)]
        if later:
            config.hook.pytest_deselected(items=later)
            gone = set(later)
            items[:] = [i for i in items if i not in gone]
    for item in items:
        known = item.get_closest_marker(XFAIL_POSTGRES)
        if known is not None and _on_postgres(item):
            item.add_marker(pytest.mark.xfail(strict=True, reason=f"PostgreSQL: {known.args[0]}"))


# a test of DuckDB alone in a module whose tests take ``engine`` (or a fixture of it): its
# ``[postgresql]`` case is not generated (docs/testing.md lists such tests and why)
DUCKDB_ONLY = pytest.mark.parametrize("engine", ["duckdb"], indirect=True)
DUCKDB_ONLY_INGEST = pytest.mark.parametrize("ingest_engine", ["duckdb"], indirect=True)  # ``ingest_engine``'s


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """Each engine in turn: a test taking it runs on DuckDB, then on PostgreSQL (a server of
    ``pg_server``, started only for the second; skipped where PostgreSQL is not installed)."""
    yield from _engine(request)


@pytest.fixture(scope="module", params=ENGINES)
def module_engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """``engine`` for module-scoped fixtures (one warehouse built per module, read on each engine)."""
    yield from _engine(request)


@pytest.fixture(params=ENGINES)
def ingest_engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """``engine`` whose PostgreSQL is filled by ``runlytics ingest --db URL`` (``Engine.ingests``):
    ``Lab(tmp, ingest_engine).ingest()`` ingests into the file, or stages there and publishes."""
    yield from _engine(request, ingests=True)


@pytest.fixture(scope="module", params=ENGINES)
def module_ingest_engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """``ingest_engine`` for module-scoped fixtures (one PostgreSQL database per module)."""
    yield from _engine(request, ingests=True)


def _engine(request: pytest.FixtureRequest, *, ingests: bool = False) -> Iterator[Engine]:
    if request.param == "duckdb":
        yield DUCKDB_ENGINE
        return
    engine = Engine(request.param, request.getfixturevalue("pg_server"), ingests=ingests)
    try:
        yield engine
    finally:
        engine.close()


@pytest.fixture(scope="module")
def duck() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB in UTC with the ingest's SQL macros (rl_iso, rl_epoch, …)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    install_macros(con)
    return con


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs: a real file system that runs out of space (needs root, as CI has)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a tmpfs under CI: {done.stderr.decode()}")
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


if __name__ == "__main__":  # `make deep-modules`: the paths of the modules that run in deep runs only
    print(" ".join(f"tests/{name}.py" for name in sorted(DEEP_MODULES)))
