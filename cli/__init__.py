"""The ``runlytics`` command.

Exit codes (also in the README):
  0   success (files left for the next run because they were being written count as success)
  1   ingest: at least one file could not be ingested (see the summary; the rest was ingested);
      any command: a bug (its traceback)
  2   usage error (a number out of range, a file root no job is found by, a --revision unknown
      or older than the warehouse's, a command group without its command, a blank --db or
      $RUNLYTICS_DB, …); ``serve``: a --host and --port it can't listen on (in use, not this
      machine's, not resolvable)
  3   the warehouse can't be used (written by a newer runlytics, unreadable, not a DuckDB file,
      its snapshots folder not one this user may list (a writer: write in), in a folder a
      writer can't write, a --db naming another URL such as md: or s3://, …), or a read
      command (sql, analytics, insights, status, export, serve) names one that does not exist;
      ``db copy``: the target holds data, is at another revision or can't be reached;
      ``sample``: NVML can't be used (no NVIDIA driver)
  4   ``sql``: the query failed, was refused (anything but one read-only SELECT) or ran past
      --timeout; ``analytics``, ``insights``: no such job; ``export``: an unknown job, or the
      export could not be written
  71  out of memory: nothing stored was lost (every write is a transaction)
  74  the output could not be written (stdout a full disk, or closed): the work was done
  75  the warehouse or the ingest lock stayed busy longer than --wait (try again later)
  130 interrupted (Ctrl-C): "runlytics COMMAND: interrupted"
  141 the reader of the output stopped early (`runlytics sql … | head`)
Every error is one line on stderr, "runlytics COMMAND: …".
``sample -- CMD`` exits with CMD's exit code (128 + N when a signal N ended it; 127 when CMD
can't be found, 126 when it can't be run).

The console script imports this module and calls ``entry()``: so that a Ctrl-C at start-up,
which lands in an import, is said as any Ctrl-C is (one line, 130) and not as a traceback, this
module imports nothing at its top but what Python has loaded already; ``entry()`` imports the
rest inside its guard, and the names below are imported on first use (``__getattr__``).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from .exits import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, EXIT_OUTPUT
from .streams import OutputFailed, checked, reserve_standard_fds, say, settle

if TYPE_CHECKING:  # imported on first use, by __getattr__
    import argparse

    from .errors import NoWarehouse, _guarded
    from .exits import (
        EXIT_BUSY,
        EXIT_FILES_FAILED,
        EXIT_NO_MEMORY,
        EXIT_NO_NVML,
        EXIT_NOT_SERVING,
        EXIT_OK,
        EXIT_QUERY,
        EXIT_USAGE,
        EXIT_WAREHOUSE,
    )
    from .output import ProgressLine, _clock, _float
    from .parser import _parser, insights_word_parsers

__all__ = [
    "main",
    "entry",
    "_parser",
    "insights_word_parsers",
    "NoWarehouse",
    "_guarded",
    "ProgressLine",
    "_clock",
    "_float",
    "EXIT_OK",
    "EXIT_FILES_FAILED",
    "EXIT_USAGE",
    "EXIT_WAREHOUSE",
    "EXIT_NO_NVML",
    "EXIT_NOT_SERVING",
    "EXIT_QUERY",
    "EXIT_NO_MEMORY",
    "EXIT_OUTPUT",
    "EXIT_BUSY",
    "EXIT_INTERRUPTED",
    "EXIT_BROKEN_PIPE",
]

# the module of each name above not imported here
_LAZY = {
    "NoWarehouse": "errors", "_guarded": "errors", "ProgressLine": "output", "_clock": "output",
    "_float": "output", "_parser": "parser", "insights_word_parsers": "parser",
    **{name: "exits" for name in __all__ if name.startswith("EXIT_")},
}  # fmt: skip
_SUBMODULES = frozenset(
    {"args", "db_commands", "errors", "exits", "export", "ingest", "insights", "output", "parser", "query",
     "reading", "sample", "serve", "status", "streams"}
)  # fmt: skip


def __getattr__(name: str) -> Any:
    """The package's other names (``cli.EXIT_OK``, ``cli._parser``, ``cli.query``…), imported on first use."""
    import importlib

    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: list[str] | None = None) -> int:
    from .errors import _guarded
    from .parser import parse

    args = parse(sys.argv[1:] if argv is None else argv)
    return _guarded(_run, args)


def _run(args: argparse.Namespace) -> int:
    from .args import check_text_arguments, check_warehouse_named

    check_text_arguments(args)
    check_warehouse_named(args)
    return int(args.run(args))


def entry() -> None:
    """The console script's ``runlytics``: main()'s exit code, or the one of what stopped the
    command before it could say so itself (Ctrl-C at start-up, a reader of the output gone)."""
    stdout = sys.stdout
    try:
        reserve_standard_fds()
        stdout = sys.stdout
        sys.stdout = checked(stdout)  # its write errors: one line, exit 74 (errors._guarded)
        code = main()
    except BrokenPipeError:
        # the reader stopped reading (`runlytics sql … | head`): no traceback for that
        code = EXIT_BROKEN_PIPE
    except OutputFailed as error:  # --help, --version, argparse's usage (a command's own: _guarded)
        say(f"runlytics: {error}")
        code = EXIT_OUTPUT
    except (KeyboardInterrupt, RuntimeError) as error:
        # Ctrl-C before the command line was read (a command's own: _guarded), in an import at
        # start-up too: one line, and 128 + SIGINT, as a shell reports a command it interrupted
        # (errors._interrupted's test: that module may not be imported yet)
        if not (isinstance(error, KeyboardInterrupt) or str(error) == "Query interrupted"):
            raise
        say("runlytics: interrupted")
        code = EXIT_INTERRUPTED
    finally:
        sys.stdout = stdout
    settle(stdout)
    sys.exit(code)
