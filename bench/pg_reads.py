"""Benchmark: the REST API reading PostgreSQL (issue #18) against the same API reading DuckDB.

    python bench/pg_reads.py [--jobs 2000 --steps 200 --gpus 2] [--to postgresql://…] [--data DIR]

Generates the jobs (bench/generate.py), ingests them into DuckDB, copies the warehouse into
PostgreSQL with ``runlytics db copy`` (``--to`` an empty database, else a throwaway local server:
tests/pg_server.py, fsync off), then starts ``runlytics serve`` on each warehouse in turn and
measures over loopback with httpx: one job's analytics (p50/p95 of 200 requests for random jobs),
the summary (p50 of 50), the job list's first page and a comparison of 10 jobs (p50 of 50 each).
Checks that both servers give the same answers. Prints a Markdown table (docs/benchmark.md,
"PostgreSQL: the API reading it"). Targets of the issue: job analytics p50 < 20 ms, summary
< 100 ms, on PostgreSQL as on DuckDB.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from pg_server import PgServer, bin_dir  # noqa: E402

CLI = [sys.executable, "-m", "runlytics"]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
TARGET_JOB_P50_MS = 20.0
TARGET_SUMMARY_P50_MS = 100.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(db: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [*CLI, "serve", "--db", db, "--host", "127.0.0.1", "--port", str(port)],
        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"runlytics serve --db {db} exited with {server.returncode}")
        try:
            if httpx.get(base + "/api/training/analytics/summary", timeout=5.0).status_code == 200:
                return server, base
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.terminate()
    raise SystemExit(f"runlytics serve --db {db} not ready after 120 s")


def times_ms(client: httpx.Client, paths: list[str], warm: int = 5) -> tuple[list[float], list[object]]:
    for path in paths[:warm]:
        client.get(path).raise_for_status()
    out, answers = [], []
    for path in paths:
        began = time.perf_counter()
        response = client.get(path)
        out.append((time.perf_counter() - began) * 1000)
        response.raise_for_status()
        answers.append(response.json())
    return out, answers


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(db: str, ids: list[str]) -> tuple[dict[str, list[float]], dict[str, list[object]]]:
    rng = random.Random(18)
    jobs = [f"/api/training/{rng.choice(ids)}/analytics" for _ in range(200)]
    compares = [f"/api/training/analytics/compare?job_ids={','.join(rng.sample(ids, 10))}" for _ in range(50)]
    server, base = serve(db)
    try:
        with httpx.Client(base_url=base, timeout=60.0) as client:
            results = {
                "job": times_ms(client, jobs),
                "summary": times_ms(client, ["/api/training/analytics/summary"] * 50),
                "list": times_ms(client, ["/api/training/jobs"] * 50),
                "compare": times_ms(client, compares),
            }
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {k: v[0] for k, v in results.items()}, {k: v[1] for k, v in results.items()}


def _bare(answer: object) -> object:
    return {k: v for k, v in answer.items() if k != "next"} if isinstance(answer, dict) else answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--gpus", type=int, default=2)
    parser.add_argument("--to", help="an empty PostgreSQL database (default: a throwaway local server)")
    parser.add_argument("--data", type=Path, help="keep the jobs and the DuckDB warehouse here, reuse them")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pg-reads-"))
    data = args.data or tmp
    server = None
    try:
        root, warehouse = data / "jobs", data / "w.duckdb"
        if not warehouse.exists():
            began = time.perf_counter()
            generate = [sys.executable, str(REPO / "bench" / "generate.py"), str(root)]
            sizes = ["--jobs", str(args.jobs), "--steps", str(args.steps), "--gpus", str(args.gpus)]
            subprocess.run([*generate, *sizes], check=True, stdout=subprocess.DEVNULL)
            subprocess.run([*CLI, "ingest", "--quiet", "--db", str(warehouse), str(root)], check=True, env=ENV)
            print(f"generated and ingested {args.jobs} jobs in {time.perf_counter() - began:.1f} s")
        if args.to is None:
            bins = bin_dir()
            if bins is None:
                raise SystemExit("PostgreSQL is not installed (Debian's postgresql package), and no --to given")
            server = PgServer(bins)
        url = args.to or server.new_database()  # type: ignore[union-attr]
        began = time.perf_counter()
        subprocess.run([*CLI, "db", "copy", "--db", str(warehouse), "--to", url], check=True, env=ENV,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        print(f"db copy: {time.perf_counter() - began:.1f} s")
        ids = [line.split(",")[0] for line in subprocess.run(
            [*CLI, "sql", "--db", url, "--format", "csv", "SELECT job_id FROM jobs ORDER BY job_id"],
            check=True, env=ENV, capture_output=True, text=True,
        ).stdout.split()[1:]]  # fmt: skip
        duck, duck_answers = measure(str(warehouse), ids)
        pg, pg_answers = measure(url, ids)
        # the answers but their `next` links, which name each server's own port
        same = all(list(map(_bare, pg_answers[k])) == list(map(_bare, duck_answers[k])) for k in duck_answers)
        print(f"\n{len(ids)} jobs; the same answers on both engines: {'yes' if same else 'NO'}\n")
        print("| request (HTTP, loopback) | DuckDB p50 | PostgreSQL p50 | PostgreSQL p95 | target | met |")
        print("|---|---:|---:|---:|---|---|")
        rows = [
            ("one job's analytics, random jobs (200)", "job", TARGET_JOB_P50_MS),
            ("summary of all jobs (50)", "summary", TARGET_SUMMARY_P50_MS),
            ("job list, first page of 100 (50)", "list", None),
            ("compare 10 random jobs (50)", "compare", None),
        ]
        for label, key, target in rows:
            p50 = statistics.median(pg[key])
            met = "" if target is None else ("yes" if p50 < target else "NO")
            goal = "" if target is None else f"< {target:g} ms"
            print(
                f"| {label} | {statistics.median(duck[key]):.1f} ms | {p50:.1f} ms | {pct(pg[key], 0.95):.1f} ms "
                f"| {goal} | {met} |"
            )
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
