"""The errors every command shares: the handler that turns them into one line on stderr and an exit code."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from runlytics.warehouse import db
from runlytics.warehouse.lock import IngestLocked

from .exits import (
    EXIT_BUSY,
    EXIT_INTERRUPTED,
    EXIT_NO_MEMORY,
    EXIT_NO_NVML,
    EXIT_OUTPUT,
    EXIT_QUERY,
    EXIT_USAGE,
    EXIT_WAREHOUSE,
)
from .streams import OutputFailed, say


class NoWarehouse(db.WarehouseError):
    """A read command named a warehouse that does not exist (only ingest and db upgrade create one)."""


class UserError(Exception):
    """What the user asked can't be done as asked (a usage error, no such job, a refused query):
    a command raises it, and ``_guarded`` says its message as one line, "runlytics COMMAND: …",
    and exits with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# The domain's own errors that are the user's, said as UserError is: their message as it is, and
# this exit code. Named, not imported: their modules cost up to half a second of every command's
# start (export, the insights, the API's listener), and an error is raised only by a module that
# is imported. tests/test_cli_errors_s20.py checks that each name is a class of the domain.
DOMAIN_ERRORS = {
    "runlytics.warehouse.export.ExportError": EXIT_USAGE,
    "runlytics.warehouse.insight_list.UnknownFilter": EXIT_USAGE,
    "runlytics.warehouse.insights.UnknownThreshold": EXIT_USAGE,
    "runlytics.warehouse.insights.BadThreshold": EXIT_USAGE,
    "runlytics.warehouse.migrate.BadRevision": EXIT_USAGE,
    "runlytics.warehouse.readonly.Refused": EXIT_QUERY,
    "runlytics.warehouse.readonly.QueryFailed": EXIT_QUERY,
    "runlytics.api.listen.CannotListen": EXIT_USAGE,
    "runlytics.sampler.devices.SamplerError": EXIT_USAGE,
    "runlytics.sampler.nvml.NvmlUnavailable": EXIT_NO_NVML,
}
# DuckDB's out of memory (its memory_limit, or an allocation the process was refused), said as
# Python's MemoryError is; named for the same reason (a run with nothing to do never imports DuckDB)
DUCKDB_OUT_OF_MEMORY = "_duckdb.OutOfMemoryException"
# DuckDB's I/O error: a part file a view names that a reader can't find (parts.unread_part_error)
DUCKDB_IO_ERROR = "_duckdb.IOException"
# Python's word when the system refuses a thread (its stack could not be mapped: a process memory
# limit such as `ulimit -v` reached at a thread's start, not at an allocation)
NO_THREAD = "can't start new thread"


def _guarded(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """``run(args)``'s exit code, or the exit code of the error that stopped it (said on stderr,
    "runlytics COMMAND: …", as every message of a command is)."""
    try:
        done = run(args)
        sys.stdout.flush()  # the output's end: failing to write it is the command's failure
        return done
    except OutputFailed as error:  # the work is done (an ingest's run stored): only the output is not
        _say(args, error)
        return EXIT_OUTPUT
    except UserError as error:
        _say(args, error)
        return error.exit_code
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
        if isinstance(error, RuntimeError) and str(error) == NO_THREAD:
            _say(args, out_of_memory(error))
            return EXIT_NO_MEMORY
        if not _interrupted(error):
            raise
        _say(args, "interrupted")  # named as its errors are: `runlytics db upgrade: interrupted`
        return EXIT_INTERRUPTED
    except MemoryError as error:
        _say(args, out_of_memory(error))
        return EXIT_NO_MEMORY
    except Exception as error:
        if _named(error, DUCKDB_OUT_OF_MEMORY):
            _say(args, out_of_memory(error))
            return EXIT_NO_MEMORY
        if _named(error, DUCKDB_IO_ERROR) and (said := _part_unread(args, error)) is not None:
            _say(args, said)
            return EXIT_WAREHOUSE
        code = _domain_exit_code(error)
        if code is None:  # a bug: its traceback
            raise
        _say(args, error)
        return code


def _part_unread(args: argparse.Namespace, error: BaseException) -> db.WarehouseError | None:
    """A read of a DuckDB warehouse whose views name a part that is not where they say (the
    warehouse moved, or was copied without its `.parts` folder): its one line, else None."""
    from runlytics.warehouse import parts

    if not hasattr(args, "db"):
        return None
    target = db.resolve_target(args.db)
    return None if isinstance(target, db.PostgresUrl) else parts.unread_part_error(error, target)


def out_of_memory(error: BaseException) -> str:
    """The line for running out of memory: DuckDB's first line (its next ones suggest settings,
    ``SET memory_limit``, that no command takes), and what became of the warehouse."""
    said = str(error).splitlines()[0].strip() if str(error).strip() else ""
    detail = f" ({said})" if said and said != "out of memory" else ""
    return f"out of memory{detail}: stopped; nothing stored was lost (every write is a transaction)"


def _named(error: BaseException, name: str) -> bool:
    """Whether ``error`` is of the class ``name`` (module and name), or of a subclass of it."""
    return any(f"{cls.__module__}.{cls.__qualname__}" == name for cls in type(error).__mro__)


def _domain_exit_code(error: Exception) -> int | None:
    """The exit code of a domain error DOMAIN_ERRORS names (or of a subclass of one), else None."""
    for cls in type(error).__mro__:
        code = DOMAIN_ERRORS.get(f"{cls.__module__}.{cls.__qualname__}")
        if code is not None:
            return code
    return None


def _interrupted(error: BaseException) -> bool:
    """Ctrl-C: KeyboardInterrupt, or in a DuckDB call (any: the query, the schema check before it)
    the RuntimeError DuckDB raises instead."""
    if isinstance(error, RuntimeError):
        return str(error) == "Query interrupted"
    return isinstance(error, KeyboardInterrupt)


def _say(args: argparse.Namespace, error: BaseException | str) -> None:
    command = getattr(args, "command_name", None)
    say(f"runlytics{f' {command}' if command else ''}: {error}")
