"""PostgreSQL's recompute of job_analytics and the insights: a git revision's views against the working tree's.

python bench/pg_recompute.py [--jobs 300] [--steps 200] [--rounds 7] [--before HEAD]

Generates jobs (bench/generate.py), ingests them into DuckDB, copies them to a throwaway local
PostgreSQL 15 (tests/pg_server.py), then times, round after round, a query over all rows of
job_analytics, insight_steps, step_metrics and job_insights with the views rendered as the
revision ``--before`` has them (its warehouse/sql and its dialect) and as the working tree has
them, each replaced in place (CREATE OR REPLACE VIEW) in the same database before its queries.
The database is at the working tree's head, so both renderings find the functions they call.
Prints each query's median and every round's time, and how many calls of the float functions
each plan still holds (a call PostgreSQL did not inline runs once per row).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402
from pg_server import PgServer, bin_dir  # noqa: E402

from bench import generate  # noqa: E402
from runlytics.ingest.pipeline import ingest  # noqa: E402
from runlytics.warehouse import db, dialect, migrate, pg_copy, views  # noqa: E402
from runlytics.warehouse.postgres import SESSION_OPTIONS  # noqa: E402

QUERIES = {
    "job_analytics": "SELECT count(*), sum(coalesce(total_samples, 0)) FROM job_analytics",
    "insight_steps": "SELECT count(*) FROM insight_steps",
    "step_metrics": "SELECT count(*), sum(samples) FROM step_metrics",
    "job_insights": "SELECT count(*) FROM job_insights",
}
CALLS = ("runlytics_fmul(", "runlytics_fdiv(", "runlytics_fadd(", "runlytics_fsub(")


def _git_show(ref: str, path: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), "show", f"{ref}:{path}"], capture_output=True, text=True, check=True
    ).stdout


def rendered(ref: str | None) -> list[str]:
    """Every view's CREATE OR REPLACE VIEW as the revision ``ref`` renders it (None: the working tree)."""
    if ref is None:
        return [views.View.load(REPO / "warehouse" / "sql", name).create_sql(dialect.POSTGRES) for name in views.ORDER]
    scope: dict[str, object] = {}
    exec(compile(_git_show(ref, "warehouse/dialect.py"), f"{ref}:warehouse/dialect.py", "exec"), scope)
    snippets = scope["POSTGRES"]
    assert isinstance(snippets, dict)
    return [
        f"CREATE OR REPLACE VIEW {name} AS\n" + dialect.render(_git_show(ref, f"warehouse/sql/{name}.sql"), snippets)
        for name in views.ORDER
    ]


def build(data: Path, jobs: int, steps: int) -> Path:
    path = data / f"w{jobs}x{steps}.duckdb"
    if path.exists():
        return path
    root = data / f"jobs{jobs}x{steps}"
    rng = random.Random(7)
    for i in range(jobs):
        job = generate.make_job(i, steps, 2, rng)
        (root / job["job_id"]).mkdir(parents=True)
        (root / job["job_id"] / "progress.json").write_text(json.dumps(job))
    migrate.upgrade(path)
    ingest(path, [root], wait=30)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--before", default="HEAD", help="the git revision whose views are the baseline")
    parser.add_argument("--data", type=Path, default=Path("/tmp/pg_recompute"))
    args = parser.parse_args()
    args.data.mkdir(parents=True, exist_ok=True)
    path = build(args.data, args.jobs, args.steps)
    variants = {f"views of {args.before}": rendered(args.before), "working tree": rendered(None)}
    server = PgServer(bin_dir())
    try:
        url = server.new_database()
        pg_copy.copy(path, db.PostgresUrl(url), wait=30)
        times: dict[tuple[str, str], list[float]] = {}
        with psycopg.connect(url, autocommit=True, options=SESSION_OPTIONS) as con:
            for _ in range(args.rounds):
                for name, statements in variants.items():
                    for statement in statements:
                        con.execute(statement)
                    for query, sql in QUERIES.items():
                        began = time.perf_counter()
                        con.execute(sql).fetchall()
                        times.setdefault((name, query), []).append(time.perf_counter() - began)
            for name, statements in variants.items():
                for statement in statements:
                    con.execute(statement)
                calls = {}
                for query, sql in QUERIES.items():
                    plan = "\n".join(row[0] for row in con.execute("EXPLAIN VERBOSE " + sql).fetchall())
                    calls[query] = sum(plan.count(call) for call in CALLS)
                print(f"{name}: calls of runlytics_f* left in the plans {calls}")
    finally:
        server.stop()
    for (name, query), seconds in times.items():
        ms = [round(s * 1000) for s in seconds]
        print(f"{name:>20} {query:>14}: median {statistics.median(seconds) * 1000:7.0f} ms  {ms}")


if __name__ == "__main__":
    main()
