"""``runlytics sql`` and ``runlytics analytics``."""

from __future__ import annotations

import argparse
import json
import sys

from runlytics.warehouse import db, migrate, queries, readonly

from .errors import UserError
from .exits import EXIT_OK, EXIT_QUERY
from .output import _write_rows
from .reading import _existing_warehouse, _reading


def run_sql(args: argparse.Namespace) -> int:
    import duckdb

    target = db.resolve_target(args.db)
    if isinstance(target, db.PostgresUrl):
        return _sql_postgres(args, target)
    try:
        # before opening anything: a refused statement (readonly.Refused) touches no file
        statement = readonly.single_select(args.query)
    except duckdb.Error as error:  # it does not parse: the query's error, as a failed query's
        raise UserError(readonly.one_line(error), EXIT_QUERY) from error
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
        raise UserError(f"{readonly.one_line(error)} (files: only under --allow-read folders)", EXIT_QUERY) from error
    except duckdb.Error as error:
        raise UserError(readonly.one_line(error), EXIT_QUERY) from error
    finally:
        con.close()
    _write_rows(columns, rows, args.format or "table")
    return EXIT_OK


def _sql_postgres(args: argparse.Namespace, target: db.PostgresUrl) -> int:
    if args.allow_read:
        raise UserError("--allow-read reads files beside a DuckDB warehouse, not on PostgreSQL")
    # refused (readonly.Refused) or failed (readonly.QueryFailed): one line, exit 4 (cli/errors.py)
    columns, rows = readonly.run_postgres(target, args.query, args.timeout)
    _write_rows(columns, rows, args.format or "table")
    return EXIT_OK


def run_analytics(args: argparse.Namespace) -> int:
    with _reading(args) as (con, name):
        result = queries.job_analytics(con, args.job_id)
    if result is None:
        raise UserError(f"no job {args.job_id!r} in {name}", EXIT_QUERY)
    print(json.dumps(result, indent=2))
    return EXIT_OK
