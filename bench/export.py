"""Benchmark: `runlytics export` against DuckDB's own COPY ... TO of the same rows; the API's streams.

    python bench/export.py --data /tmp/gen1000 --db /tmp/export-bench/warehouse.duckdb

Uses the generated jobs in --data (bench/generate.py --jobs 1000 --steps 1000 --gpus 2; made
when the folder is missing) and the warehouse --db (ingested when missing). Every measure runs
in a process of its own, and its peak RSS is that process's (os.wait4's rusage; for the API,
the server's VmHWM):

- `runlytics export OUT` (Parquet) and `--format csv`, from Python's start to its exit;
- DuckDB alone (python -c "import duckdb; ...") copying the newest snapshot's step_facts
  with `COPY (SELECT * FROM step_facts) TO ... (FORMAT parquet, PARTITION_BY (job_id))`, and
  copying the same seven tables (the same queries and layout) as the export;
- `GET /api/training/export/steps` for every job as CSV and as Parquet, and for 10 jobs, each
  against a fresh `runlytics serve`, with httpx reading the stream and discarding it.

Prints a Markdown table; docs/benchmark.md ("## Export") holds the figures of the project machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from runlytics.warehouse import db as wdb  # noqa: E402
from runlytics.warehouse import export, snapshots  # noqa: E402

CLI = [sys.executable, "-m", "runlytics"]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
DUCKDB = """
import sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
con.execute("SET enable_progress_bar = false")
for sql in sys.argv[2:]:
    con.execute(sql)
"""


def measure(command: list[str]) -> tuple[float, float]:
    """Seconds and peak RSS (MiB) of one process, run to its end."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        child = subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{command[:6]} exited with {child.returncode}: {err.read().decode()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024  # KiB on Linux


def copy_statements(snapshot: Path, out: Path, steps_only: bool) -> list[str]:
    """DuckDB's own COPY ... TO of what the export writes (or of step_facts alone), as plain SQL."""

    def to(path: Path, options: str) -> str:
        return "'" + str(path).replace("'", "''") + f"' ({options})"

    partitioned = "FORMAT parquet, PARTITION_BY (job_id)"
    if steps_only:
        return [f"COPY (SELECT * FROM step_facts) TO {to(out, partitioned)}"]
    con = wdb.connect(snapshot, read_only=True)
    try:
        queries = {t: export._query(con, t, export.Selection()) for t in export.TABLES}
    finally:
        con.close()
    statements = []
    for table, query in queries.items():
        if table in export.PARTITIONED:
            statements.append(f"COPY ({query}) TO {to(out / table, partitioned)}")
        else:
            (out / table).mkdir(parents=True)
            statements.append(f"COPY ({query}) TO {to(out / table / 'data_0.parquet', 'FORMAT parquet')}")
    return statements


def serve_and_get(db: Path, params: dict[str, str]) -> tuple[float, float, int]:
    """Seconds and bytes of one streamed answer, and the server's peak RSS (MiB)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [*CLI, "serve", "--db", str(db), "--port", str(port)],
        cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        with httpx.Client(base_url=base, timeout=300) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("runlytics serve did not start")
                time.sleep(0.1)
            start = time.perf_counter()
            size = 0
            with client.stream("GET", export_path(), params=params) as response:
                if response.status_code != 200:
                    raise SystemExit(f"export answered {response.status_code}: {response.read()[:500]!r}")
                for chunk in response.iter_raw():
                    size += len(chunk)
            seconds = time.perf_counter() - start
        peak = next(
            int(line.split()[1]) for line in Path(f"/proc/{server.pid}/status").read_text().splitlines()
            if line.startswith("VmHWM:")
        )  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=30)
    return seconds, peak / 1024, size


def export_path() -> str:
    from runlytics.api.routes.export import PATH

    return PATH


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("/tmp/gen1000"), help="generated jobs (made when missing)")
    parser.add_argument("--db", type=Path, default=Path("/tmp/export-bench/warehouse.duckdb"))
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--gpus", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each export measure (median kept)")
    args = parser.parse_args()

    if not args.data.exists():
        subprocess.run([sys.executable, str(REPO / "bench" / "generate.py"), str(args.data), "--jobs", str(args.jobs),
                        "--steps", str(args.steps), "--gpus", str(args.gpus)], check=True)  # fmt: skip
    if snapshots.latest(args.db) is None:
        args.db.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([*CLI, "ingest", str(args.data), "--db", str(args.db), "--quiet"], cwd=REPO, env=ENV, check=True)
    snapshot = snapshots.latest(args.db)
    assert snapshot is not None
    con = wdb.connect(snapshot, read_only=True)
    try:
        jobs = [r[0] for r in con.execute("SELECT job_id FROM jobs ORDER BY job_id").fetchall()]
        steps = con.execute("SELECT count(*) FROM step_facts").fetchone()[0]
        all_rows = sum(con.execute(f"SELECT count(*) FROM {r}").fetchone()[0] for r in export.SOURCES.values())
    finally:
        con.close()

    work = Path(tempfile.mkdtemp(prefix="runlytics-bench-export-", dir=args.db.parent))
    results: dict[str, list[tuple[float, float]]] = {}
    try:
        for i in range(args.repeat):
            runs = {
                "runlytics export (Parquet, 7 tables)": [*CLI, "export", str(work / f"p{i}"), "--db", str(args.db),
                                                         "--quiet"],
                "DuckDB COPY, same 7 tables and layout": [sys.executable, "-c", DUCKDB, str(snapshot),
                                                          *copy_statements(snapshot, work / f"d{i}", False)],
                "DuckDB COPY, step_facts only": [sys.executable, "-c", DUCKDB, str(snapshot),
                                                 *copy_statements(snapshot, work / f"s{i}", True)],
                "runlytics export --format csv": [*CLI, "export", str(work / f"c{i}"), "--db", str(args.db),
                                                  "--format", "csv", "--quiet"],
            }  # fmt: skip
            for name, command in runs.items():
                results.setdefault(name, []).append(measure(command))
            for sub in work.iterdir():
                shutil.rmtree(sub)
        sizes = {}
        api = {
            f"API steps CSV, {len(jobs)} jobs": {"job_ids": ",".join(jobs), "format": "csv"},
            f"API steps Parquet, {len(jobs)} jobs": {"job_ids": ",".join(jobs), "format": "parquet"},
            "API steps CSV, 10 jobs": {"job_ids": ",".join(jobs[:10]), "format": "csv"},
        }
        for name, params in api.items():
            seconds, peak, size = serve_and_get(args.db, params)
            results[name] = [(seconds, peak)]
            sizes[name] = size
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"{len(jobs)} jobs, {steps:,} step rows, {all_rows:,} rows in the 6 copied tables; median of {args.repeat}\n")
    print("| measure | seconds | peak RSS MiB |")
    print("|---|---:|---:|")
    for name, runs in results.items():
        seconds = statistics.median(r[0] for r in runs)
        peak = max(r[1] for r in runs)
        extra = f" ({sizes[name] / 2**20:.0f} MiB sent)" if name in sizes else ""
        print(f"| {name}{extra} | {seconds:.2f} | {peak:.0f} |")
    export_s = statistics.median(r[0] for r in results["runlytics export (Parquet, 7 tables)"])
    same_s = statistics.median(r[0] for r in results["DuckDB COPY, same 7 tables and layout"])
    print(f"\nexport / DuckDB COPY of the same rows = {export_s / same_s:.2f}x")


if __name__ == "__main__":
    main()
