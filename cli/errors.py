"""The errors every command shares: the handler that turns them into one line on stderr and an exit code."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from runlytics.warehouse import db
from runlytics.warehouse.lock import IngestLocked

from .exits import EXIT_BUSY, EXIT_INTERRUPTED, EXIT_USAGE, EXIT_WAREHOUSE


class NoWarehouse(db.WarehouseError):
    """A read command named a warehouse that does not exist (only ingest and db upgrade create one)."""


def _guarded(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """``run(args)``'s exit code, or the exit code of the error that stopped it (said on stderr,
    "runlytics COMMAND: …" as each command's own messages are)."""
    try:
        return run(args)
    except (IngestLocked, db.WarehouseBusy) as error:
        _say(args, error)
        return EXIT_BUSY
    except db.WarehouseError as error:
        _say(args, error)
        return EXIT_WAREHOUSE
    except FileNotFoundError as error:
        _say(args, error)
        return EXIT_USAGE
    except (KeyboardInterrupt, RuntimeError) as error:
        if not _interrupted(error):
            raise
        _say(args, "interrupted")  # named as its errors are: `runlytics db upgrade: interrupted`
        return EXIT_INTERRUPTED


def _interrupted(error: BaseException) -> bool:
    """Ctrl-C: KeyboardInterrupt, or in a DuckDB call (any: the query, the schema check before it)
    the RuntimeError DuckDB raises instead."""
    if isinstance(error, RuntimeError):
        return str(error) == "Query interrupted"
    return isinstance(error, KeyboardInterrupt)


def _say(args: argparse.Namespace, error: BaseException | str) -> None:
    command = getattr(args, "command_name", None)
    print(f"runlytics{f' {command}' if command else ''}: {error}", file=sys.stderr)
