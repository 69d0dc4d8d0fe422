"""``runlytics status``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from runlytics.warehouse import db, migrate, snapshots

from .exits import EXIT_OK
from .output import LISTED_WARNINGS, _plural, _points
from .reading import _existing_warehouse, _pg_cursor


def run_status(args: argparse.Namespace) -> int:
    target = db.resolve_target(args.db)
    report = _status_postgres(target) if isinstance(target, db.PostgresUrl) else _status_duckdb(args)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        _print_status(report)
    return EXIT_OK


def _status_duckdb(args: argparse.Namespace) -> dict[str, Any]:
    from runlytics.warehouse import ingest_status

    path = _existing_warehouse(args)
    migrate.ensure_current(path, wait=args.wait)
    con = snapshots.connect_latest(path, wait=args.wait)
    try:
        report = {
            "warehouse": str(path),
            "size_bytes": sum(p.stat().st_size for p in (path, Path(f"{path}.wal")) if p.exists()),
            "schema_revision": migrate.current_revision(con),
            "snapshot": str(snapshots.latest(path)),
            **ingest_status.counts(con),
            **_last_ingest(path),
            "recent_runs": ingest_status.runs_page(con, 5, None, server_paths=True)[0],
            "problem_files": ingest_status.problem_files(con, server_paths=True),
            "warning_files": ingest_status.warning_files(con),
        }
    finally:
        con.close()
    return report


def _last_ingest(path: Path) -> dict[str, Any]:
    """The heartbeat's record (None when no run wrote one), and why it can't be read when it is there
    but this user may not read it: then the last ingest is unknown, not "never"."""
    from runlytics.ingest import journal

    try:
        return {"last_ingest": journal.read_heartbeat(path), "last_ingest_unreadable": None}
    except journal.HeartbeatUnreadable as error:
        return {"last_ingest": None, "last_ingest_unreadable": str(error)}


def _status_postgres(target: db.PostgresUrl) -> dict[str, Any]:
    """``status`` of a PostgreSQL warehouse: no snapshot, no heartbeat file (ingest into
    PostgreSQL is a later step of issue #18); the size is the database's."""
    from runlytics.warehouse import ingest_status

    con = _pg_cursor(target)
    try:
        revision = migrate.current_revision(con)
        return {
            "warehouse": str(target),
            "size_bytes": db.one(con, "SELECT pg_database_size(current_database())")[0],
            "schema_revision": revision,
            "snapshot": None,
            **ingest_status.counts(con),
            "last_ingest": None,
            "last_ingest_unreadable": None,
            "recent_runs": ingest_status.runs_page(con, 5, None, server_paths=True)[0],
            "problem_files": ingest_status.problem_files(con, server_paths=True),
            "warning_files": ingest_status.warning_files(con),
        }
    finally:
        con.close()


def _print_status(r: dict[str, Any]) -> None:
    print(f"warehouse   {r['warehouse']} ({r['size_bytes'] / 2**20:.1f} MiB), schema {r['schema_revision']}")
    print(
        f"contents    {r['jobs']} jobs, {r['step_rows']} step rows, {r['gpu_samples']} GPU samples, {r['files']} files"
    )
    last = r["last_ingest"]
    if last:
        s = last["summary"]
        # a run with nothing to do is in no ingest_runs row (ingest/quick.py)
        quick = " (nothing to do: not in ingest_runs)" if last.get("run_id") is None else ""
        print(
            f"last ingest {last['ended_at']}: {last['outcome']}{quick}; {s.get('ingested')} ingested, "
            f"{s.get('unchanged')} unchanged, {s.get('failed')} failed, {s.get('rows')} step rows, "
            f"{_points(s.get('points') or 0)}{s.get('gpu_samples', 0)} GPU samples, "
            f"{_plural(s.get('warnings') or 0, 'warning')}, {s.get('seconds')} s"
        )
        print(f"last success {last.get('last_success_at') or 'never'}")
        if last.get("error"):
            print(f"  error: {last['error']}")
    elif r["last_ingest_unreadable"]:
        print(f"last ingest unknown: {r['last_ingest_unreadable']}")
    else:
        print("last ingest never")
    print(f"problem files ({len(r['problem_files'])}):")
    for f in r["problem_files"]:
        print(f"  {f['outcome']}: {f['path']}: {f['error']}")
    _print_warning_files(r["warning_files"])


def _print_warning_files(files: list[dict[str, Any]]) -> None:
    """The files whose last read warned, each with its first warnings, LISTED_WARNINGS lines at most."""
    total = sum(f["warning_count"] for f in files)
    print(f"warnings ({total} in {_plural(len(files), 'file')}):")
    listed = 0
    for f in files:
        if listed >= LISTED_WARNINGS:
            break
        print(f"  {f['path']} ({_plural(f['warning_count'], 'warning')}):")
        for message in f["warnings"][:3]:
            print(f"    {message}")
            listed += 1
    if total > listed:
        print(f"  … and {total - listed} more (--json for all)")
