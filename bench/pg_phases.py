"""One ``runlytics`` command with the CPU seconds of each phase of an ingest into PostgreSQL.

    python bench/pg_phases.py OUT.json ingest --db postgresql://… --stage STAGE ROOT…

Runs the command in this process (``cli.entry``) with the ingest's phases wrapped: each one's
wall and CPU seconds (``time.process_time``: every thread of the process, DuckDB's included)
and, for the publish's phases, the CPU seconds of the PostgreSQL backend serving it (from
``/proc``, so the server on this machine); then writes them to OUT.json. ``bench/pg_ingest.py
--phases`` starts its ingesters through it and adds up the phases (docs/benchmark.md,
"PostgreSQL: 4 ingesters at once").
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TICKS = os.sysconf("SC_CLK_TCK")
STARTED = time.process_time()  # the interpreter's start, before this line, is not counted
# phase name -> [calls, wall s, CPU s, backend CPU s]
PHASES: dict[str, list[float]] = {}
BACKEND: list[int] = []  # the publish's backend, once connected


def _backend_cpu() -> float:
    if not BACKEND:
        return 0.0
    try:
        fields = Path(f"/proc/{BACKEND[0]}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # a server on another machine, or the backend gone
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def _record(name: str, began: tuple[float, float, float | None]) -> None:
    """Add a phase's seconds since ``began``; its backend's only when it began connected (the
    backend of a whole publish exits with it)."""
    row = PHASES.setdefault(name, [0, 0.0, 0.0, 0.0])
    row[0] += 1
    row[1] += time.monotonic() - began[0]
    row[2] += time.process_time() - began[1]
    if began[2] is not None:
        row[3] += _backend_cpu() - began[2]


def _wrap(owner: Any, attribute: str, name: str) -> None:
    function: Callable[..., Any] = getattr(owner, attribute)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        began = (time.monotonic(), time.process_time(), _backend_cpu() if BACKEND else None)
        try:
            return function(*args, **kwargs)
        finally:
            _record(name, began)

    setattr(owner, attribute, wrapped)


def main() -> None:
    out, argv = Path(sys.argv[1]), sys.argv[2:]
    began = (time.monotonic(), time.process_time(), None)
    from runlytics.cli import entry
    from runlytics.ingest import pipeline
    from runlytics.ingest import postgres as pg_ingest
    from runlytics.warehouse import migrate, results

    _record("imports", began)
    _wrap(migrate, "ensure_current", "stage: schema (a new stage built at head)")
    for reader in {type(make()) for make in pipeline.JOB_FORMATS}:
        _wrap(reader, "ingest", f"stage: read {reader.__name__}")
    _wrap(results, "refresh_queued", "stage: derived tables and insights")
    _wrap(pipeline, "ingest", "stage (all)")
    connect = pg_ingest._pg

    @contextmanager
    def pg(target: Any) -> Iterator[Any]:
        with connect(target) as conn:
            BACKEND[:] = [conn.info.backend_pid]
            yield conn

    pg_ingest._pg = pg  # type: ignore[assignment]
    for phase in ("_ensure_schema", "_publish_jobs", "_copy", "_analyze", "_recompute_peers", "_wait_for_publishers"):
        _wrap(pg_ingest, phase, f"publish: {phase.lstrip('_')}")
    _wrap(pg_ingest.pg_telemetry, "publish", "publish: telemetry")
    _wrap(pg_ingest, "publish", "publish (all)")
    sys.argv = ["runlytics", *argv]
    code = 0
    try:
        entry()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        PHASES["total"] = [1, time.monotonic() - began[0], time.process_time() - STARTED, 0.0]
        out.write_text(json.dumps(PHASES))
    sys.exit(code)


if __name__ == "__main__":
    main()
