"""``runlytics export``."""

from __future__ import annotations

import argparse
import sys

from .errors import UserError
from .exits import EXIT_OK, EXIT_QUERY
from .reading import _reading

EXPORT_TIMEOUT_SECONDS = 7 * 86_400.0  # export on PostgreSQL: in effect none


def run_export(args: argparse.Namespace) -> int:
    import duckdb

    from runlytics.warehouse import db, export, job_lists, parts, times
    from runlytics.warehouse.fleet import UnknownJobs

    if args.jobs is not None and not job_lists.names_any(args.jobs):
        raise UserError("--jobs names no job")
    try:
        # read as the API reads since/until: the same text, the same instant
        since = times.instant(args.since) if args.since is not None else None
    except times.BadTime as error:
        raise UserError(f"--since {error}") from error
    # an export's reads of PostgreSQL are whole tables of many jobs: no per-read time limit there
    with _reading(args, timeout=EXPORT_TIMEOUT_SECONDS) as (con, name):
        try:
            # ids may hold commas (warehouse/job_lists.py): resolved against the warehouse's jobs
            jobs = tuple(job_lists.resolve(con, [args.jobs])) if args.jobs is not None else None
            result = export.export(con, args.out, args.format, export.Selection(jobs, since), overwrite=args.overwrite)
        except UnknownJobs as error:
            _print_export_notes(error)
            raise UserError(f"no job(s) {', '.join(map(repr, error.job_ids))} in {name}", EXIT_QUERY) from error
        except (duckdb.Error, OSError) as error:
            _print_export_notes(error)
            if isinstance(error, duckdb.IOException) and (
                said := parts.unread_part_error(error, db.resolve_path(args.db))
            ):
                raise said from None  # exit 3: the warehouse's
            why = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise UserError(f"failed, nothing written to {args.out}: {why}", EXIT_QUERY) from error
    for note in result.notes:  # a layout the reader should know of, an earlier export restored
        print(f"runlytics export: {note}", file=sys.stderr)
    if not args.quiet:
        rows = ", ".join(f"{table} {n:,}" for table, n in result.rows.items())
        exported = f"{result.jobs} job{'' if result.jobs == 1 else 's'}"
        print(f"{result.out}: {result.fmt} export of {exported} in {result.seconds:.2f} s; rows: {rows}")
    return EXIT_OK


def _print_export_notes(error: BaseException) -> None:
    """What the export did before it failed (an earlier export restored to OUT): export.export's notes."""
    for note in getattr(error, "__notes__", ()):
        print(f"runlytics export: {note}", file=sys.stderr)
