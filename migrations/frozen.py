"""The view texts each revision created, frozen: ``versions/views/<revision>/<view>.sql``.

A revision that creates or replaces views reads its own copies, and its downgrade the copies of
the revision that created the views before it; never ``warehouse/sql``, which holds the head's
texts and changes. So every old revision replays the same SQL forever. The copies are whole
texts written once, when their revision was; a later change to a view is a new revision with a
new copy (``tests/test_views_sql.py`` checks the newest copy of each view against
``warehouse/sql``).

On PostgreSQL the revisions before 0018 create no views (``engine.POSTGRES_VIEWS_FROM``): their
texts are DuckDB's, and 0018 creates the head's views there.
"""

from __future__ import annotations

from pathlib import Path

from runlytics.migrations import engine
from runlytics.warehouse.views import View

FROZEN = Path(__file__).resolve().parent / "versions" / "views"


def views(revision: str, names: tuple[str, ...]) -> tuple[View, ...]:
    """The views ``names`` as ``revision`` created them, in the given order (none for a revision
    before 0018 running on PostgreSQL)."""
    if revision < engine.POSTGRES_VIEWS_FROM and engine.on_postgres():
        return ()
    return tuple(copy(revision, name) for name in names)


def copy(revision: str, name: str) -> View:
    """The view ``name`` as ``revision`` froze it, on either engine: what creates a view on
    PostgreSQL from a copy older than 0018, which ``views`` gives only on DuckDB."""
    return View.load(FROZEN / revision, name)
