"""The ``runlytics`` command.

Exit codes (also in the README):
  0   success (files left for the next run because they were being written count as success)
  1   ingest: at least one file could not be ingested (see the summary; the rest was ingested)
  2   usage error (a number out of range, a file root no job is found by, a --revision unknown
      or older than the warehouse's, a command group without its command, …); ``serve``: a
      --host and --port it can't listen on (in use, not this machine's, not resolvable)
  3   the warehouse can't be used (written by a newer runlytics, unreadable, not a DuckDB file,
      its snapshots folder not one this user may list (a writer: write in), in a folder a
      writer can't write, a --db naming another URL such as md: or s3://, …), or a read
      command (sql, analytics, insights, status, export, serve) names one that does not exist;
      ``db copy``: the target holds data, is at another revision or can't be reached;
      ``sample``: NVML can't be used (no NVIDIA driver)
  4   ``sql``: the query failed, or was refused (anything but one read-only SELECT);
      ``analytics``, ``insights``: no such job; ``export``: an unknown job, or the export could not be written
  75  the warehouse or the ingest lock stayed busy longer than --wait (try again later)
  130 interrupted (Ctrl-C): "runlytics COMMAND: interrupted"
  141 the reader of the output stopped early (`runlytics sql … | head`)
Every error is one line on stderr, "runlytics COMMAND: …".
``sample -- CMD`` exits with CMD's exit code (128 + N when a signal N ended it; 127 when CMD
can't be found, 126 when it can't be run).
"""

from __future__ import annotations

import argparse
import os
import sys

from .errors import NoWarehouse, _guarded, _interrupted, _say
from .exits import (
    EXIT_BROKEN_PIPE,
    EXIT_BUSY,
    EXIT_FILES_FAILED,
    EXIT_INTERRUPTED,
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
    "EXIT_BUSY",
    "EXIT_INTERRUPTED",
    "EXIT_BROKEN_PIPE",
]


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    words = sys.argv[1:] if argv is None else argv
    if words[:1] == ["insights"] and {"-h", "--help"} & set(words):
        # `insights set --help`, `insights thresholds --help`: their own help, not the list's
        for name, sub in insights_word_parsers().items():
            if words[1:2] == [name.split()[-1]]:
                sub.parse_args(["--help"])  # prints it and exits 0, as argparse's --help does
    args = parser.parse_args(argv)
    return _guarded(args.run, args)


def entry() -> None:
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # the reader stopped reading (`runlytics sql … | head`): no traceback for that
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_BROKEN_PIPE)
    except (KeyboardInterrupt, RuntimeError) as error:
        # Ctrl-C before the command line was read (a command's own: _guarded): one line, and
        # 128 + SIGINT, as a shell reports a command it interrupted
        if not _interrupted(error):
            raise
        _say(argparse.Namespace(), "interrupted")
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(code)
