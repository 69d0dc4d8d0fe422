"""Refilling the derived tables in a revision, paid only when there are facts to derive them from,
and once per upgrade.

A new warehouse replays the whole chain with every table empty: each refill would bind and plan
the views' whole stack to insert nothing (about 0.4 s of a new warehouse's 1.1 s). With no
facts stored, the derived tables stay empty either way, so the refills are skipped.

An upgrade over several revisions (``deferred``: migrations/env.py) refills job_results and
then insight_results once, at the chain's end, if any of its revisions asked: a warehouse 10
revisions behind refilled both after each of them, every time over every job (docs/decisions.md,
"Session 27"). Both are tables at every revision from their first, filled from the views as the
chain left them, as a new warehouse's ingest fills them. The other refills run at once: a later
revision may turn the table they fill into a view (gpu_minutes). A downgrade runs every refill
at once: a revision below may drop a table a deferred refill fills.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from alembic import op

from runlytics.warehouse import insights, results

# every derived table (job_results, utilization_minutes, insight_results, insight_jobs) is
# computed from these
# (GPU samples: the hot table before revision 0014 was named gpu_samples; sealed parts are listed
# in gpu_parts)
FACTS = ("jobs", "steps", "step_gpus", "trainer_steps", "gpu_samples", "gpu_samples_hot", "gpu_parts", "metric_values")
# the config attribute holding the upgrade's deferred refills (None: run at once)
DEFERRED = "runlytics.deferred_refills"
# the refills an upgrade runs once, at its end, in this order (insight rules read job_results)
DEFERRABLE = (results.REFILL, insights.REFILL)
# the config attribute by which ``warehouse.migrate.run_chain`` says its chain is an upgrade
UPGRADING = "runlytics.upgrading"


def refill(*statements: str) -> None:
    """Run these statements, in order, unless the warehouse holds no facts yet; in an upgrade's
    chain, once at its end (``deferred``)."""
    if not _holds_facts():
        return
    config = op.get_context().config
    waiting: set[str] | None = config.attributes.get(DEFERRED) if config is not None else None
    for statement in statements:
        if waiting is not None and statement in DEFERRABLE:
            waiting.add(statement)
        else:
            op.execute(statement)


@contextmanager
def deferred(config: Any, connection: sa.Connection, upgrading: bool) -> Iterator[None]:
    """Within (an upgrade's chain, in its transaction): the revisions' refills of job_results and
    insight_results wait, and run once, in that order, when the chain is done."""
    if not upgrading:
        yield
        return
    waiting: set[str] = set()
    config.attributes[DEFERRED] = waiting
    try:
        yield
    finally:
        config.attributes.pop(DEFERRED, None)
    for statement in DEFERRABLE:
        if statement in waiting:
            connection.execute(sa.text(statement))


def _holds_facts() -> bool:
    bind = op.get_bind()
    present = set(sa.inspect(bind).get_table_names())
    # table names come from FACTS, never from input
    return any(
        bind.exec_driver_sql(f"SELECT EXISTS (SELECT 1 FROM {table})").scalar() for table in FACTS if table in present
    )
