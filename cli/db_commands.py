"""``runlytics db upgrade`` and ``runlytics db copy``."""

from __future__ import annotations

import argparse
import sys

from runlytics.warehouse import db, migrate

from .errors import UserError
from .exits import EXIT_OK
from .output import CopyProgress, _nul_job
from .reading import _existing_warehouse


def run_db_upgrade(args: argparse.Namespace) -> int:
    target = db.resolve_target(args.db)
    revision = migrate.upgrade(target, args.revision, wait=args.wait)  # BadRevision: exit 2 (cli/errors.py)
    print(f"{target}: schema at revision {revision}")
    if isinstance(target, db.PostgresUrl) or revision != migrate.HEAD_REVISION:
        return EXIT_OK
    try:
        migrate.check_published(target, args.wait)
    except db.WarehouseError as error:  # upgraded, not published: readers wait for the next ingest
        print(f"runlytics db upgrade: warning: {error}", file=sys.stderr)
    return EXIT_OK


def run_db_copy(args: argparse.Namespace) -> int:
    from runlytics.warehouse import pg_copy

    if not db.is_postgres_url(args.to):
        raise UserError(f"--to takes a postgresql://user@host/dbname URL, not {args.to!r}")
    target = db.PostgresUrl(args.to)
    path = _existing_warehouse(args)
    result = pg_copy.copy(path, target, wait=args.wait, on_progress=CopyProgress(sys.stderr))
    for job_id in result.unpublishable:
        print(f"runlytics db copy: warning: {_nul_job(job_id)}: not copied", file=sys.stderr)
    for name, (was, now) in result.replaced_thresholds.items():
        print(
            f"runlytics db copy: warning: insight threshold {name} was {was:g} on {target}, now the copied "
            f"warehouse's {now:g}: set it again with `runlytics insights set`",
            file=sys.stderr,
        )
    total = sum(result.rows.values())
    print(
        f"{target}: copied {total:,} row{'' if total == 1 else 's'} of {len(result.rows)} tables from {path} "
        f"in {result.seconds:.1f} s (schema at revision {result.revision})"
    )
    return EXIT_OK
