"""``runlytics db copy --to postgresql://…``: a DuckDB warehouse's tables into a PostgreSQL database.

The target is built (or must already be) at this runlytics' schema revision and must hold no
data; the facts, the ledger and the derived tables are then copied with COPY (binary: floats to
the last bit, NaN and infinities included), all in one transaction with the schema's build, so a
failed or interrupted copy leaves the target as it was. The source is read from its newest
snapshot, so a running ingest is neither blocked nor half seen. GPU samples are read through the
view ``gpu_samples`` (the hot table and every Parquet part) into PostgreSQL's ``gpu_sample_minutes``,
packed one row per GPU and minute (warehouse/pg_samples.py) and read there through its view
``gpu_samples``: PostgreSQL has no parts (docs/postgresql.md).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import psycopg

from . import bounded_json, db, insights, migrate, pg_reader, pg_samples, postgres, snapshots, times

if TYPE_CHECKING:  # SQLAlchemy only for `db copy`: ingest's publish (copy_rows) does without its import
    import sqlalchemy as sa

# target table -> the DuckDB table or view its rows come from, in the order they are copied
COPIED: dict[str, str] = {
    "jobs": "jobs",
    "steps": "steps",
    "step_gpus": "step_gpus",
    "checkpoints": "checkpoints",
    "trainer_steps": "trainer_steps",
    "trainer_runs": "trainer_runs",
    "metric_values": "metric_values",
    # the hot rows and every Parquet part's, into the view's table packed per minute (pg_samples)
    pg_samples.VIEW: "gpu_samples",
    "gpu_minutes": "gpu_minutes",
    "gpu_pruned_days": "gpu_pruned_days",  # which minutes have no raw samples left (retention)
    "job_gpu_series": "job_gpu_series",
    "ingest_files": "ingest_files",
    "ingest_runs": "ingest_runs",
    "refresh_queue": "refresh_queue",
    "job_results": "job_results",
    "utilization_minutes": "utilization_minutes",
    "insight_settings": "insight_settings",
    "insight_results": "insight_results",
    "insight_jobs": "insight_jobs",
}
# the target's tables that are not copied, and why
NOT_COPIED: dict[str, str] = {
    "alembic_version": "written by the target's own upgrade",
    "gpu_parts": "DuckDB's manifest of its Parquet files; their rows go to gpu_samples",
    "gpu_parts_retired": "DuckDB's replaced Parquet files waiting for deletion",
    "publish_queue": "a stage's jobs owed to PostgreSQL (ingest/postgres.py): a copied warehouse owes none",
    "publish_marks": "a stage's marks of what it published to PostgreSQL",
    "job_owners": "the ingester that published each job: a copied job has none (its first publisher owns it)",
    "peer_changes": "models whose slow_vs_peers a publish made stale: a copy's are the warehouse's, up to date",
    "pg_telemetry_outbox": "a stage's GPU minutes owed to PostgreSQL (warehouse/telemetry_outbox.py)",
}
# filled by the upgrade itself (revision 0011's default thresholds): replaced by the source's rows
DEFAULTS_REPLACED = ("insight_settings",)

BATCH_ROWS = 20_000

# JSON's NaN and infinities, as Python and DuckDB write them (in configs and trainer metrics; DuckDB
# keeps any case it read: nan, -INF, Infinity): PostgreSQL's json refuses them, so they are copied as
# the strings "NaN", "Infinity", "-Infinity", and a string that is one of those words with its first
# letter escaped (pg_reader.ESCAPED_WORDS), so that the readers tell them apart (pg_reader.duckdb_json;
# docs/postgresql.md). A trailing comma, which DuckDB's JSON takes too, is left out. A string literal
# is matched first (bounded_json.DUCKDB_ONLY), so that text inside strings stays.
_MAY_NOT_PORT = re.compile(r"nan|inf|,[ \t\n\r]*[\]}]", re.IGNORECASE)

# PostgreSQL's text holds no NUL character (JSON may escape one anywhere in a string): every string
# copied carries U+FFFD in its place (the source keeps the original). A job id with one is not
# copied at all, nor any row of its job: the id is the job's key there (its locks, its owner, its
# rows), and U+FFFD could make it another job's. ``db copy`` and ingest's publish (ingest/postgres.py)
# both select through select_list with NUL_PARAMS
NUL = pg_reader.NUL
NUL_REPLACEMENT = pg_reader.NUL_REPLACEMENT
NUL_PARAMS = {"nul_replacement": NUL_REPLACEMENT}
# a column's select expression with NUL replaced, by its type on PostgreSQL (udt_name)
NUL_FREE = {
    "varchar": "replace({expression}, chr(0), $nul_replacement)",
    "text": "replace({expression}, chr(0), $nul_replacement)",
    "json": "replace(CAST({expression} AS VARCHAR), chr(0), $nul_replacement)",
    "_varchar": "list_transform({expression}, lambda s: replace(s, chr(0), $nul_replacement))",
    "_text": "list_transform({expression}, lambda s: replace(s, chr(0), $nul_replacement))",
}
# A time outside years 1 to 9999 (ingest/sql.py's rl_in_years) reaches Python as DuckDB's text of it
# ("0001-12-31 (BC) 23:30:00", "10000-01-01 00:59:59"), on which psycopg's COPY failed with a
# TypeError that stopped the whole publish (or db copy). Every reader keeps its times within those
# years (rl_in_years, Python's datetime, the C reader since session 19: a history entry's offset
# took it out of them before); a row a warehouse holds from before is copied without that time
# (times.IN_YEARS, rl_in_years' own text).
# the rows of a table with a job_id column that are copied: of no job, or of a job whose id has no NUL
NUL_FREE_JOBS = "NOT coalesce(contains(job_id, chr(0)), false)"
NUL_JOB_IDS = "SELECT job_id FROM jobs WHERE contains(job_id, chr(0)) ORDER BY job_id"
# GPU samples as copied (pg_samples.copy's source): their strings without NUL, none of such a job
SAMPLE_STRINGS = ("job_id", "host", "gpu_key", "gpu_uuid", "source")
SAMPLES_NUL_FREE = ", ".join(
    f"{NUL_FREE['varchar'].format(expression='t.' + name)} AS {name}" for name in SAMPLE_STRINGS
)
SAMPLES_SOURCE = f"(SELECT t.* REPLACE ({SAMPLES_NUL_FREE}) FROM gpu_samples t WHERE {NUL_FREE_JOBS}) t"

Progress = Callable[[str, int, int], None]


class CopyRefused(db.WarehouseError):
    """The target can't take the copy (data of its own, another revision): nothing was written."""


