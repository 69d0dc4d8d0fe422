"""``runlytics sql`` and ``runlytics analytics``."""

from __future__ import annotations

import argparse
import json
import sys

from runlytics.warehouse import db, migrate, queries, readonly

from .exits import EXIT_OK, EXIT_QUERY, EXIT_USAGE
from .output import _write_rows
from .reading import _existing_warehouse, _reading


def _sql(args: argparse.Namespace) -> int:
    import duckdb

    target = db.resolve_target(args.db)
    if isinstance(target, db.PostgresUrl):
        return _sql_postgres(args, target)
    try:
        # before opening anything: a refused statement touches no file
        statement = readonly.single_select(args.query)
    except (readonly.Refused, duckdb.Error) as error:
        print(f"runlytics sql: {readonly.one_line(error)}", file=sys.stderr)
        return EXIT_QUERY
    path = _existing_warehouse(args)
    migrate.ensure_current(path, wait=args.wait)
    con = readonly.connect(path, args.allow_read, wait=args.wait)
    try:
        if args.format is None and sys.stdout.isatty():
            # DuckDB's own box rendering, as its shell draws it (wide results elided to the terminal)
            print(str(con.sql(statement)).rstrip("\n"))
            return EXIT_OK
        cursor = con.execute(statement)
        columns = [d[0] for d in cursor.description or []]
        rows = cursor.fetchall()
    except duckdb.PermissionException as error:
        print(f"runlytics sql: {readonly.one_line(error)} (files: only under --allow-read folders)", file=sys.stderr)
        return EXIT_QUERY
    except duckdb.Error as error:
        print(f"runlytics sql: {readonly.one_line(error)}", file=sys.stderr)
        return EXIT_QUERY
    finally:
        con.close()
    _write_rows(columns, rows, args.format or "table")
    return EXIT_OK


def _sql_postgres(args: argparse.Namespace, target: db.PostgresUrl) -> int:
    if args.allow_read:
        print("runlytics sql: --allow-read reads files beside a DuckDB warehouse, not on PostgreSQL", file=sys.stderr)
        return EXIT_USAGE
    try:
        columns, rows = readonly.run_postgres(target, args.query, args.timeout)
    except (readonly.Refused, readonly.QueryFailed) as error:
        print(f"runlytics sql: {error}", file=sys.stderr)
        return EXIT_QUERY
    _write_rows(columns, rows, args.format or "table")
    return EXIT_OK


def _analytics(args: argparse.Namespace) -> int:
    with _reading(args) as (con, name):
        result = queries.job_analytics(con, args.job_id)
    if result is None:
        print(f"runlytics analytics: no job {args.job_id!r} in {name}", file=sys.stderr)
        return EXIT_QUERY
    print(json.dumps(result, indent=2))
    return EXIT_OK
