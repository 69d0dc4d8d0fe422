"""Benchmark: the first ingest of a GPU sample spool against DuckDB's own read_json (issue 14).

    python bench/first_ingest.py [--hosts 8] [--hours 3] [--runs 1] [--baseline DIR] [--keep DIR]

Writes the spool of bench/fleet.py (--hosts x 8 GPUs sampled every second for --hours, ending a
minute before now, so the last hour stays hot), then times, each in a fresh process and --runs
times in turn: DuckDB's ``read_json`` of the files into a table of a new database (the floor, as
bench/fleet.py measures it), and ``runlytics ingest --spool`` into a new warehouse. With
--baseline, a second runlytics tree (e.g. an export of an older commit) is timed the same way in
the same rounds, so that a before/after comparison shares the machine's load. Prints wall and CPU
seconds (user + system of the child) and the load average; the ratio is ingest / read_json.
Only the first ingest: bench/fleet.py times the cron runs and the bytes at rest.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fleet  # noqa: E402 - the spool writer and the floor of bench/fleet.py

REPO = Path(__file__).resolve().parent.parent


def timed(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall and CPU seconds (user + system) of a child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True, cwd=cwd, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode not in (0, 1):
        raise SystemExit(f"{args} failed:\n{result.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=8, help="hosts of 8 GPUs (default 8: 64 GPUs)")
    parser.add_argument("--hours", type=int, default=3, help="hours of spool (default 3)")
    parser.add_argument("--runs", type=int, default=1, help="rounds of (floor, ingest[, baseline]) (default 1)")
    parser.add_argument("--baseline", type=Path, help="another runlytics tree to time in the same rounds")
    parser.add_argument("--keep", type=Path, help="work in this folder")
    args = parser.parse_args()

    now = int(time.time())
    end = now - now % 60 - 60
    trees = {"runlytics": REPO, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
    seconds: dict[str, list[tuple[float, float]]] = {"read_json": [], **{name: [] for name in trees}}
    loads = []
    with tempfile.TemporaryDirectory(dir=args.keep) as scratch:
        tmp = Path(scratch)
        spool = tmp / "spool"
        lines = fleet.write_spool(spool, fleet.hosts_of(args.hosts), end - args.hours * 3600, end)
        for _ in range(args.runs):
            loads.append(os.getloadavg()[0])
            floor = tmp / "floor.duckdb"
            seconds["read_json"].append(timed([sys.executable, "-c", fleet.FLOOR, str(spool), str(floor)], REPO))
            floor.unlink()
            for name, tree in trees.items():
                home = tmp / f"warehouse-{name}"
                env = {**os.environ, "PYTHONPATH": str(tree)}
                ingest = [sys.executable, "-c", fleet.INGEST, str(spool), str(home / "runlytics.duckdb")]
                home.mkdir()
                seconds[name].append(timed(ingest, tree, env))
                shutil.rmtree(home)
    print(
        f"| {args.hosts * fleet.GPUS_PER_HOST} GPUs, {args.hours} h, {lines:,} samples | wall s | CPU s | / read_json |"
    )
    print("|---|---:|---:|---:|")
    floor_wall = statistics.median(w for w, _ in seconds["read_json"])
    for name, runs in seconds.items():
        wall, cpu = statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs)
        print(f"| {name} | {wall:.2f} | {cpu:.2f} | {wall / floor_wall:.2f}x |")
    print()
    print(f"load average (1 min) at each round: {', '.join(f'{load:.1f}' for load in loads)}")


if __name__ == "__main__":
    main()
