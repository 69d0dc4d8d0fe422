"""``runlytics ingest``: once or every SECONDS, into a DuckDB file or through a stage into PostgreSQL."""

from __future__ import annotations

import argparse
import itertools
import json
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from runlytics.ingest import quick, unknown_jobs
from runlytics.ingest.summary import Summary
from runlytics.warehouse import db

from .errors import UserError, _guarded, _say
from .exits import EXIT_BUG, EXIT_FILES_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from .output import LISTED_WARNINGS, ProgressLine, _nul_job, _plural, _points


def run_ingest(args: argparse.Namespace) -> int:
    _check_usage(args)
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
    said: set[str] = set()
    return _repeat(args.every, lambda: _survived(args, said))


def _survived(args: argparse.Namespace, said: set[str]) -> int:
    """One run of --every, whatever stops it: its exit code, a failure said in one line as a single
    run says it (out of memory, a full disk behind stdout, …), a bug with its traceback, the first
    time that bug is met (``said``), then in one line: a daemon lives on to its next run."""
    try:
        return _guarded(_ingest_once, args)
    except Exception as error:  # a bug (_guarded says every other failure)
        what = "".join(traceback.format_exception_only(error)).strip().replace("\n", " ")
        if what in said:
            _say(args, f"{what} (a bug: its traceback was said above; going on)")
        else:
            said.add(what)
            traceback.print_exc()
            _say(args, "a bug (the traceback above): this run stopped; going on with the next")
        return EXIT_BUG


# the options that describe the --nvidia-smi-csv logs, and their defaults (None: given or not)
CSV_OPTIONS = {"job_id": None, "timezone": "UTC", "host": "", "columns": None}


def _check_usage(args: argparse.Namespace) -> None:
    """UserError for options no run could use (exit 2)."""
    if not (args.roots or args.spool or args.nvidia_smi_csv):
        raise UserError("name job roots, --spool folders or --nvidia-smi-csv files")
    given = [f"--{name.replace('_', '-')}" for name in CSV_OPTIONS if getattr(args, name) is not None]
    if given and not args.nvidia_smi_csv:  # else ignored without a word
        raise UserError(f"{', '.join(given)} describe{'s' if len(given) == 1 else ''} an --nvidia-smi-csv log: "
                        "name the log, or leave them out")  # fmt: skip
    for name, default in CSV_OPTIONS.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    if args.nvidia_smi_csv and not args.job_id:
        raise UserError("--nvidia-smi-csv needs --job-id (the job the log belongs to)")
    if args.nvidia_smi_csv and not args.job_id.strip():
        raise UserError(f"--job-id {args.job_id!r} is blank: no job is named so (name the job the log belongs to)")
    if args.archive is not None and args.keep_raw_days == 0:  # else ignored without a word
        raise UserError(
            "--archive with --keep-raw-days 0 archives nothing: every raw sample is kept (name a window of days)"
        )
    try:
        ZoneInfo(args.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise UserError(f"unknown --timezone {args.timezone!r} (an IANA name like Europe/Berlin)") from None


def _repeat(seconds: float, run: Callable[[], int]) -> int:
    """``run()`` every ``seconds`` (start to start) until SIGTERM or SIGINT; the last run's exit code.

    A signal never cuts a run: it ends the loop once the current run has finished. A usage error
    of the first run (a root that is not there) ends it too: no later run would find it either;
    any later failure is said and the next run comes (``_survived``).
    """
    stopping: list[int] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for count in itertools.count():
            began = time.monotonic()
            code = run()
            # a root mistyped: running again would not help; a run interrupted: no more
            if code == EXIT_INTERRUPTED or (code == EXIT_USAGE and count == 0):
                return code
            while not stopping and (left := seconds - (time.monotonic() - began)) > 0:
                time.sleep(min(left, 0.1))
            if stopping:
                return code
        raise AssertionError("unreachable: itertools.count() never ends")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _ingest_once(args: argparse.Namespace) -> int:
    target = db.resolve_target(args.db)
    if isinstance(target, db.PostgresUrl):
        return _ingest_postgres(args, target)
    if args.stage is not None:
        raise UserError("--stage goes with --db postgresql://…")
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
            # the insights alone: running jobs' (their silence ages), or every job's after
            # `insights set` changed a threshold on PostgreSQL
            f"{target}: published {_plural(published.jobs, 'job')} whole, the insights alone of "
            f"{_plural(published.insights_only, 'job')}, {_plural(published.runs, 'run')} in {published.seconds:.2f} s"
        )
    return code


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