@dataclass
class CopyResult:
    revision: str
    rows: dict[str, int] = field(default_factory=dict)
    unpublishable: list[str] = field(default_factory=list)  # job ids PostgreSQL's text cannot hold (NUL): not copied
    # thresholds set on the target before the copy (not its defaults) that the source's replaced:
    # name -> (the target's value, the source's)
    replaced_thresholds: dict[str, tuple[float, float]] = field(default_factory=dict)
    seconds: float = 0.0


def copy(
    source: Path, target: db.PostgresUrl, *, wait: float = db.DEFAULT_WAIT_SECONDS, on_progress: Progress | None = None
) -> CopyResult:
    """Copy the warehouse file ``source`` (brought to the head revision first) into ``target``."""
    import sqlalchemy as sa

    began = time.monotonic()
    migrate.ensure_current(source, wait=wait)
    con = snapshots.connect_latest(source, wait=wait)
    try:
        try:
            totals = {table: _count(con, origin) for table, origin in COPIED.items()}
        except duckdb.Error as error:
            raise db.WarehouseError(f"cannot read {source}: {postgres.reason(error)}") from error
        try:
            with postgres.connection(target) as conn:
                try:
                    result = _copy_into(con, conn, target, totals, wait, on_progress)
                except (sa.exc.DBAPIError, psycopg.Error, duckdb.Error) as error:
                    reason = postgres.reason(error)
                    raise db.WarehouseError(f"copy into {target} failed, nothing written: {reason}") from error
        except (sa.exc.DBAPIError, psycopg.Error) as error:
            # the connection's end failed: its rollback, on a connection the server ended, raised
            # over the copy's own failure, which is the one said
            failed = _hidden_failure(error)
            if failed is not None:
                raise failed from failed.__cause__
            raise db.WarehouseError(f"copy into {target} failed, nothing written: {postgres.reason(error)}") from error
    finally:
        con.close()
    result.seconds = time.monotonic() - began
    return result


def _hidden_failure(error: BaseException) -> db.WarehouseError | None:
    """The WarehouseError being raised when ``error`` was (SQLAlchemy's error wraps the driver's,
    raised while the copy's own failure was): None if there was none."""
    seen = error.__context__
    for _ in range(8):  # a short chain: SQLAlchemy's, the driver's, the copy's
        if seen is None or isinstance(seen, db.WarehouseError):
            return seen
        seen = seen.__context__
    return None


