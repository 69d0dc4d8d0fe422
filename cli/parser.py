"""The command line: the argparse tree of every command, its help and examples."""

from __future__ import annotations

import argparse
import os
import re
import sys
import textwrap

from runlytics.warehouse import db, pages, pg_reader, readonly

# each handler is read off its module as main() builds the tree: a test patches it where it lives
from . import db_commands, export, ingest, insights, query, sample, serve, status
from .args import (
    _days,
    _finite_seconds,
    _job_id,
    _listen_host,
    _path,
    _port,
    _positive_mib,
    _readable_dir,
    _spool_mib,
    _time_limit,
    _wait_seconds,
)

ENV_SPOOL = "RUNLYTICS_SPOOL"
NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")  # argparse's own test of a word that is a value


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line read: a command's arguments, or argparse's --help, --version or usage
    error (it exits, 0 or 2, once what it printed is written: a failure is OutputFailed, exit 74)."""
    try:
        return _parse(argv)
    except SystemExit:
        sys.stdout.flush()  # argparse itself drops the errors of its writes
        raise


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = _parser()
    if argv[:1] == ["insights"] and {"-h", "--help"} & set(argv):
        # `insights set --help`, `insights thresholds --help`: their own help, not the list's
        for name, sub in insights_word_parsers().items():
            if argv[1:2] == [name.split()[-1]]:
                sub.parse_args(["--help"])  # prints it and exits 0, as argparse's --help does
    args, extra = parser.parse_known_args(argv)
    if extra and getattr(args, "command_name", None) == "insights" and not any(map(_option_like, extra)):
        # `insights set --db W NAME VALUE`: argparse takes the words of `insights` (nargs="*")
        # only where they start, and leaves those after an option over
        args.words += extra
    elif extra:
        # argparse's own parse_args says so with the top-level usage: the command's, as its other errors
        command = _command_parser(parser, getattr(args, "command_name", ""))
        command.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _command_parser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The parser of the command ``name`` ("ingest", "db upgrade"); ``parser`` for none."""
    for word in name.split():
        subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = subparsers.choices[word]
    return parser


def _option_like(word: str) -> bool:
    """Whether argparse reads ``word`` as an option: a dash and more, not a negative number."""
    return word.startswith("-") and word != "-" and not NEGATIVE_NUMBER.match(word)


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
    # in the order --help lists them
    for add in (
        _add_db, _add_ingest, _add_sql, _add_serve, _add_status, _add_analytics, _add_insights, _add_export,
        _add_sample,
    ):  # fmt: skip
        add(commands)
    return parser


