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
import csv
import json
import logging
import math
import os
import signal
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO, TypeVar, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from runlytics.ingest import quick, unknown_jobs
from runlytics.ingest.summary import Summary
from runlytics.warehouse import db, migrate, pages, pg_reader, queries, readonly, snapshots
from runlytics.warehouse.lock import IngestLocked

if TYPE_CHECKING:  # the readers import DuckDB: a run with nothing to do never needs it
    import socket

    import duckdb

    from runlytics.ingest.formats.base import Phase

EXIT_OK = 0
EXIT_FILES_FAILED = 1
EXIT_USAGE = 2
EXIT_WAREHOUSE = 3
EXIT_NO_NVML = 3
EXIT_NOT_SERVING = 3  # serve: the server did not start (uvicorn's own exit code for that)
EXIT_QUERY = 4
EXIT_BUSY = 75
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command it interrupted (Ctrl-C)
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a reader that stopped early
ENV_SPOOL = "RUNLYTICS_SPOOL"
LISTED_WARNINGS = 20  # warnings the text summary and status list; --json lists every one kept
ETA_AFTER_SECONDS = 2.0  # a run that has taken this long shows how long it has left
READ_TIMEOUT_SECONDS = readonly.DEFAULT_PG_TIMEOUT_SECONDS  # analytics, insights on PostgreSQL: per statement
EXPORT_TIMEOUT_SECONDS = 7 * 86_400.0  # export on PostgreSQL: in effect none
Number = TypeVar("Number", int, float)


class NoWarehouse(db.WarehouseError):
    """A read command named a warehouse that does not exist (only ingest and db upgrade create one)."""


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