def _copy_into(
    con: duckdb.DuckDBPyConnection,
    conn: sa.Connection,
    target: db.PostgresUrl,
    totals: dict[str, int],
    wait: float,
    on_progress: Progress | None,
) -> CopyResult:
    postgres.lock_schema(conn, target, wait)
    revision = postgres.current_revision(conn)
    if revision is None:
        present = postgres.tables(conn)
        if present:
            raise CopyRefused(
                f"{target} holds tables of its own ({', '.join(present[:3])}{', …' if len(present) > 3 else ''}) "
                "and no runlytics schema: db copy fills an empty database, or one `runlytics db upgrade` built"
            )
        migrate.run_chain(conn)
        revision = postgres.current_revision(conn)
    elif revision != migrate.HEAD_REVISION:
        raise CopyRefused(
            f"{target} is at schema revision {revision!r}, this runlytics at {migrate.HEAD_REVISION!r}: db copy fills "
            "a warehouse of its own revision (an older one: `runlytics db upgrade --db URL` first)"
        )
    for table in postgres.tables(conn):
        if table in NOT_COPIED or table in DEFAULTS_REPLACED:
            continue
        # table names come from the target's catalog, quoted
        if conn.exec_driver_sql(f"SELECT EXISTS (SELECT 1 FROM {db.quote_identifier(table)})").scalar():
            raise CopyRefused(
                f"{target} already holds data (table {table}): "
                "db copy fills only an empty warehouse; nothing was copied"
            )
    # an empty warehouse's thresholds may have been set (`insights set --db URL`) before the copy
    before: dict[str, float] = dict(conn.exec_driver_sql(insights.SELECT_SETTINGS).all())
    for table in DEFAULTS_REPLACED:
        conn.exec_driver_sql(f"DELETE FROM {db.quote_identifier(table)}")
    assert revision is not None
    result = CopyResult(revision, unpublishable=[job_id for (job_id,) in con.execute(NUL_JOB_IDS).fetchall()])
    sources = insights.thresholds(con)  # every name: each revision fills its new ones
    result.replaced_thresholds = {
        name: (value, sources[name])
        for name, value in before.items()
        if value != insights.DEFAULTS[name] and value != sources[name]
    }
    raw = conn.connection.driver_connection  # psycopg's: COPY in the same transaction
    for table, origin in COPIED.items():
        columns = _target_columns(conn, table)
        try:
            if table == pg_samples.VIEW:
                result.rows[table] = pg_samples.copy(
                    con, raw, source=SAMPLES_SOURCE, params=NUL_PARAMS, total=totals[table], on_progress=on_progress
                )
            else:
                result.rows[table] = _copy_table(con, raw, table, origin, columns, totals[table], on_progress)
        except psycopg.Error as error:
            reason = postgres.reason(error)
            raise db.WarehouseError(f"copy into {target} failed at table {table}, nothing written: {reason}") from error
    for table in COPIED:
        stored = pg_samples.TABLE if table == pg_samples.VIEW else table
        conn.exec_driver_sql(f"ANALYZE {db.quote_identifier(stored)}")  # plans need the new rows' statistics
    conn.commit()
    return result


def _count(con: duckdb.DuckDBPyConnection, origin: str) -> int:
    return int(db.one(con, f"SELECT count(*) FROM {db.quote_identifier(origin)}")[0])


# a table's columns in order, each with its type's name (information_schema's udt_name)
COLUMNS = (
    "SELECT column_name, udt_name FROM information_schema.columns "
    "WHERE table_schema = current_schema() AND table_name = %(table)s ORDER BY ordinal_position"
)


def _target_columns(conn: sa.Connection, table: str) -> list[tuple[str, str]]:
    """The target table's columns in order, each with its type's name (information_schema's udt_name)."""
    return [(name, udt) for name, udt in conn.exec_driver_sql(COLUMNS, {"table": table}).all()]


def target_columns(raw: psycopg.Connection[Any], table: str) -> list[tuple[str, str]]:
    """``_target_columns`` on a psycopg connection (ingest's publish, ingest/postgres.py)."""
    with raw.cursor() as cursor:
        return [(name, udt) for name, udt in cursor.execute(COLUMNS, {"table": table}).fetchall()]