def _add_command(
    commands: argparse._SubParsersAction, name: str, help_text: str, examples: list[str]
) -> argparse.ArgumentParser:
    """A command with the options every reader and writer of a warehouse takes: --db and --wait."""
    sub = commands.add_parser(
        name, help=help_text, description=help_text, epilog=_examples(*examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    sub.set_defaults(command_name=name)  # "runlytics NAME: …" in its messages
    sub.add_argument("--db", help=f"warehouse file or postgresql:// URL (default: ${db.ENV_DB} or ./{db.DEFAULT_DB})")
    sub.add_argument(
        "--wait",
        type=_wait_seconds,
        default=db.DEFAULT_WAIT_SECONDS,
        help="seconds to wait for a busy warehouse before giving up (default: %(default)s)",
    )
    return sub


def _add_db(commands: argparse._SubParsersAction) -> None:
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
    _add_db_upgrade(db_sub)
    _add_db_copy(db_sub)


def _add_db_upgrade(db_sub: argparse._SubParsersAction) -> None:
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
    upgrade.set_defaults(run=db_commands.run_db_upgrade, command_name="db upgrade")


def _add_db_copy(db_sub: argparse._SubParsersAction) -> None:
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
    copy.set_defaults(run=db_commands.run_db_copy, command_name="db copy")


def _add_ingest(commands: argparse._SubParsersAction) -> None:
    help_text = "ingest every job folder under the roots, GPU sample spools and nvidia-smi logs"
    cmd = _add_command(commands, "ingest", help_text, [
        "runlytics ingest /data/runs",
        "runlytics ingest --quiet --db /data/runlytics.duckdb /data/runs   # from cron",
        "runlytics ingest --every 300 /data/runs   # without cron: a run every 5 minutes until SIGTERM",
        "runlytics ingest --spool /var/spool/runlytics /data/runs",
        "runlytics ingest --nvidia-smi-csv gpu.csv --job-id run-42 --timezone Europe/Berlin",
        "runlytics ingest --spool /var/spool/runlytics --keep-raw-days 7 --archive /data/gpu-archive",
        "runlytics ingest --db postgresql://runlytics@db-host/runlytics --spool /var/spool/runlytics /data/runs",
    ])  # fmt: skip
    cmd.add_argument("roots", nargs="*", type=_path, help="folders holding job folders (or job folders)")
    cmd.add_argument("--spool", type=_path, action="append", default=[], help="a GPU sampler spool folder")
    cmd.add_argument(
        "--nvidia-smi-csv", type=_path, action="append", default=[], metavar="FILE",
        help="an nvidia-smi --query-gpu CSV log to import (needs --job-id)",
    )  # fmt: skip
    cmd.add_argument("--job-id", help="the job the nvidia-smi logs belong to")
    # defaults: ingest.CSV_OPTIONS (None here: an option given without --nvidia-smi-csv is refused)
    cmd.add_argument("--timezone", help="zone of the nvidia-smi timestamps (default: UTC)")
    cmd.add_argument("--host", help="host the nvidia-smi logs were written on")
    cmd.add_argument("--columns", help="column names of a csv,noheader log, comma-separated")
    cmd.add_argument(
        "--max-file-mb",
        type=_positive_mib,
        default=2048,
        metavar="MB",
        help="a file larger than this is not read: it fails, named in the summary (default: %(default)s)",
    )
    cmd.add_argument(
        "--every", type=_time_limit, metavar="SECONDS",
        help="run again every SECONDS (at most 2000000) until SIGTERM or SIGINT, which end it between runs "
        "(exit code: the last run's)",
    )  # fmt: skip
    cmd.add_argument(
        "--keep-raw-days", type=_days, default=30, metavar="N",
        help="raw GPU samples of days more than N days old are dropped, or moved to --archive; "
        "the per-minute rollups stay (0: keep everything; default: %(default)s)",
    )  # fmt: skip
    cmd.add_argument(
        "--archive", type=_path, metavar="DIR",
        help="move the raw GPU samples --keep-raw-days drops to DIR/day=YYYY-MM-DD/host=HOST/*.parquet instead",
    )  # fmt: skip
    cmd.add_argument(
        "--stage", metavar="PATH",  # a str: Path would make postgresql://x/y postgresql:/x/y in messages
        help="with --db postgresql://…: the local DuckDB warehouse this host ingests into before publishing "
        "to PostgreSQL (default: a file under ${XDG_STATE_HOME:-~/.local/state}/runlytics/ named after the "
        "database and this host; docs/postgresql.md)",
    )  # fmt: skip
    out = cmd.add_mutually_exclusive_group()
    out.add_argument("--quiet", action="store_true", help="print nothing unless a file fails")
    out.add_argument("--json", action="store_true", help="print the run's summary as JSON")
    cmd.set_defaults(run=ingest.run_ingest)


def _add_sql(commands: argparse._SubParsersAction) -> None:
    help_text = "run one read-only SELECT against the newest snapshot of the warehouse"
    cmd = _add_command(commands, "sql", help_text, [
        'runlytics sql "FROM job_analytics LIMIT 5"',
        "runlytics sql --format csv \"SELECT job_id, final_loss FROM job_analytics\" > jobs.csv",
        "runlytics sql --allow-read /data/costs \"FROM job_results JOIN '/data/costs/usd.parquet' USING (job_id)\"",
        "runlytics sql --db postgresql://analyst@db-host/runlytics --timeout 60 \"SELECT * FROM job_results LIMIT 5\"",
    ])  # fmt: skip
    cmd.add_argument("query", help='one SELECT (FROM, WITH, DESCRIBE, SHOW, SUMMARIZE too), e.g. "FROM jobs LIMIT 5"')
    cmd.add_argument(
        "--format", choices=("table", "csv", "json"),
        help="output format (default: table; on a terminal, DuckDB's own box rendering)",
    )  # fmt: skip
    cmd.add_argument(
        "--allow-read", type=_readable_dir, action="append", default=[], metavar="DIR",
        help="let the query read files (Parquet, CSV, JSON) in DIR and below (repeatable; it still writes "
        "nothing), e.g. --allow-read /data/costs \"FROM job_results JOIN '/data/costs/usd.parquet' USING (job_id)\"",
    )  # fmt: skip
    cmd.add_argument(
        "--timeout", type=_time_limit, default=readonly.DEFAULT_PG_TIMEOUT_SECONDS, metavar="SECONDS",
        help="stop the query after SECONDS of running, on DuckDB or PostgreSQL (exit 4; default: %(default)g)",
    )  # fmt: skip
    cmd.set_defaults(run=query.run_sql)


def _add_serve(commands: argparse._SubParsersAction) -> None:
    help_text = "serve the REST API (OpenAPI at /openapi.json, docs at /docs)"
    cmd = _add_command(commands, "serve", help_text, [
        "runlytics serve",
        "runlytics serve --host 0.0.0.0 --base-url https://runs.example.com   # with $RUNLYTICS_API_TOKEN set",
        "runlytics serve --db postgresql://api@db-primary/runlytics --read-db postgresql://api@db-replica/runlytics",
    ])  # fmt: skip
    cmd.add_argument(
        "--host", type=_listen_host, default="127.0.0.1", help="interface to listen on (default: %(default)s)"
    )
    cmd.add_argument("--port", type=_port, default=8000, help="port, 0 to 65535 (default: %(default)s)")
    cmd.add_argument(
        "--allowed-hosts", action="append", metavar="H,H",
        help="the Host names answered, comma-separated (repeatable; '*.example.com' a domain, '*' any); "
        "default: the --host address, localhost and the --base-url host",
    )  # fmt: skip
    cmd.add_argument(
        "--base-url", metavar="URL",
        help="what next-page links start with, e.g. https://runs.example.com "
        "(default: http://HOST:PORT; relative links when HOST is every address, 0.0.0.0 or ::)",
    )  # fmt: skip
    cmd.add_argument(
        "--read-db", metavar="URL",
        help="with --db postgresql://…: read from this database instead, a replica (postgresql://user@host/dbname)",
    )  # fmt: skip
    cmd.add_argument(
        "--read-timeout", type=_time_limit, default=pg_reader.DEFAULT_TIMEOUT_SECONDS, metavar="SECONDS",
        help="the time limit of each read of a request, DuckDB or PostgreSQL (default: %(default)g)",
    )  # fmt: skip
    cmd.set_defaults(run=serve.run_serve)


def _add_status(commands: argparse._SubParsersAction) -> None:
    help_text = "the warehouse's size, schema, last ingest, the files that keep failing or warn"
    cmd = _add_command(commands, "status", help_text, [
        "runlytics status",
        "runlytics status --json --db /data/runlytics.duckdb",
        "runlytics status --db postgresql://runlytics@db-host/runlytics",
    ])  # fmt: skip
    cmd.add_argument("--json", action="store_true", help="print it as JSON")
    cmd.set_defaults(run=status.run_status)


def _add_analytics(commands: argparse._SubParsersAction) -> None:
    help_text = "print one job's analytics as JSON"
    cmd = _add_command(commands, "analytics", help_text, [
        "runlytics analytics run-42",
        "runlytics analytics --db postgresql://analyst@db-host/runlytics run-42",
    ])  # fmt: skip
    cmd.add_argument("job_id", help='the job\'s id, as `runlytics sql "SELECT job_id FROM jobs"` lists them')
    cmd.set_defaults(run=query.run_analytics)


def _add_insights(commands: argparse._SubParsersAction) -> None:
    help_text = "list one job's or the fleet's insights (what went wrong, where); show or set thresholds"
    cmd = _add_command(commands, "insights", help_text, [
        "runlytics insights",
        "runlytics insights run-42",
        "runlytics insights --kind loss_spike --severity warning --status running --json",
        "runlytics insights thresholds",
        "runlytics insights set loss_spike.mad_factor 8",
        "runlytics insights --db postgresql://runlytics@db-host/runlytics --severity critical",
    ])  # fmt: skip
    cmd.add_argument(
        "words", nargs="*", metavar="JOB_ID | thresholds | set NAME VALUE",
        help="a job's id (else the fleet's insights, newest jobs first); `thresholds` lists the thresholds in "
        "force; `set NAME VALUE` changes one and recomputes every job's insights",
    )  # fmt: skip
    cmd.add_argument(
        "--job", metavar="JOB_ID", help="the job whose insights to list (for a job named 'set' or 'thresholds')"
    )
    cmd.add_argument("--kind", help="only insights of this kind (e.g. loss_spike, stall, gpu_throttled)")
    cmd.add_argument("--severity", help="only insights of this severity: critical, warning or info")
    cmd.add_argument("--status", help="the fleet's list: only jobs with this status (e.g. running)")
    cmd.add_argument(
        "--limit", type=int,
        help=f"the fleet's list: at most this many insights, 1 to {pages.MAX_PAGE} (default: {insights.FLEET_LIMIT})",
    )  # fmt: skip
    cmd.add_argument("--json", action="store_true", help="print the API's answer as JSON")
    cmd.set_defaults(run=insights.run_insights)


def _add_export(commands: argparse._SubParsersAction) -> None:
    help_text = "export the fact tables and per-job analytics as Parquet (by job) or CSV (docs/export.md)"
    cmd = _add_command(commands, "export", help_text, [
        "runlytics export /data/export",
        "runlytics export --format csv --jobs run-41,run-42 --since 2026-01-01 --overwrite /data/export",
        "runlytics export --db postgresql://analyst@db-host/runlytics --jobs run-42 /data/export",
    ])  # fmt: skip
    cmd.add_argument("out", type=_path, help="folder to write; must not exist or be empty unless --overwrite")
    cmd.add_argument(
        "--format", choices=("parquet", "csv"), default="parquet",
        help="parquet: a folder per table, the fact tables partitioned by job_id (Hive style); csv: one file "
        "per table, OUT/<table>.csv (docs/export.md; default: %(default)s)",
    )  # fmt: skip
    cmd.add_argument("--jobs", help="only these jobs, comma-separated")
    cmd.add_argument(
        "--since", metavar="TIME",
        help="only jobs started at or after TIME: ISO 8601 (UTC unless it has an offset) or Unix seconds (9+ digits)",
    )  # fmt: skip
    cmd.add_argument("--overwrite", action="store_true", help="replace an earlier export in OUT")
    cmd.add_argument("--quiet", action="store_true", help="print nothing on success")
    cmd.set_defaults(run=export.run_export)


def _add_sample(commands: argparse._SubParsersAction) -> None:
    help_text = "sample the GPUs through NVML into a spool of JSON Lines, until stopped or while CMD runs"
    cmd = commands.add_parser(
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
    cmd.add_argument("--job-id", required=True, type=_job_id, help="the job the samples belong to")
    cmd.add_argument(
        "--gpus",
        help="NVML indexes or UUIDs, comma-separated (default: $CUDA_VISIBLE_DEVICES, else the UUIDs"
        " of $NVIDIA_VISIBLE_DEVICES, else every GPU)",
    )
    cmd.add_argument(
        "--interval", type=_finite_seconds, default=1.0,
        help="seconds between samples, 0.01 to 86400 (default: %(default)s)",
    )  # fmt: skip
    cmd.add_argument(
        "--spool",
        type=_path,
        default=os.environ.get(ENV_SPOOL) or "spool",  # (a string: _path checks it; an empty one is unset)
        help=f"folder of the spool files (default: ${ENV_SPOOL} or ./spool)",
    )
    cmd.add_argument(
        "--spool-max-mb",
        type=_spool_mib,
        default=512,
        help="the oldest spool files are deleted beyond this size; 0: no bound (default: %(default)s)",
    )
    cmd.add_argument("--host", help="host name written in the samples (default: this machine's)")
    cmd.add_argument("command", nargs=argparse.REMAINDER, help="a command to run and sample while it runs")
    cmd.set_defaults(run=sample.run_sample, command_name="sample")


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
        "value",
        metavar="VALUE",
        help="a finite number, at least 0; the counts whole numbers from 1 (gpu_straggler.min_gpus from 2) to 1000000"
        " (docs/insights.md)",
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
    setter.add_argument(
        "--json", action="store_true",
        help='print the change as one JSON object: {"warehouse", "name", "value", "recomputed"}',
    )  # fmt: skip
    return {"runlytics insights thresholds": thresholds, "runlytics insights set": setter}


def _examples(*lines: str) -> str:
    """The "Examples:" block that ends a command's --help."""
    return "Examples:\n" + "\n".join(f"  {line}" for line in lines)
