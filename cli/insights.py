"""``runlytics insights``: a job's or the fleet's insights; ``insights thresholds`` and ``insights set``."""

from __future__ import annotations

import argparse
import json
import math
import textwrap

from runlytics.warehouse import db, migrate, pages, queries, snapshots

from .errors import UserError
from .exits import EXIT_OK, EXIT_QUERY
from .output import _cell, _float, _write_rows
from .reading import _existing_warehouse, _reading

FLEET_LIMIT = 100  # insights of the fleet's list at once, without --limit


def run_insights(args: argparse.Namespace) -> int:
    from runlytics.warehouse import insight_list
    from runlytics.warehouse.fleet import Filters
    from runlytics.warehouse.views import STATUSES

    words = list(args.words)
    fleet_only = [f"--{name}" for name in ("status", "limit") if getattr(args, name) is not None]
    filters = [f"--{name}" for name in ("kind", "severity") if getattr(args, name)] + fleet_only
    if words[:1] in (["set"], ["thresholds"]) and args.job is None and filters:
        raise UserError(f"{', '.join(filters)}: for a list of insights, not `insights {words[0]}`")
    if words[:1] == ["set"] and args.job is None:
        args.command_name = "insights set"  # its messages, the lock's and the warehouse's too
        return _insights_set(args, words[1:])
    if words == ["thresholds"] and args.job is None:
        args.command_name = "insights thresholds"
        return _insights_thresholds(args)
    if len(words) > 1 or (words and args.job is not None):
        raise UserError("name one job (JOB_ID or --job), `thresholds`, or `set NAME VALUE`")
    job_id = args.job if args.job is not None else (words[0] if words else None)
    if job_id is not None and fleet_only:  # (before session 26 they were ignored)
        raise UserError(f"{', '.join(fleet_only)}: for the fleet's list of insights, not one job's")
    args.limit = FLEET_LIMIT if args.limit is None else args.limit
    insight_list.checked(args.kind, args.severity)  # an unknown kind or severity: UnknownFilter, exit 2
    if args.status is not None and args.status not in (*STATUSES, "unknown"):
        raise UserError(f"unknown status {args.status!r}; known: {', '.join(STATUSES)}, unknown")
    if not 1 <= args.limit <= pages.MAX_PAGE:  # the API's page: a limit past BIGINT was a traceback
        raise UserError(f"--limit must be at least 1 and at most {pages.MAX_PAGE}")
    with _reading(args) as (con, name):
        if job_id is not None:
            if not queries.job_exists(con, job_id):
                raise UserError(f"no job {job_id!r} in {name}", EXIT_QUERY)
            result = insight_list.job_insights(con, job_id, args.kind, args.severity)
        else:
            chosen = Filters(status=args.status)
            result = insight_list.fleet_insights(con, chosen, args.kind, args.severity, args.limit, None)
    if args.json:
        print(json.dumps(result, indent=2, allow_nan=False))
        return EXIT_OK
    print(f"insights as of {result['as_of'] or 'never (no ingest has computed them)'}")
    rows = [
        (
            r["job_id"], r["severity"], r["kind"], _steps(r["first_step"], r["last_step"]),
            _gpu(r["host"], r["gpu_index"]), r["message"],
        )
        for r in result["insights"]
    ]  # fmt: skip
    _write_rows(["job_id", "severity", "kind", "steps", "gpu", "message"], rows, "table")
    if result.get("next_cursor"):
        raise_it = f"raise --limit above {args.limit}, or " if args.limit < pages.MAX_PAGE else ""
        print(f"(more: {raise_it}filter by --kind, --severity or --status)")
    # insights.md: every answer that lists insights also lists the thresholds in force
    pairs = ", ".join(f"{name}={_cell(value)}" for name, value in sorted(result["thresholds"].items()))
    print(textwrap.fill(f"thresholds in force: {pairs}", width=100, subsequent_indent="  ", break_long_words=False))
    return EXIT_OK


def _gpu(host: str | None, index: int | None) -> str | None:
    if index is None:
        return None
    return f"{host}:{index}" if host else str(index)  # readings logged with steps have no host


def _steps(first: int | None, last: int | None) -> str | None:
    if first is None:
        return None
    return str(first) if last is None or last == first else f"{first}-{last}"


def _insights_thresholds(args: argparse.Namespace) -> int:
    from runlytics.warehouse import insight_list

    with _reading(args) as (con, _):
        thresholds = insight_list.thresholds(con)
    if args.json:
        print(json.dumps(thresholds, indent=2, allow_nan=False))
    else:
        _write_rows(["name", "value"], sorted(thresholds.items()), "table")
    return EXIT_OK


def _insights_set(args: argparse.Namespace, words: list[str]) -> int:
    """Change a threshold: a write, under the ingest lock as every writer, then a new snapshot;
    on PostgreSQL one transaction that locks the insight tables (warehouse/pg_thresholds.py)."""
    from runlytics.warehouse import insights

    if len(words) != 2:
        raise UserError("give NAME VALUE, e.g. `set loss_spike.mad_factor 8`")
    name, text = words
    try:
        number: float | None = float(text)
    except ValueError:
        number = None
    try:
        # an unknown name (UnknownThreshold) before a value that is no number; either: exit 2
        value = insights.check_threshold(name, math.nan if number is None else number)
    except insights.BadThreshold as error:
        if number is not None:
            raise
        raise UserError(f"{name} must be a number, not {text!r}") from error
    target = db.resolve_target(args.db)
    if isinstance(target, db.PostgresUrl):
        from runlytics.warehouse import pg_thresholds

        pg_thresholds.set_threshold(target, name, value, migrate.HEAD_REVISION, args.wait)
        return _set_done(args, str(target), name, value)
    path = _existing_warehouse(args)
    # a warehouse a newer runlytics wrote is refused before anything is marked; an older one is
    # brought to this runlytics' schema in the write
    with snapshots.published_write(path, args.wait, check=lambda: migrate.check_upgradable(path, "head", args.wait)):
        migrate.ensure_current(path, wait=args.wait, locked=True)
        with db.connection(path, wait=args.wait) as con:
            insights.set_threshold(con, name, value)
            con.execute("CHECKPOINT")
    return _set_done(args, str(path), name, value)


def _set_done(args: argparse.Namespace, warehouse: str, name: str, value: float) -> int:
    if args.json:  # what a script needs to confirm the change, in the thresholds' own form
        print(json.dumps({"warehouse": warehouse, "name": name, "value": value, "recomputed": True}, allow_nan=False))
    else:
        print(f"{warehouse}: {name} = {_float(value)}; insights recomputed")
    return EXIT_OK
