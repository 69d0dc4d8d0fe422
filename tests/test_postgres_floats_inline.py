"""The dialect's @fmul, @fdiv, @fadd, @fsub as PostgreSQL renders them give DuckDB's bits (revision 0030).

Since revision 0030 PostgreSQL's views hold the guarded expression itself (warehouse/dialect.py),
not a call of revision 0029's functions, which PostgreSQL did not inline where an operand was
another call: each macro, alone and nested as the views nest them, rendered for each engine and
compared bit for bit on every pair of the edge values; and no view calls a function per row.
"""

from __future__ import annotations

import itertools

import duckdb
import psycopg

from runlytics.warehouse import db, dialect, migrate
from runlytics.warehouse.postgres import SESSION_OPTIONS
from tests.test_postgres_float_edges import VALUES, _bits

# each macro alone, and the views' nested shapes (job_losses, job_efficiency, insight_steps)
EXPRESSIONS = (
    "@fmul(a; b)",
    "@fdiv(a; b)",
    "@fadd(a; b)",
    "@fsub(a; b)",
    "@fdiv(@fmul(100; @fsub(a; b)); a)",
    "@fadd(a; @fmul(b; a))",
    "@fsub(@fadd(a; b); @fmul(a; b))",
)
CALLING_VIEWS = (
    "SELECT viewname FROM pg_views WHERE schemaname = current_schema() "
    "AND definition ~ 'runlytics_f(mul|div|add|sub)\\('"
)


def test_rendered_macros_give_duckdbs_bits_on_edge_operands(pg_url: str) -> None:
    pairs = list(itertools.product(VALUES, VALUES))
    select = "SELECT i, " + ", ".join(
        f"CASE WHEN b = 0 AND {i} IN (1, 4) OR a = 0 AND {i} = 4 THEN NULL ELSE {e} END"
        for i, e in enumerate(EXPRESSIONS)
    )  # division by zero raises on PostgreSQL (the views divide by nonzero values only)
    duck = duckdb.connect()
    duck.execute("CREATE TABLE t (i INTEGER, a DOUBLE, b DOUBLE)")
    duck.executemany("INSERT INTO t VALUES (?, ?, ?)", [(i, a, b) for i, (a, b) in enumerate(pairs)])
    want = {i: rest for i, *rest in duck.execute(dialect.render(select, dialect.DUCKDB) + " FROM t").fetchall()}
    migrate.upgrade(db.PostgresUrl(pg_url))
    with psycopg.connect(pg_url, autocommit=True, options=SESSION_OPTIONS) as con, con.cursor() as cur:
        cur.execute("CREATE TEMP TABLE t (i INTEGER, a DOUBLE PRECISION, b DOUBLE PRECISION)")
        with cur.copy("COPY t (i, a, b) FROM STDIN") as copy:
            for i, (a, b) in enumerate(pairs):
                copy.write_row((i, a, b))
        got = {i: rest for i, *rest in cur.execute(dialect.render(select, dialect.POSTGRES) + " FROM t").fetchall()}
        # no view of the head calls 0029's functions: each would be a call per row where not inlined
        calls = cur.execute(CALLING_VIEWS).fetchall()
    assert calls == []
    wrong = [
        (pairs[i], EXPRESSIONS[k], want[i][k], got[i][k])
        for i in want
        for k in range(len(EXPRESSIONS))
        if _bits(want[i][k]) != _bits(got[i][k])
    ]
    assert wrong == []
