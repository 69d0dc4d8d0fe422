"""The engine a revision runs on, and what the revisions before 0018 do on PostgreSQL.

Those revisions were written for DuckDB. On PostgreSQL (issue #18) they build the tables only:
their views are left out (``frozen.views`` gives none before ``POSTGRES_VIEWS_FROM``; revision
0018 creates every head view rendered for PostgreSQL), and so are their statements in DuckDB's
own SQL (``duckdb_only``). A PostgreSQL database is new when it meets them: it holds no facts
before 0018 (``runlytics db copy`` fills it at head), so a skipped data statement has nothing to
do there. On DuckDB every statement runs, text for text, as it always did.
"""

from __future__ import annotations

import re

from alembic import op

# the first revision that creates views on PostgreSQL (every head view, rendered for it)
POSTGRES_VIEWS_FROM = "0018"

# DuckDB's DOUBLE, as a type in a CREATE TABLE text; PostgreSQL spells it DOUBLE PRECISION
_DOUBLE = re.compile(r"\bDOUBLE\b(?!\s+PRECISION)")


def on_postgres() -> bool:
    """True while a revision runs on PostgreSQL; False on DuckDB and outside a migration (a test or
    a benchmark reading frozen view texts)."""
    try:
        bind = op.get_bind()
    except (NameError, AttributeError):  # alembic's proxy, before any migration or after one
        return False
    return bool(bind.dialect.name == "postgresql")


def duckdb_only(*statements: str) -> None:
    """Run these statements on DuckDB; on PostgreSQL, which holds no facts before 0018, none."""
    if not on_postgres():
        for statement in statements:
            op.execute(statement)


def create_table(sql: str) -> None:
    """Run a CREATE TABLE text written in DuckDB's types, on either engine."""
    op.execute(_DOUBLE.sub("DOUBLE PRECISION", sql) if on_postgres() else sql)