def insights_word_parsers() -> dict[str, argparse.ArgumentParser]:
    """The help of `insights thresholds` and `insights set`: words of `insights`, not subcommands
    (a job may be named `set`: `insights --job set`), so argparse alone would print the list's."""
    thresholds = argparse.ArgumentParser(
        prog="runlytics insights thresholds",
        description="list the insight thresholds in force, NAME and VALUE (docs/insights.md)",
        epilog=_examples(
            "runlytics insights thresholds", "runlytics insights thresholds --json --db /data/runlytics.duckdb"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    set_help = textwrap.fill(
        "change one insight threshold and recompute every job's insights in the same transaction; on a DuckDB "
        "file under the ingest lock, publishing a new snapshot at once (docs/insights.md). The command line has "
        "no reset: set the default from docs/insights.md's table", 100
    )  # fmt: skip
    setter = argparse.ArgumentParser(
        prog="runlytics insights set",
        description=set_help,
        epilog=_examples(
            "runlytics insights set loss_spike.mad_factor 8",
            "runlytics insights set silent_running.min_seconds 3600 --db postgresql://runlytics@db-host/runlytics",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    setter.add_argument("name", metavar="NAME", help="a threshold's name, as `insights thresholds` lists them")
    setter.add_argument(
        "value", metavar="VALUE", help="a finite number, at least 0 (the counts: whole numbers; docs/insights.md)"
    )
    for parser in (thresholds, setter):
        parser.add_argument(
            "--db", help=f"warehouse file or postgresql:// URL (default: ${db.ENV_DB} or ./{db.DEFAULT_DB})"
        )
        parser.add_argument(
            "--wait", type=_wait_seconds, default=db.DEFAULT_WAIT_SECONDS,
            help="seconds to wait for a busy warehouse before giving up (default: %(default)s)",
        )  # fmt: skip
    thresholds.add_argument("--json", action="store_true", help="print them as one JSON object")
    return {"runlytics insights thresholds": thresholds, "runlytics insights set": setter}


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


def version_text() -> str:
    """The version, and whether this install has the C reader of progress histories."""
    import importlib.util

    import runlytics

    built = importlib.util.find_spec("runlytics.ingest._history") is not None
    reader = "built" if built else "not built: every file takes DuckDB's JSON reader"
    return f"runlytics {runlytics.__version__} (C history reader: {reader})"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runlytics",
        description="Training-run analytics warehouse.",
        epilog=_examples("runlytics ingest /data/runs", "runlytics status", 'runlytics sql "FROM job_analytics"'),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=version_text(),
        help="print the version and whether the C reader is built",
    )
    # required: a bare `runlytics` (or `runlytics db`) is argparse's usage and one error line, exit 2
    commands = parser.add_subparsers(title="commands", required=True)

    def add(name: str, help_text: str, examples: list[str], *, url: bool = False) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name, help=help_text, description=help_text, epilog=_examples(*examples),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )  # fmt: skip
        sub.set_defaults(command_name=name)  # "runlytics NAME: …" in its messages
        what = "warehouse file or postgresql:// URL" if url else "warehouse file"
        sub.add_argument("--db", help=f"{what} (default: ${db.ENV_DB} or ./{db.DEFAULT_DB})")
        sub.add_argument(
            "--wait",
            type=_wait_seconds,
            default=db.DEFAULT_WAIT_SECONDS,
            help="seconds to wait for a busy warehouse before giving up (default: %(default)s)",
        )
        return sub

    db_help = "manage the warehouse schema; copy a warehouse into PostgreSQL"
    db_cmd = commands.add_parser(
        "db", help=db_help, description=f"{db_help}: `db upgrade` or `db copy`, each with its own --help",
        epilog=_examples(
            "runlytics db upgrade --db /data/runlytics.duckdb",
            "runlytics db copy --db /data/runlytics.duckdb --to postgresql://runlytics@db-host:5432/runlytics",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    db_sub = db_cmd.add_subparsers(title="db commands", required=True)
    upgrade_help = "build or upgrade the warehouse to the newest schema"
    upgrade = db_sub.add_parser(
        "upgrade", help=upgrade_help,
        description=textwrap.fill(
            f"{upgrade_help} (or to --revision), and, for a DuckDB file, publish a snapshot for readers; never "
            "downgrades. "
            "Other commands upgrade an older warehouse on first use too: this does it ahead of time", 100
        ),
        epilog=_examples(
            "runlytics db upgrade", "runlytics db upgrade --db /data/runlytics.duckdb --wait 600",
            "runlytics db upgrade --db postgresql://runlytics@db-host:5432/runlytics",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    upgrade.add_argument(
        "--db", metavar="PATH_OR_URL",
        help=f"warehouse: a DuckDB file, or a PostgreSQL database as postgresql://user@host:port/dbname "
        f"(default: ${db.ENV_DB} or ./{db.DEFAULT_DB})",
    )  # fmt: skip
    upgrade.add_argument(
        "--revision",
        default="head",
        help="target revision: head or one of the chain's, not older than the warehouse's (default: head)",
    )
    upgrade.add_argument(
        "--wait",
        type=_wait_seconds,
        default=db.DEFAULT_WAIT_SECONDS,
        help="seconds to wait for a running ingest before giving up (default: %(default)s)",
    )
    upgrade.set_defaults(run=_db_upgrade, command_name="db upgrade")
    copy_help = "copy a DuckDB warehouse's tables into an empty PostgreSQL database (docs/postgresql.md)"
    copy = db_sub.add_parser(
        "copy", help=copy_help,
        description=textwrap.fill(
            f"{copy_help}: the tables of its newest snapshot, in one transaction with the target's build (a "
            "failed copy leaves it as it was); the target is built at the newest schema if new, and must hold "
            "no data", 100
        ),
        epilog=_examples(
            "runlytics db copy --to postgresql://runlytics@db-host:5432/runlytics",
            "runlytics db copy --db /data/runlytics.duckdb --to postgresql://runlytics@db-host/runlytics --wait 600",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    copy.add_argument(
        "--to", required=True, metavar="URL",
        help="the PostgreSQL database to fill, postgresql://user@host:port/dbname: built at the newest schema "
        "if new, and holding no data",
    )  # fmt: skip
    copy.add_argument("--db", help=f"the DuckDB warehouse file to copy (default: ${db.ENV_DB} or ./{db.DEFAULT_DB})")
    copy.add_argument(
        "--wait",
        type=_wait_seconds,
        default=db.DEFAULT_WAIT_SECONDS,
        help="seconds to wait for a busy warehouse (either one) before giving up (default: %(default)s)",
    )
    copy.set_defaults(run=_db_copy, command_name="db copy")

    ing = add("ingest", "ingest every job folder under the roots, GPU sample spools and nvidia-smi logs", [
        "runlytics ingest /data/runs",
        "runlytics ingest --quiet --db /data/runlytics.duckdb /data/runs   # from cron",
        "runlytics ingest --every 300 /data/runs   # without cron: a run every 5 minutes until SIGTERM",
        "runlytics ingest --spool /var/spool/runlytics /data/runs",
        "runlytics ingest --nvidia-smi-csv gpu.csv --job-id run-42 --timezone Europe/Berlin",
        "runlytics ingest --spool /var/spool/runlytics --keep-raw-days 7 --archive /data/gpu-archive",
        "runlytics ingest --db postgresql://runlytics@db-host/runlytics --spool /var/spool/runlytics /data/runs",
    ], url=True)  # fmt: skip
    ing.add_argument("roots", nargs="*", type=Path, help="folders holding job folders (or job folders)")
    ing.add_argument("--spool", type=Path, action="append", default=[], help="a GPU sampler spool folder")
    ing.add_argument(
        "--nvidia-smi-csv", type=Path, action="append", default=[], metavar="FILE",
        help="an nvidia-smi --query-gpu CSV log to import (needs --job-id)",
    )  # fmt: skip
    ing.add_argument("--job-id", help="the job the nvidia-smi logs belong to")
    ing.add_argument("--timezone", default="UTC", help="zone of the nvidia-smi timestamps (default: UTC)")
    ing.add_argument("--host", default="", help="host the nvidia-smi logs were written on")
    ing.add_argument("--columns", help="column names of a csv,noheader log, comma-separated")
    ing.add_argument(
        "--max-file-mb",
        type=_positive_mib,
        default=2048,
        metavar="MB",
        help="a file larger than this is not read: it fails, named in the summary (default: %(default)s)",
    )
    ing.add_argument(
        "--every", type=_positive_seconds, metavar="SECONDS",
        help="run again every SECONDS until SIGTERM or SIGINT, which end it between runs (exit code: the last run's)",
    )  # fmt: skip
    ing.add_argument(
        "--keep-raw-days", type=_days, default=30, metavar="N",
        help="raw GPU samples of days more than N days old are dropped, or moved to --archive; "
        "the per-minute rollups stay (0: keep everything; default: %(default)s)",
    )  # fmt: skip
    ing.add_argument(
        "--archive", type=Path, metavar="DIR",
        help="move the raw GPU samples --keep-raw-days drops to DIR/day=YYYY-MM-DD/host=HOST/*.parquet instead",
    )  # fmt: skip
    ing.add_argument(
        "--stage", metavar="PATH",  # a str: Path would make postgresql://x/y postgresql:/x/y in messages
        help="with --db postgresql://…: the local DuckDB warehouse this host ingests into before publishing "
        "to PostgreSQL (default: a file under ${XDG_STATE_HOME:-~/.local/state}/runlytics/ named after the "
        "database and this host; docs/postgresql.md)",
    )  # fmt: skip
    out = ing.add_mutually_exclusive_group()
    out.add_argument("--quiet", action="store_true", help="print nothing unless a file fails")
    out.add_argument("--json", action="store_true", help="print the run's summary as JSON")
    ing.set_defaults(run=_ingest)

    sql = add("sql", "run one read-only SELECT against the newest snapshot of the warehouse", [
        'runlytics sql "FROM job_analytics LIMIT 5"',
        "runlytics sql --format csv \"SELECT job_id, final_loss FROM job_analytics\" > jobs.csv",
        "runlytics sql --allow-read /data/costs \"FROM job_results JOIN '/data/costs/usd.parquet' USING (job_id)\"",
        "runlytics sql --db postgresql://analyst@db-host/runlytics --timeout 60 \"SELECT * FROM job_results LIMIT 5\"",
    ], url=True)  # fmt: skip
    sql.add_argument("query", help='one SELECT (FROM, WITH, DESCRIBE, SHOW, SUMMARIZE too), e.g. "FROM jobs LIMIT 5"')
    sql.add_argument(
        "--format", choices=("table", "csv", "json"),
        help="output format (default: table; on a terminal, DuckDB's own box rendering)",
    )  # fmt: skip
    sql.add_argument(
        "--allow-read", type=_readable_dir, action="append", default=[], metavar="DIR",
        help="let the query read files (Parquet, CSV, JSON) in DIR and below (repeatable; it still writes "
        "nothing), e.g. --allow-read /data/costs \"FROM job_results JOIN '/data/costs/usd.parquet' USING (job_id)\"",
    )  # fmt: skip
    sql.add_argument(
        "--timeout", type=_time_limit, default=readonly.DEFAULT_PG_TIMEOUT_SECONDS, metavar="SECONDS",
        help="on a PostgreSQL warehouse (--db postgresql://…): stop the query after SECONDS (default: %(default)g)",
    )  # fmt: skip
    sql.set_defaults(run=_sql)

    serve = add("serve", "serve the REST API (OpenAPI at /openapi.json, docs at /docs)", [
        "runlytics serve",
        "runlytics serve --host 0.0.0.0 --base-url https://runs.example.com   # with $RUNLYTICS_API_TOKEN set",
        "runlytics serve --db postgresql://api@db-primary/runlytics --read-db postgresql://api@db-replica/runlytics",
    ], url=True)  # fmt: skip
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    serve.add_argument("--port", type=_port, default=8000, help="port, 0 to 65535 (default: %(default)s)")
    serve.add_argument(
        "--allowed-hosts", action="append", metavar="H,H",
        help="the Host names answered, comma-separated (repeatable; '*.example.com' a domain, '*' any); "
        "default: the --host address, localhost and the --base-url host",
    )  # fmt: skip
    serve.add_argument(
        "--base-url", metavar="URL",
        help="what next-page links start with, e.g. https://runs.example.com "
        "(default: http://HOST:PORT; relative links when HOST is every address, 0.0.0.0 or ::)",
    )  # fmt: skip
    serve.add_argument(
        "--read-db", metavar="URL",
        help="with --db postgresql://…: read from this database instead, a replica (postgresql://user@host/dbname)",
    )  # fmt: skip
    serve.add_argument(
        "--read-timeout", type=_time_limit, default=pg_reader.DEFAULT_TIMEOUT_SECONDS, metavar="SECONDS",
        help="the time limit of each read of a request, DuckDB or PostgreSQL (default: %(default)g)",
    )  # fmt: skip
    serve.set_defaults(run=_serve)

    status = add("status", "the warehouse's size, schema, last ingest, the files that keep failing or warn", [
        "runlytics status",
        "runlytics status --json --db /data/runlytics.duckdb",
        "runlytics status --db postgresql://runlytics@db-host/runlytics",
    ], url=True)  # fmt: skip
    status.add_argument("--json", action="store_true", help="print it as JSON")
    status.set_defaults(run=_status)

    show = add("analytics", "print one job's analytics as JSON", [
        "runlytics analytics run-42",
        "runlytics analytics --db postgresql://analyst@db-host/runlytics run-42",
    ], url=True)  # fmt: skip
    show.add_argument("job_id", help='the job\'s id, as `runlytics sql "SELECT job_id FROM jobs"` lists them')
    show.set_defaults(run=_analytics)

    ins = add("insights", "list one job's or the fleet's insights (what went wrong, where); show or set thresholds", [
        "runlytics insights",
        "runlytics insights run-42",
        "runlytics insights --kind loss_spike --severity warning --status running --json",
        "runlytics insights thresholds",
        "runlytics insights set loss_spike.mad_factor 8",
        "runlytics insights --db postgresql://runlytics@db-host/runlytics --severity critical",
    ], url=True)  # fmt: skip
    ins.add_argument(
        "words", nargs="*", metavar="JOB_ID | thresholds | set NAME VALUE",
        help="a job's id (else the fleet's insights, newest jobs first); `thresholds` lists the thresholds in "
        "force; `set NAME VALUE` changes one and recomputes every job's insights",
    )  # fmt: skip
    ins.add_argument(
        "--job", metavar="JOB_ID", help="the job whose insights to list (for a job named 'set' or 'thresholds')"
    )
    ins.add_argument("--kind", help="only insights of this kind (e.g. loss_spike, stall, gpu_throttled)")
    ins.add_argument("--severity", help="only insights of this severity: critical, warning or info")
    ins.add_argument("--status", help="the fleet's list: only jobs with this status (e.g. running)")
    ins.add_argument(
        "--limit", type=int, default=100,
        help=f"the fleet's list: at most this many insights, 1 to {pages.MAX_PAGE} (default: %(default)s)",
    )  # fmt: skip
    ins.add_argument("--json", action="store_true", help="print the API's answer as JSON")
    ins.set_defaults(run=_insights)

    exp = add("export", "export the fact tables and per-job analytics as Parquet (by job) or CSV (docs/export.md)", [
        "runlytics export /data/export",
        "runlytics export --format csv --jobs run-41,run-42 --since 2026-01-01 --overwrite /data/export",
        "runlytics export --db postgresql://analyst@db-host/runlytics --jobs run-42 /data/export",
    ], url=True)  # fmt: skip
    exp.add_argument("out", type=Path, help="folder to write; must not exist or be empty unless --overwrite")
    exp.add_argument(
        "--format", choices=("parquet", "csv"), default="parquet",
        help="parquet: a folder per table, the fact tables partitioned by job_id (Hive style); csv: one file "
        "per table, OUT/<table>.csv (docs/export.md; default: %(default)s)",
    )  # fmt: skip
    exp.add_argument("--jobs", help="only these jobs, comma-separated")
    exp.add_argument(
        "--since", metavar="TIME",
        help="only jobs started at or after TIME: ISO 8601 (UTC unless it has an offset) or Unix seconds (9+ digits)",
    )  # fmt: skip
    exp.add_argument("--overwrite", action="store_true", help="replace an earlier export in OUT")
    exp.add_argument("--quiet", action="store_true", help="print nothing on success")
    exp.set_defaults(run=_export)

    _add_sample(commands)
    return parser


def _add_sample(commands: argparse._SubParsersAction) -> None:
    help_text = "sample the GPUs through NVML into a spool of JSON Lines, until stopped or while CMD runs"
    sample = commands.add_parser(
        "sample",
        help=help_text,
        description=help_text + " (docs/sampler.md)",
        usage="runlytics sample --job-id ID [--gpus 0,1] [--interval S] [--spool DIR] [--spool-max-mb MB] "
        "[--host NAME] [-- CMD ...]",
        epilog=_examples(
            "runlytics sample --job-id run-42 -- python train.py",
            "runlytics sample --job-id run-42 --gpus 0,1 --interval 5 --spool /var/spool/runlytics",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sample.add_argument("--job-id", required=True, type=_job_id, help="the job the samples belong to")
    sample.add_argument(
        "--gpus",
        help="NVML indexes or UUIDs, comma-separated (default: $CUDA_VISIBLE_DEVICES, else the UUIDs"
        " of $NVIDIA_VISIBLE_DEVICES, else every GPU)",
    )
    sample.add_argument(
        "--interval", type=_finite_seconds, default=1.0,
        help="seconds between samples, 0.01 to 86400 (default: %(default)s)",
    )  # fmt: skip
    sample.add_argument(
        "--spool",
        type=Path,
        default=Path(os.environ.get(ENV_SPOOL, "spool")),
        help=f"folder of the spool files (default: ${ENV_SPOOL} or ./spool)",
    )
    sample.add_argument(
        "--spool-max-mb",
        type=_spool_mib,
        default=512,
        help="the oldest spool files are deleted beyond this size; 0: no bound (default: %(default)s)",
    )
    sample.add_argument("--host", help="host name written in the samples (default: this machine's)")
    sample.add_argument("command", nargs=argparse.REMAINDER, help="a command to run and sample while it runs")
    sample.set_defaults(run=_sample, command_name="sample")


def _examples(*lines: str) -> str:
    """The "Examples:" block that ends a command's --help."""
    return "Examples:\n" + "\n".join(f"  {line}" for line in lines)


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"not a number of seconds above 0: {text}")
    return seconds


# a time limit of a read, and --wait: PostgreSQL's statement_timeout and lock_timeout hold at most
# 2^31-1 ms (about 24.8 days)
MAX_LIMIT_SECONDS = 2_000_000
# --max-file-mb, --spool-max-mb: a bound no file or spool comes near (a bigger float reached
# infinity as bytes, and int() of it a traceback)
MAX_MIB = 1 << 20
# --keep-raw-days: a century (a bigger count overflowed Python's dates)
MAX_KEEP_DAYS = 36_500


def _job_id(text: str) -> str:
    """sample --job-id: not empty or blank (ingest skips a sample line naming no job)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is blank: no job is named so")
    return text


def _number(text: str) -> float:
    """``text`` as a float, NaN when it is none (every range test below then fails)."""
    try:
        return float(text)
    except ValueError:
        return math.nan


def _wait_seconds(text: str) -> float:
    """--wait: 0 (don't wait) to MAX_LIMIT_SECONDS, PostgreSQL's lock_timeout at most."""
    seconds = _number(text)
    if not 0 <= seconds < math.inf:
        raise argparse.ArgumentTypeError(f"not a number of seconds, 0 or more: {text}")
    return _at_most(seconds, MAX_LIMIT_SECONDS, "seconds (about 23 days)", text)


def _at_most(number: Number, bound: int, unit: str, text: str) -> Number:
    """``number``, else the usage error of a value above ``bound`` (``unit`` names what it counts)."""
    if number > bound:
        raise argparse.ArgumentTypeError(f"at most {bound} {unit}: {text}")
    return number


def _finite_seconds(text: str) -> float:
    """--interval: a finite number (the sampler says how small it may be)."""
    seconds = _number(text)
    if not math.isfinite(seconds):
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text}")
    return seconds


def _positive_mib(text: str) -> float:
    """--max-file-mb: a size above 0 MiB, finite."""
    mib = _number(text)
    if not 0 < mib < math.inf:
        raise argparse.ArgumentTypeError(f"not a number of MiB above 0: {text}")
    return _at_most(mib, MAX_MIB, "MiB (1 TiB)", text)


def _spool_mib(text: str) -> float:
    """--spool-max-mb: 0 (no bound) or a size in MiB, finite."""
    mib = _number(text)
    if not 0 <= mib < math.inf:
        raise argparse.ArgumentTypeError(f"not a number of MiB, 0 (no bound) or more: {text}")
    return _at_most(mib, MAX_MIB, "MiB (1 TiB)", text)


def _port(text: str) -> int:
    port = _whole(text)
    if port is None or port > 65535:
        raise argparse.ArgumentTypeError(f"not a port number (0 to 65535): {text}")
    return port


def _whole(text: str) -> int | None:
    """``text`` as a whole number (ASCII digits only), else None. Past 18 digits it is 10**18, above
    every bound here: int() refuses a text of over 4,300 digits."""
    if not (text.isascii() and text.isdigit()):
        return None
    digits = text.lstrip("0") or "0"
    return int(digits) if len(digits) <= 18 else 10**18


def _time_limit(text: str) -> float:
    return _at_most(_positive_seconds(text), MAX_LIMIT_SECONDS, "seconds (about 23 days)", text)


def _days(text: str) -> int:
    days = _whole(text)
    if days is None:
        raise argparse.ArgumentTypeError(f"not a whole number of days (0 or more): {text}")
    return _at_most(days, MAX_KEEP_DAYS, "days (100 years; 0 keeps everything)", text)


def _existing_warehouse(args: argparse.Namespace) -> Path:
    """The warehouse a read command names; NoWarehouse when there is none (a read creates nothing)."""
    path = db.resolve_path(args.db)
    if not path.exists():
        raise NoWarehouse(
            f"no warehouse at {path}: create it with `runlytics ingest ROOT` (or `runlytics db upgrade`), "
            f"or name another with --db or ${db.ENV_DB}"
        )
    return path


def _db_upgrade(args: argparse.Namespace) -> int:
    target = db.resolve_target(args.db)
    try:
        revision = migrate.upgrade(target, args.revision, wait=args.wait)
    except migrate.BadRevision as error:
        print(f"runlytics db upgrade: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{target}: schema at revision {revision}")
    return EXIT_OK


def _db_copy(args: argparse.Namespace) -> int:
    from runlytics.warehouse import pg_copy

    if not db.is_postgres_url(args.to):
        print(f"runlytics db copy: --to takes a postgresql://user@host/dbname URL, not {args.to!r}", file=sys.stderr)
        return EXIT_USAGE
    target = db.PostgresUrl(args.to)
    path = _existing_warehouse(args)
    result = pg_copy.copy(path, target, wait=args.wait, on_progress=CopyProgress(sys.stderr))
    for job_id in result.unpublishable:
        print(f"runlytics db copy: warning: {_nul_job(job_id)}: not copied", file=sys.stderr)
    total = sum(result.rows.values())
    print(
        f"{target}: copied {total:,} row{'' if total == 1 else 's'} of {len(result.rows)} tables from {path} "
        f"in {result.seconds:.1f} s (schema at revision {result.revision})"
    )
    return EXIT_OK


class CopyProgress:
    """``db copy``'s progress on stderr: a line per table copied; on a terminal, also its rows as
    they go ("copying gpu_samples: 120,000/2,000,000 rows")."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.live = stream.isatty()

    def __call__(self, table: str, done: int, total: int) -> None:
        back, clear = ("\r", "\x1b[K") if self.live else ("", "")
        if done >= total:
            self.stream.write(f"{back}copied {table}: {done:,} row{'' if done == 1 else 's'}{clear}\n")
        elif self.live:
            self.stream.write(f"\rcopying {table}: {done:,}/{total:,} rows{clear}")
        self.stream.flush()


def _ingest(args: argparse.Namespace) -> int:
    problem = _ingest_usage_problem(args)
    if problem:
        print(f"runlytics ingest: {problem}", file=sys.stderr)
        return EXIT_USAGE
    db.resolve_target(args.db)  # a --db no run could use: said once, not at every run of --every
    if args.stage is not None:
        if db.is_postgres_url(args.stage):  # refused as --stage md:x is (exit 3), named as typed
            raise db.WarehouseError(
                f"--stage {args.stage!r} is a URL, not a DuckDB file's path: the stage is the local DuckDB file "
                "a run ingests into before publishing to the database of --db postgresql://…"
            )
        args.stage = db.local_path(args.stage, "--stage")
    if args.every is None:
        return _ingest_once(args)
    return _repeat(args.every, lambda: _guarded(_ingest_once, args))


def _ingest_usage_problem(args: argparse.Namespace) -> str | None:
    if not (args.roots or args.spool or args.nvidia_smi_csv):
        return "name job roots, --spool folders or --nvidia-smi-csv files"
    if args.nvidia_smi_csv and not args.job_id:
        return "--nvidia-smi-csv needs --job-id (the job the log belongs to)"
    if args.nvidia_smi_csv and not args.job_id.strip():
        return f"--job-id {args.job_id!r} is blank: no job is named so (name the job the log belongs to)"
    try:
        ZoneInfo(args.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown --timezone {args.timezone!r} (an IANA name like Europe/Berlin)"
    return None


def _repeat(seconds: float, run: Callable[[], int]) -> int:
    """``run()`` every ``seconds`` (start to start) until SIGTERM or SIGINT; the last run's exit code.

    A signal never cuts a run: it ends the loop once the current run has finished.
    """
    stopping: list[int] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            began = time.monotonic()
            code = run()
            sys.stdout.flush()
            # a root that is gone, say: running again would not help; a run interrupted: no more
            if code in (EXIT_USAGE, EXIT_INTERRUPTED):
                return code
            while not stopping and (left := seconds - (time.monotonic() - began)) > 0:
                time.sleep(min(left, 0.1))
            if stopping:
                return code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _ingest_once(args: argparse.Namespace) -> int:
    target = db.resolve_target(args.db)
    if isinstance(target, db.PostgresUrl):
        return _ingest_postgres(args, target)
    if args.stage is not None:
        print("runlytics ingest: --stage goes with --db postgresql://…", file=sys.stderr)
        return EXIT_USAGE
    path = target
    if not (args.spool or args.nvidia_smi_csv) and (summary := quick.nothing_to_do(path, args.roots)):
        return _ingest_report(args, path, summary)
    db.make_folder(path)
    from runlytics.ingest.pipeline import CsvImport, ingest  # DuckDB, the C reader, pyarrow: only for real work

    columns = tuple(c.strip() for c in args.columns.split(",")) if args.columns else None
    csv_imports = [CsvImport(p, args.job_id, args.timezone, args.host, columns) for p in args.nvidia_smi_csv]
    interactive = sys.stderr.isatty() and not (args.quiet or args.json)
    summary = ingest(
        path, args.roots, spools=args.spool, csv_imports=csv_imports, wait=args.wait,
        on_progress=ProgressLine(sys.stderr) if interactive else None, max_file_mb=args.max_file_mb,
        keep_raw_days=args.keep_raw_days, archive=args.archive,
    )  # fmt: skip
    if interactive:
        print(file=sys.stderr)
    return _ingest_report(args, path, summary)


def _ingest_postgres(args: argparse.Namespace, target: db.PostgresUrl) -> int:
    """Ingest into the stage, then publish to PostgreSQL (ingest/postgres.py); the stage's summary,
    a line on what was published, and a warning per job another ingester owns."""
    from runlytics.ingest import postgres as pg_ingest
    from runlytics.ingest.pipeline import CsvImport

    columns = tuple(c.strip() for c in args.columns.split(",")) if args.columns else None
    csv_imports = [CsvImport(p, args.job_id, args.timezone, args.host, columns) for p in args.nvidia_smi_csv]
    interactive = sys.stderr.isatty() and not (args.quiet or args.json)
    stage = args.stage or pg_ingest.default_stage(target)
    summary, published = pg_ingest.ingest(
        target, args.roots, stage=stage, wait=args.wait, spools=args.spool, csv_imports=csv_imports,
        on_progress=ProgressLine(sys.stderr) if interactive else None, max_file_mb=args.max_file_mb,
        keep_raw_days=args.keep_raw_days, archive=args.archive,
    )  # fmt: skip
    if interactive:
        print(file=sys.stderr)
    for job_id, owner in sorted(published.conflicts.items()):
        print(f"runlytics ingest: warning: job {job_id} is owned by ingester {owner} on {target}: not published "
              "from this one", file=sys.stderr)  # fmt: skip
    for job_id in published.unpublishable:
        print(f"runlytics ingest: warning: {_nul_job(job_id)}: not published", file=sys.stderr)
    if published.order_differs:
        print(f"runlytics ingest: warning: {target} orders text unlike DuckDB (its collation is not C): answers "
              "sorted by name differ; create it with TEMPLATE template0 LOCALE 'C.UTF-8' (docs/postgresql.md)",
              file=sys.stderr)  # fmt: skip
    code = _ingest_report(args, stage, summary, published.as_dict() if args.json else None)
    if not (args.quiet or args.json):
        print(
            f"{target}: published {_plural(published.jobs, 'job')} whole, the insights of "
            f"{published.insights_only} running, {_plural(published.runs, 'run')} in {published.seconds:.2f} s"
        )
    return code


def _nul_job(job_id: str) -> str:
    """A job whose id PostgreSQL's text cannot hold, named as Python writes it (NUL shown as \\x00)."""
    return f"job {job_id!r} has a NUL character in its id, which PostgreSQL cannot hold"


def _ingest_report(
    args: argparse.Namespace, path: Path, summary: Summary, published: dict[str, Any] | None = None
) -> int:
    if args.json:
        report = summary.as_dict(warning_list=True)
        if published is not None:
            report["published"] = published
        print(json.dumps(report, indent=2))
    elif not args.quiet or summary.failed:
        _print_summary(path, summary, verbose=not args.quiet)
    return EXIT_FILES_FAILED if summary.failed else EXIT_OK


class ProgressLine:
    """Draws an ingest run's progress on one terminal line: "read [###...] 12/40 files, ETA 0:12"."""

    WIDTH = 30

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.began = time.monotonic()

    def __call__(self, phase: Phase, done: int, total: int) -> None:
        filled = self.WIDTH * done // max(total, 1)
        count = "" if phase == "publish" else f" {done}/{total} files"
        elapsed = time.monotonic() - self.began
        eta = (
            f", ETA {_clock(elapsed * (total - done) / done)}"
            if 0 < done < total and elapsed >= ETA_AFTER_SECONDS
            else ""
        )
        # \x1b[K clears what a longer line before this one left
        self.stream.write(f"\r{phase:<8} [{'#' * filled}{'.' * (self.WIDTH - filled)}]{count}{eta}\x1b[K")
        self.stream.flush()


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes}:{secs:02d}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _points(n: int) -> str:
    """The metric points of trainers' own logs read, when any (they are not step rows)."""
    return f"{_plural(n, 'metric point')}, " if n else ""


def _print_summary(path: Path, s: Summary, verbose: bool) -> None:
    print(
        f"{path}: {s.files_seen} files seen, {s.ingested} ingested, {s.unchanged} unchanged, "
        f"{s.pending} left for the next run, {s.failed} failed; {_plural(s.rows, 'step row')}, "
        f"{_points(s.points)}{_plural(s.gpu_samples, 'GPU sample')}, {_plural(s.warnings, 'warning')}, "
        f"{s.seconds:.2f} s"
    )
    for problem in s.problems:
        if verbose or problem["outcome"] == "failed":
            print(f"  {problem['outcome']}: {problem['path']}: {problem['reason']}")
    for job_id in s.unknown_jobs:  # shown even when not verbose: a mistyped --job-id must show
        print(f"  warning: {unknown_jobs.message(job_id)}")
    if verbose and s.listed_warnings:
        print("warnings:")
        for file, message in s.listed_warnings[:LISTED_WARNINGS]:
            print(f"  {file}: {message}")
        if s.warnings > LISTED_WARNINGS:
            print(f"  … and {s.warnings - LISTED_WARNINGS} more (--json for all)")


def _readable_dir(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"not a folder: {text}")
    return path


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


def _write_rows(columns: list[str], rows: list[tuple[Any, ...]], fmt: str) -> None:
    if fmt == "json":
        records = [{c: queries.plain(v) for c, v in zip(columns, row, strict=True)} for row in rows]
        print(json.dumps(records, indent=2, default=str, allow_nan=False))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
    else:
        cells = [[_cell(v) for v in row] for row in rows]
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
        print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
        print("  ".join("-" * w for w in widths))
        for r in cells:
            print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
        print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return _float(value)
    return str(value)


def _float(value: float) -> str:
    """A double in full: a whole one below 2**53 as its digits (``1645323``, ``90``), any other as
    Python's shortest text that reads back as the same double (``26.666666666666668``, ``1e+300``,
    ``nan``, ``inf``); never rounded to fewer digits (docs/views.md)."""
    if value.is_integer() and abs(value) < 2**53:
        return f"{value:.0f}"
    return repr(value)


@contextmanager
def _reading(
    args: argparse.Namespace, timeout: float = READ_TIMEOUT_SECONDS
) -> Iterator[tuple[duckdb.DuckDBPyConnection, str]]:
    """A read command's warehouse and its name for messages: the newest snapshot of a DuckDB file
    (brought to this runlytics' schema first), or a PostgreSQL database at this runlytics'
    revision read in one READ ONLY transaction (warehouse/pg_reader.py: the API's cursor, whose
    calls the readers make as on DuckDB), each statement stopped after ``timeout`` seconds."""
    target = db.resolve_target(args.db)
    con: duckdb.DuckDBPyConnection
    if isinstance(target, db.PostgresUrl):
        con, name = _pg_cursor(target, timeout), str(target)
    else:
        path = _existing_warehouse(args)
        migrate.ensure_current(path, wait=args.wait)
        con, name = snapshots.connect_latest(path, wait=args.wait), str(path)
    try:
        yield con, name
    finally:
        con.close()


def _pg_cursor(target: db.PostgresUrl, timeout: float = pg_reader.DEFAULT_TIMEOUT_SECONDS) -> duckdb.DuckDBPyConnection:
    """A read-only cursor on ``target`` (typed as the DuckDB connection whose calls it answers);
    WarehouseError when the database is at another revision than this runlytics'."""
    con = cast("duckdb.DuckDBPyConnection", pg_reader.Cursor(pg_reader.connect(target, timeout)))
    try:
        revision = migrate.current_revision(con)
        if revision != migrate.HEAD_REVISION:
            raise db.WarehouseError(
                f"{target}: schema at revision {revision}, this runlytics reads {migrate.HEAD_REVISION}: "
                "run `runlytics db upgrade --db URL`"
            )
    except BaseException:
        con.close()
        raise
    return con


def _analytics(args: argparse.Namespace) -> int:
    with _reading(args) as (con, name):
        result = queries.job_analytics(con, args.job_id)
    if result is None:
        print(f"runlytics analytics: no job {args.job_id!r} in {name}", file=sys.stderr)
        return EXIT_QUERY
    print(json.dumps(result, indent=2))
    return EXIT_OK


def _insights(args: argparse.Namespace) -> int:
    from runlytics.warehouse import insight_list
    from runlytics.warehouse.fleet import Filters
    from runlytics.warehouse.views import STATUSES

    words = list(args.words)
    if words[:1] == ["set"] and args.job is None:
        args.command_name = "insights set"  # its messages, the lock's and the warehouse's too
        return _insights_set(args, words[1:])
    if words == ["thresholds"] and args.job is None:
        args.command_name = "insights thresholds"
        return _insights_thresholds(args)
    if len(words) > 1 or (words and args.job is not None):
        print("runlytics insights: name one job (JOB_ID or --job), `thresholds`, or `set NAME VALUE`", file=sys.stderr)
        return EXIT_USAGE
    job_id = args.job if args.job is not None else (words[0] if words else None)
    try:
        insight_list.checked(args.kind, args.severity)
    except insight_list.UnknownFilter as error:
        print(f"runlytics insights: {error}", file=sys.stderr)
        return EXIT_USAGE
    if args.status is not None and args.status not in (*STATUSES, "unknown"):
        print(
            f"runlytics insights: unknown status {args.status!r}; known: {', '.join(STATUSES)}, unknown",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if not 1 <= args.limit <= pages.MAX_PAGE:  # the API's page: a limit past BIGINT was a traceback
        print(f"runlytics insights: --limit must be at least 1 and at most {pages.MAX_PAGE}", file=sys.stderr)
        return EXIT_USAGE
    with _reading(args) as (con, name):
        if job_id is not None:
            if not queries.job_exists(con, job_id):
                print(f"runlytics insights: no job {job_id!r} in {name}", file=sys.stderr)
                return EXIT_QUERY
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
    from runlytics.warehouse.lock import run_lock

    if len(words) != 2:
        print("runlytics insights set: give NAME VALUE, e.g. `set loss_spike.mad_factor 8`", file=sys.stderr)
        return EXIT_USAGE
    name, text = words
    try:
        number: float | None = float(text)
    except ValueError:
        number = None
    try:
        value = insights.check_threshold(name, math.nan if number is None else number)
    except insights.UnknownThreshold as error:
        print(f"runlytics insights set: {error}", file=sys.stderr)
        return EXIT_USAGE
    except insights.BadThreshold as error:
        reason = error if number is not None else f"{name} must be a number, not {text!r}"
        print(f"runlytics insights set: {reason}", file=sys.stderr)
        return EXIT_USAGE
    target = db.resolve_target(args.db)
    if isinstance(target, db.PostgresUrl):
        from runlytics.warehouse import pg_thresholds

        pg_thresholds.set_threshold(target, name, value, migrate.HEAD_REVISION, args.wait)
        print(f"{target}: {name} = {_float(value)}; insights recomputed")
        return EXIT_OK
    path = _existing_warehouse(args)
    db.check_file(path)  # a file that is no warehouse: refused before its lock file is created beside it
    with run_lock(path, wait=args.wait):
        snapshots.check_folder(path)  # a publish that can't happen: refused before the commit
        migrate.ensure_current(path, wait=args.wait, locked=True, mark=True)
        with db.connection(path, wait=args.wait) as con:
            # checked, and about to commit: a kill between the commit and the copy, the next run publishes
            snapshots.mark_unpublished(path)
            insights.set_threshold(con, name, value)
            con.execute("CHECKPOINT")
        snapshots.publish(path)
    print(f"{path}: {name} = {_float(value)}; insights recomputed")
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    import duckdb

    from runlytics.warehouse import export, job_lists, times
    from runlytics.warehouse.fleet import UnknownJobs

    if args.jobs is not None and not job_lists.names_any(args.jobs):
        print("runlytics export: --jobs names no job", file=sys.stderr)
        return EXIT_USAGE
    try:
        # read as the API reads since/until: the same text, the same instant
        since = times.instant(args.since) if args.since is not None else None
    except times.BadTime as error:
        print(f"runlytics export: --since {error}", file=sys.stderr)
        return EXIT_USAGE
    # an export's reads of PostgreSQL are whole tables of many jobs: no per-read time limit there
    with _reading(args, timeout=EXPORT_TIMEOUT_SECONDS) as (con, name):
        try:
            # ids may hold commas (warehouse/job_lists.py): resolved against the warehouse's jobs
            jobs = tuple(job_lists.resolve(con, [args.jobs])) if args.jobs is not None else None
            result = export.export(con, args.out, args.format, export.Selection(jobs, since), overwrite=args.overwrite)
        except export.ExportError as error:
            print(f"runlytics export: {error}", file=sys.stderr)
            return EXIT_USAGE
        except UnknownJobs as error:
            _print_export_notes(error)
            print(f"runlytics export: no job(s) {', '.join(map(repr, error.job_ids))} in {name}", file=sys.stderr)
            return EXIT_QUERY
        except (duckdb.Error, OSError) as error:
            _print_export_notes(error)
            why = str(error).splitlines()[0] if str(error) else type(error).__name__
            print(f"runlytics export: failed, nothing written to {args.out}: {why}", file=sys.stderr)
            return EXIT_QUERY
    for note in result.notes:  # a layout the reader should know of, an earlier export restored
        print(f"runlytics export: {note}", file=sys.stderr)
    if not args.quiet:
        rows = ", ".join(f"{table} {n:,}" for table, n in result.rows.items())
        print(f"{result.out}: {result.fmt} export of {result.jobs} jobs in {result.seconds:.2f} s; rows: {rows}")
    return EXIT_OK


def _print_export_notes(error: BaseException) -> None:
    """What the export did before it failed (an earlier export restored to OUT): export.export's notes."""
    for note in getattr(error, "__notes__", ()):
        print(f"runlytics export: {note}", file=sys.stderr)


def _status(args: argparse.Namespace) -> int:
    target = db.resolve_target(args.db)
    report = _status_postgres(target) if isinstance(target, db.PostgresUrl) else _status_duckdb(args)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        _print_status(report)
    return EXIT_OK


def _status_duckdb(args: argparse.Namespace) -> dict[str, Any]:
    from runlytics.ingest import journal
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
            "last_ingest": journal.read_heartbeat(path),
            "recent_runs": ingest_status.runs_page(con, 5, None)[0],
            "problem_files": ingest_status.problem_files(con),
            "warning_files": ingest_status.warning_files(con),
        }
    finally:
        con.close()
    return report


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
            "recent_runs": ingest_status.runs_page(con, 5, None)[0],
            "problem_files": ingest_status.problem_files(con),
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
        print(
            f"last ingest {last['ended_at']}: {last['outcome']}; {s.get('ingested')} ingested, "
            f"{s.get('unchanged')} unchanged, {s.get('failed')} failed, {s.get('rows')} step rows, "
            f"{_points(s.get('points') or 0)}{s.get('gpu_samples', 0)} GPU samples, "
            f"{_plural(s.get('warnings') or 0, 'warning')}, {s.get('seconds')} s"
        )
        print(f"last success {last.get('last_success_at')}")
        if last.get("error"):
            print(f"  error: {last['error']}")
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


def _serve(args: argparse.Namespace) -> int:
    from urllib.parse import urlsplit

    from runlytics.api import listen, metrics, security
    from runlytics.api.app import TOKEN_ENV, create_app

    if problem := metrics.stale_after_problem():  # refused, not read as the default (or as off)
        print(f"runlytics serve: {problem}", file=sys.stderr)
        return EXIT_USAGE
    target = db.resolve_target(args.db)
    read_db = None
    if args.read_db is not None:
        if not (isinstance(target, db.PostgresUrl) and db.is_postgres_url(args.read_db)):
            print("runlytics serve: --read-db takes a postgresql:// URL, with --db postgresql://…", file=sys.stderr)
            return EXIT_USAGE
        read_db = db.PostgresUrl(args.read_db)
    path = target if isinstance(target, db.PostgresUrl) else _existing_warehouse(args)
    try:
        base_url = security.checked_base_url(args.base_url) if args.base_url else None
        base_url = base_url or security.default_base_url(args.host, args.port)
        hosts = [h.strip() for given in args.allowed_hosts or [] for h in given.split(",") if h.strip()]
        hosts = hosts or security.default_hosts(args.host, urlsplit(base_url).hostname if base_url else None)
        app = create_app(  # an empty token: ValueError
            path, allowed_hosts=hosts, base_url=base_url, read_db=read_db, read_timeout=args.read_timeout
        )
    except ValueError as error:
        print(f"runlytics serve: {error}", file=sys.stderr)
        return EXIT_USAGE
    if isinstance(path, Path):
        migrate.ensure_current(path, wait=args.wait)
    else:
        _status_postgres(read_db or path)  # reachable, at this code's revision: else a one-line error
    try:
        sockets = listen.bound_sockets(args.host, args.port)
    except listen.CannotListen as error:
        print(f"runlytics serve: {error}", file=sys.stderr)
        return EXIT_USAGE
    if app.state.token is None and not security.is_loopback(args.host):
        print(
            f"runlytics serve: warning: listening on {args.host} without {TOKEN_ENV}: "
            "anyone who can reach this port can read the warehouse",
            file=sys.stderr,
        )
    return _run_server(app, args, sockets)


def _run_server(app: Any, args: argparse.Namespace, sockets: list[socket.socket]) -> int:
    """uvicorn on the sockets bound for it, until stopped; exit 3 when it did not start, as
    uvicorn.run exits."""
    import uvicorn

    from runlytics.api import listen

    server = listen.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="info"))
    try:
        server.run(sockets=sockets)
    except KeyboardInterrupt:  # uvicorn raises Ctrl-C again once it has stopped; uvicorn.run ignores it too
        pass
    finally:
        for sock in sockets:
            sock.close()
    return EXIT_OK if server.started else EXIT_NOT_SERVING


def _sample(args: argparse.Namespace) -> int:
    from runlytics.sampler import loop as sampler

    if not logging.getLogger().handlers:
        logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="runlytics sample: %(message)s")
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    options = sampler.Options(
        job_id=args.job_id,
        spool=args.spool,
        interval=args.interval,
        gpus=args.gpus,
        spool_max_bytes=int(args.spool_max_mb * 2**20) if args.spool_max_mb > 0 else None,
        command=command,
    )
    if args.host:
        options.host = args.host
    try:
        return sampler.run(options)
    except sampler.NvmlUnavailable as error:
        print(f"runlytics sample: {error}", file=sys.stderr)
        return EXIT_NO_NVML
    except sampler.SamplerError as error:
        print(f"runlytics sample: {error}", file=sys.stderr)
        return EXIT_USAGE


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
