"""Benchmark: what refreshing the insights adds to a full ingest (issue #17: < 15 %).

    python bench/insights_cost.py [--jobs 2000 --steps 1000 --gpus 2 --repeat 2] [--data DIR] [--explain]

Generates the jobs (bench/generate.py's, with bench/insights_api.py's anomalies injected: a loss
spike in every 3rd job, a NaN loss in every 7th, an hour's stall in every 11th) unless ``--data``
holds them, then, each in a fresh process and into an empty warehouse:

- ``with``: ``runlytics ingest`` as it is (analytics and insights refreshed in the same run);
- ``without``: the same ingest with ``insights.refresh`` replaced by a no-op in the child process
  (a switch of this benchmark alone: nothing in runlytics skips insights);

``--repeat`` times each (the files read once first, the order alternating), and reports the
medians, wall and CPU (the child's, all threads), and what insights add. It then
times the refresh alone on the ingested warehouse (every job's insights recomputed, in a
transaction rolled back), wall and CPU seconds; ``--explain`` prints DuckDB's profile of that
statement (EXPLAIN ANALYZE).
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
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))
from generate import make_job  # noqa: E402
from insights_api import inject  # noqa: E402

INGEST = """
import sys
from runlytics import cli
from runlytics.warehouse import insights
if sys.argv[3] == 'without':
    insights.refresh = lambda con, job_ids, peer_ids=(): set()
sys.exit(cli.main(['ingest', sys.argv[1], '--db', sys.argv[2], '--json']))
"""


def generate(root: Path, jobs: int, steps: int, gpus: int) -> None:
    rng = random.Random(0)
    for i in range(jobs):
        doc = inject(make_job(i, steps, gpus, rng), i)
        folder = root / doc["job_id"]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "progress.json").write_text(json.dumps(doc, allow_nan=True))


def ingest(data: Path, warehouse: Path, mode: str) -> tuple[float, float]:
    """Wall and CPU seconds (the child's, all threads) of one ingest into an empty warehouse."""
    for suffix in ("", ".wal", ".ingest.lock", ".last-ingest.json"):
        Path(str(warehouse) + suffix).unlink(missing_ok=True)
    shutil.rmtree(str(warehouse) + ".snapshots", ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", INGEST, str(data), str(warehouse), mode], capture_output=True, text=True, cwd=REPO
    )
    seconds = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode not in (0, 1):
        raise SystemExit(f"ingest ({mode}) failed:\n{result.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu


def refresh_alone(warehouse: Path, repeat: int, explain: bool) -> tuple[float, float, int]:
    """Median wall and CPU seconds of recomputing every job's insights, and how many insights that gives."""
    import duckdb

    from runlytics.warehouse import insights

    con = duckdb.connect(str(warehouse))
    job_ids = {job_id for (job_id,) in con.execute("SELECT job_id FROM jobs").fetchall()}
    walls, cpus = [], []
    for _ in range(repeat):
        con.execute("BEGIN")
        began, cpu = time.perf_counter(), time.process_time()
        insights.refresh(con, job_ids)
        walls.append(time.perf_counter() - began)
        cpus.append(time.process_time() - cpu)
        # counted here: the last ingest may have been the one without insights
        stored = con.execute("SELECT count(*) FROM insight_results").fetchone()[0]
        con.execute("ROLLBACK")
    if explain:
        con.execute("SET explain_output = 'all'")
        ordered = sorted(job_ids)
        plan = con.execute(
            "EXPLAIN ANALYZE " + insights.INSERT_RANGE.removeprefix("INSERT INTO insight_results "),
            {"first": ordered[0], "last": ordered[-1], "job_ids": ordered},
        ).fetchall()
        print(plan[-1][1])
    con.close()
    return statistics.median(walls), statistics.median(cpus), stored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--gpus", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--data", type=Path, help="keep the generated jobs here (reused when present)")
    parser.add_argument("--explain", action="store_true", help="print EXPLAIN ANALYZE of the refresh")
    parser.add_argument("--no-ingest", action="store_true", help="only time the refresh (needs --data)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or Path(tmp) / "jobs"
        if not data.exists():
            began = time.perf_counter()
            generate(data, args.jobs, args.steps, args.gpus)
            print(f"generated {args.jobs} jobs in {time.perf_counter() - began:.1f} s")
            time.sleep(2.5)  # let the newest files settle, as they would between cron runs
        warehouse = (args.data.parent if args.data else Path(tmp)) / "insights-cost.duckdb"
        times: dict[str, list[tuple[float, float]]] = {"without": [], "with": []}
        if not args.no_ingest or not warehouse.exists():
            for path in data.glob("*/progress.json"):
                path.read_bytes()  # the files in the page cache, so that the first run reads no disk
            for repeat in range(args.repeat):
                # alternating which goes first, so that neither always meets the other's leftovers
                for mode in ("without", "with") if repeat % 2 == 0 else ("with", "without"):
                    times[mode].append(ingest(data, warehouse, mode))
        wall, cpu, stored = refresh_alone(warehouse, max(1, args.repeat), args.explain)

    load = os.getloadavg()[0]
    print(f"\n{args.jobs} jobs x {args.steps} steps x {args.gpus} GPUs; {stored:,} insights; load average {load:.1f}\n")
    if times["with"]:
        print("| full ingest into an empty warehouse | wall s (runs) | median wall s | median CPU s |")
        print("|---|---|---:|---:|")
        medians = {}
        for mode, label in (("without", "insights not refreshed"), ("with", "insights refreshed (as shipped)")):
            runs = ", ".join(f"{wall:.2f}" for wall, _ in times[mode])
            medians[mode] = [statistics.median(t[i] for t in times[mode]) for i in (0, 1)]
            print(f"| {label} | {runs} | {medians[mode][0]:.2f} | {medians[mode][1]:.2f} |")
        wall_added, cpu_added = (100 * (medians["with"][i] / medians["without"][i] - 1) for i in (0, 1))
        print(f"\ninsights add {wall_added:.1f} % wall, {cpu_added:.1f} % CPU to the ingest (target < 15 %)")
    print(f"refresh alone (every job): {wall:.2f} s wall, {cpu:.2f} s CPU")
    if times["with"]:
        # the steadier share on a loaded machine: one refresh against one ingest's CPU
        print(f"refresh alone / ingest without insights: {100 * cpu / medians['without'][1]:.1f} % of its CPU")


if __name__ == "__main__":
    main()