def _copy_type(udt: str) -> str:
    """The type a column's COPY values are written as: its own (an array's as ``item[]``), but json's
    binary form is its text, so the text DuckDB returns goes as text (psycopg's json type would
    encode the Python string as a JSON string)."""
    if udt == "json":
        return "text"
    return f"{udt[1:]}[]" if udt.startswith("_") else udt


def _copy_table(
    con: duckdb.DuckDBPyConnection,
    raw: Any,
    table: str,
    origin: str,
    columns: list[tuple[str, str]],
    total: int,
    on_progress: Progress | None,
) -> int:
    select = f"SELECT {select_list(columns)} FROM {db.quote_identifier(origin)}"
    if "job_id" in (name for name, _ in columns):
        select += f" WHERE {NUL_FREE_JOBS}"
    done = copy_rows(con, raw, table, columns, select, NUL_PARAMS, total=total, on_progress=on_progress)
    if on_progress is not None and done == 0:
        on_progress(table, 0, total)
    return done


def select_list(columns: list[tuple[str, str]], *, prefixed: str | None = None, of: str | None = None) -> str:
    """The select list of these target columns (name, udt_name) as copied: NUL replaced in every
    string ($nul_replacement: NUL_PARAMS), a time outside years 1-9999 NULL (times.IN_YEARS), the column
    named ``prefixed`` with $prefix in front, each qualified by the relation ``of`` when given."""
    expressions = []
    for name, udt in columns:
        expression = db.quote_identifier(name) if of is None else f"{of}.{db.quote_identifier(name)}"
        if name == prefixed:
            expression = f"$prefix || {expression}"
        if udt in NUL_FREE:
            expression = NUL_FREE[udt].format(expression=expression)
        elif udt == "timestamp":
            expression = times.IN_YEARS.format(t=expression)
        expressions.append(expression)
    return ", ".join(expressions)


def copy_rows(
    con: duckdb.DuckDBPyConnection,
    raw: Any,
    table: str,
    columns: list[tuple[str, str]],
    select: str,
    params: dict[str, Any] | None = None,
    *,
    total: int = 0,
    on_progress: Progress | None = None,
) -> int:
    """COPY (binary) the rows of the DuckDB query ``select``, whose columns are ``columns`` in
    order, into the PostgreSQL table ``table``, on the psycopg connection ``raw`` (in its
    transaction); the number of rows. ``db copy`` and ingest's publish both copy with it."""
    names = ", ".join(db.quote_identifier(name) for name, _ in columns)
    texts = [i for i, (_, udt) in enumerate(columns) if udt == "json"]  # non-finite numbers made strings
    cursor = con.cursor()
    try:
        cursor.execute(select, params)
        done = 0
        batch = cursor.fetchmany(BATCH_ROWS)
        if not batch:  # no COPY statement for no rows (a publish's jobs often have no trainer state)
            return 0
        with (
            raw.cursor() as pg,
            pg.copy(f"COPY {db.quote_identifier(table)} ({names}) FROM STDIN (FORMAT BINARY)") as out,
        ):
            out.set_types([_copy_type(udt) for _, udt in columns])
            while batch:
                for row in batch:
                    out.write_row(_portable_json(row, texts) if texts else row)
                done += len(batch)
                if on_progress is not None:
                    on_progress(table, done, total)
                batch = cursor.fetchmany(BATCH_ROWS)
    finally:
        cursor.close()
    return done


def portable_json(text: str) -> str:
    """JSON text with NaN, Infinity and -Infinity (outside strings, in any case DuckDB took: nan,
    -INF) made strings and a trailing comma left out: PostgreSQL's json takes neither; the strings
    "NaN", "Infinity" and "-Infinity" escaped (pg_reader.ESCAPED_WORDS), so that
    pg_reader.duckdb_json gives ``text`` back (the words as Python spells them)."""
    if _MAY_NOT_PORT.search(text) is None:
        return text
    return bounded_json.DUCKDB_ONLY.sub(_portable, text)


def _portable(match: re.Match[str]) -> str:
    string, minus, word = match.group(1, 2, 3)
    if string is not None:
        return pg_reader.ESCAPED_WORDS.get(string, string)
    return "" if word is None else f'"{bounded_json.nonfinite(minus, word)}"'  # a trailing comma left out


def _portable_json(row: tuple[Any, ...], indexes: list[int]) -> list[Any]:
    out = list(row)
    for i in indexes:
        if isinstance(out[i], str):
            out[i] = portable_json(out[i])
    return out
