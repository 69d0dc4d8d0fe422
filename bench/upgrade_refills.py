"""Benchmark: `runlytics db upgrade` of a warehouse some revisions behind, its derived tables
refilled once at the chain's end (migrations/derived.py) against once per revision.

    python bench/upgrade_refills.py [--jobs 2000] [--steps 200] [--from 0040] [--runs 3]

Generates the jobs (bench/generate.py), ingests them into a new warehouse at head, and builds an
old one: the chain up to ``--from``, the head's facts copied into it (the columns it has), its
derived tables refilled as that revision's ingest would have left them. Then upgrades copies of
it to head in fresh processes, in turn: as the code is, and with every refill run at once (the
deferral off: ``derived.DEFERRABLE`` emptied), and checks both give the same derived rows.
Prints the median wall and CPU seconds of each and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import duckdb  # noqa: E402

from bench.generate import make_job  # noqa: E402
from runlytics.ingest.pipeline import ingest  # noqa: E402
from runlytics.warehouse import insights, migrate, results  # noqa: E402

# ingest_runs too: the insights' as_of is the latest run's start (else the time of the query)
FACTS = ("jobs", "steps", "step_gpus", "checkpoints", "trainer_steps", "trainer_runs", "metric_values", "ingest_runs")
DERIVED = ("job_results", "insight_results")
UPGRADE = "from runlytics import cli; cli.entry()"
ONE_BY_ONE = "from runlytics.migrations import derived; derived.DEFERRABLE = (); from runlytics import cli; cli.entry()"


def old_warehouse(work: Path, jobs: int, steps: int, revision: str) -> Path:
    """A warehouse at ``revision`` holding the generated jobs' facts and their derived rows."""
    rng = random.Random(0)
    root = work / "jobs"
    for i in range(jobs):
        job = make_job(i, steps, 2, rng)
        (root / job["job_id"]).mkdir(parents=True)
        (root / job["job_id"] / "progress.json").write_text(json.dumps(job))
    new = work / "head.duckdb"
    ingest(new, [root])
    old = work / "old.duckdb"
    migrate.upgrade(old, revision)
    con = duckdb.connect(str(old))
    try:
        con.execute(f"ATTACH '{new}' AS src (READ_ONLY)")
        for table in FACTS:
            columns = ", ".join(r[0] for r in con.execute(f"DESCRIBE {table}").fetchall())
            con.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM src.{table}")
        con.execute(results.REFILL)
        con.execute(insights.REFILL)
        con.execute("DETACH src")
    finally:
        con.close()
    return old


def timed_upgrade(code: str, source: Path, work: Path) -> tuple[float, float, list[list[str]]]:
    """Wall and CPU seconds of ``db upgrade`` of a copy of ``source``; the copy's derived rows."""
    copy = work / f"copy-{time.monotonic_ns()}.duckdb"
    shutil.copy(source, copy)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, "db", "upgrade", "--db", str(copy)], capture_output=True, text=True, cwd=REPO
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    con = duckdb.connect(str(copy), read_only=True)
    try:
        rows = [sorted(map(repr, con.execute(f"SELECT * FROM {t}").fetchall())) for t in DERIVED]
    finally:
        con.close()
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--from", dest="revision", default="0040", help="the old warehouse's revision")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="runlytics-bench-") as tmp:
        work = Path(tmp)
        old = old_warehouse(work, args.jobs, args.steps, args.revision)
        figures: dict[str, list[tuple[float, float]]] = {"once, at the end": [], "after each revision": []}
        rows = {}
        for _ in range(args.runs):
            for name, code in (("once, at the end", UPGRADE), ("after each revision", ONE_BY_ONE)):
                wall, cpu, rows[name] = timed_upgrade(code, old, work)
                figures[name].append((wall, cpu))
        ways = zip(DERIVED, rows["once, at the end"], rows["after each revision"], strict=True)
        same = [table for table, once, each in ways if once == each]
        counts = {t: len(r) for t, r in zip(DERIVED, rows["once, at the end"], strict=True)}
        print(f"db upgrade {args.revision} -> head of {args.jobs} jobs x {args.steps} steps (derived rows: {counts})")
        for name, runs in figures.items():
            wall = statistics.median(w for w, _ in runs)
            cpu = statistics.median(c for _, c in runs)
            print(f"  refills {name}: {wall:.2f} s wall, {cpu:.2f} s CPU (median of {len(runs)})")
        print(f"  the tables with the same rows both ways: {', '.join(same) or 'none'} (of {', '.join(DERIVED)})")
        print(f"  load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
