"""Benchmark: a new warehouse built directly at head against the alembic chain's replay.

    python bench/new_warehouse.py [--runs 5]

Times, each in a fresh process and --runs times in turn, both ways of building a new DuckDB
warehouse (the chain forced with ``migrate.upgrade_locked(..., chain=True)``, the code path every
new warehouse took before warehouse/head.py): ``runlytics db upgrade --db NEW``, and the first
ingest of the bundled sample jobs (README's first command) into a new warehouse. Prints the
median wall and CPU seconds (user + system of the child) and the load average.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# the command line's entry point, with every new warehouse built through the chain (as before)
CHAIN = """
from runlytics.warehouse import migrate
real = migrate.upgrade_locked
def through_the_chain(path, revision="head", wait=migrate.db.DEFAULT_WAIT_SECONDS, *, chain=False):
    return real(path, revision, wait, chain=True)
migrate.upgrade_locked = through_the_chain
from runlytics import cli
cli.entry()
"""
DIRECT = "from runlytics import cli; cli.entry()"


def timed(args: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system) of a child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"{args} failed: {result.stderr}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    commands = {
        "db upgrade": ["db", "upgrade"],
        "first ingest (samples/jobs)": ["ingest", "--quiet", str(REPO / "samples" / "jobs")],
    }
    times: dict[tuple[str, str], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-new-warehouse-") as tmp:
        for run in range(args.runs):
            for number, (label, command) in enumerate(commands.items()):
                for way, code in (("chain", CHAIN), ("direct", DIRECT)):
                    path = Path(tmp) / f"{way}-{run}-{number}.duckdb"  # a new warehouse each time
                    times.setdefault((label, way), []).append(
                        timed([sys.executable, "-c", code, *command, "--db", str(path)])
                    )
    print(f"load average {os.getloadavg()[0]:.2f}, {args.runs} runs, medians")
    for (label, way), runs in times.items():
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(f"{label:30s} {way:7s} wall {wall:6.3f} s  cpu {cpu:6.3f} s")


if __name__ == "__main__":
    main()
