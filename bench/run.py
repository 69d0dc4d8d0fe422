"""Benchmark: ingest against DuckDB's own read_json floor, the unchanged re-run, and view queries.

    python bench/run.py --jobs 1000 --steps 1000 --gpus 2 [--checkpoint-folders] [--data DIR] [--keep DIR]

Generates the jobs (bench/generate.py) unless --data names an existing folder, then measures,
each in a fresh process so that peak memory is the run's own:

- floor:   DuckDB read_json + unnest of the same files into step and GPU tables
- ingest:  ``runlytics ingest`` into an empty warehouse
- rerun:   the same ingest again, nothing changed
- queries: the per-job analytics view for one job and for all jobs, and one job's step rows

Prints a Markdown table; docs/benchmark.md holds the figures measured on the project machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# DuckDB's defaults, as a user would write it. (maximum_object_size = 1 GiB, which this script
# once passed, makes DuckDB allocate and free a 1 GiB buffer per file: the "floor" then took
# twice as long, 90k instead of the ~200k step rows/s the issue measured.)
FLOOR = """
import duckdb, glob, sys
files = sorted(glob.glob(sys.argv[1] + '/*/progress.json'))
con = duckdb.connect(sys.argv[2])
con.execute("SET enable_progress_bar = false")
con.execute("CREATE TABLE raw AS SELECT job_id, unnest(history, max_depth := 1) AS h "
            "FROM read_json(?)", [files])
con.execute("CREATE TABLE steps AS SELECT job_id, h.step, h.timestamp, h.loss, h.learning_rate, "
            "h.samples_per_second, h.iteration_time, h.samples FROM raw")
con.execute("CREATE TABLE gpus AS SELECT job_id, h.step, unnest(h.gpus, max_depth := 2) FROM raw")
print(con.execute("SELECT count(*) FROM steps").fetchone()[0])
"""

INGEST = (
    "import sys; from runlytics import cli; sys.exit(cli.main(['ingest', sys.argv[1], '--db', sys.argv[2], '--json']))"
)

QUERIES = {
    "one job's analytics": "SELECT * FROM job_analytics WHERE job_id = 'job-000500'",
    "all jobs' analytics": "SELECT count(*), avg(average_samples_per_second) FROM job_analytics",
    "one job's step rows": "SELECT * FROM step_metrics WHERE job_id = 'job-000500' ORDER BY step",
}


def timed(args: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in MiB and stdout of a child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - start
    if result.returncode not in (0, 1):
        raise SystemExit(f"{args} failed:\n{result.stderr}")
    peak = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    return seconds, peak, result.stdout


def query_times(db: Path, repeat: int = 5) -> dict[str, float]:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    out = {}
    for name, sql in QUERIES.items():
        con.execute(sql).fetchall()  # warm
        start = time.perf_counter()
        for _ in range(repeat):
            con.execute(sql).fetchall()
        out[name] = (time.perf_counter() - start) / repeat
    con.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--gpus", type=int, default=2)
    parser.add_argument("--checkpoint-folders", action="store_true", help="generate each job's checkpoint folders")
    parser.add_argument("--data", type=Path, help="use these generated jobs instead of generating")
    parser.add_argument("--keep", type=Path, help="keep the warehouse here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        data = args.data or tmp_path / "jobs"
        if args.data is None:
            subprocess.run(
                [sys.executable, "bench/generate.py", str(data), "--jobs", str(args.jobs), "--steps",
                 str(args.steps), "--gpus", str(args.gpus),
                 *(["--checkpoint-folders"] if args.checkpoint_folders else [])],
                check=True, cwd=REPO,
            )  # fmt: skip
            time.sleep(2.5)  # let the newest files settle, as they would between cron runs
        warehouse = args.keep or tmp_path / "bench.duckdb"
        for suffix in ("", ".wal"):
            Path(str(warehouse) + suffix).unlink(missing_ok=True)

        floor_s, floor_mb, rows = timed([sys.executable, "-c", FLOOR, str(data), str(tmp_path / "floor.duckdb")])
        ingest_s, ingest_mb, out = timed([sys.executable, "-c", INGEST, str(data), str(warehouse)])
        summary = json.loads(out)
        rerun_s, _, out = timed([sys.executable, "-c", INGEST, str(data), str(warehouse)])
        rerun = json.loads(out)
        queries = query_times(warehouse)

    step_rows = int(rows)
    print(f"| {args.jobs} jobs x {args.steps} steps x {args.gpus} GPUs | seconds | step rows/s | peak MiB |")
    print("|---|---:|---:|---:|")
    print(f"| DuckDB read_json + unnest (floor) | {floor_s:.2f} | {step_rows / floor_s:,.0f} | {floor_mb:.0f} |")
    print(f"| runlytics ingest, first run | {ingest_s:.2f} | {summary['rows'] / ingest_s:,.0f} | {ingest_mb:.0f} |")
    print(f"| runlytics ingest, unchanged re-run | {rerun_s:.2f} | | |")
    print()
    print(f"ingest / floor = {ingest_s / floor_s:.2f}x; re-run / first = {100 * rerun_s / ingest_s:.1f} %")
    print(f"re-run summary: {rerun['unchanged']} unchanged, {rerun['ingested']} ingested")
    print()
    print("| query | ms |")
    print("|---|---:|")
    for name, seconds in queries.items():
        print(f"| {name} | {seconds * 1000:.1f} |")


if __name__ == "__main__":
    main()
