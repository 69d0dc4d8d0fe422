"""Benchmark: 4 ingesters at once into one PostgreSQL, against one DuckDB ingest of the same jobs (issue #18).

    python bench/pg_ingest.py [--jobs 2000 --steps 200 --gpus 2 --ingesters 4] [--rounds 1] [--data DIR]

Generates the jobs (bench/generate.py's make_job, job i under root i % ingesters), then per round:

- DuckDB: one ``runlytics ingest --db FILE ROOT…`` of every root into a new warehouse file;
- PostgreSQL: ``--ingesters`` processes started at once, each ``runlytics ingest --db URL --stage
  STAGE ROOT`` of its own root, into one empty database of a throwaway local server
  (tests/pg_server.py: Debian's PostgreSQL binaries, fsync off as the tests run it) and new stages;
  the wall time from the first start to the last exit.

Both start from nothing (the schema's build is in both times); with ``--prebuilt`` the DuckDB file,
the stages and the PostgreSQL database are first built by ``runlytics db upgrade``, untimed (a
schema is built once per warehouse, not per ingest). Also prints each ingester's stage and publish
seconds, the models whose slow_vs_peers each recomputed, and the CPU seconds of each round: the
ingest processes' (user + system, as the kernel counted them when they were waited for) and, for
PostgreSQL, the server's (its postmaster and every backend, autovacuum included, from /proc): on
a machine shared with other work the wall time moves with the load, the CPU seconds much less.
With ``--phases`` each PostgreSQL ingester runs through
bench/pg_phases.py, and the CPU seconds of each phase (the four added up) are printed too. Checks
that PostgreSQL then holds
as many rows of each table as the DuckDB warehouse, and prints a Markdown table (docs/benchmark.md,
"PostgreSQL: 4 ingesters at once"). The issue's target: PostgreSQL's wall time <= 1.5x DuckDB's.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import duckdb  # noqa: E402
import psycopg  # noqa: E402
from pg_server import PgServer, bin_dir  # noqa: E402

from bench import generate  # noqa: E402

CLI = [sys.executable, "-m", "runlytics"]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
TARGET = 1.5
TICKS = os.sysconf("SC_CLK_TCK")
COUNTED = ("jobs", "steps", "step_gpus", "checkpoints", "job_results", "utilization_minutes", "insight_results")


def children_cpu() -> float:
    """CPU seconds of this process's children that have been waited for."""
    times = os.times()
    return times.children_user + times.children_system


def server_cpu(server: PgServer) -> float:
    """CPU seconds of the PostgreSQL server so far: its postmaster's own and its exited children's
    (counted into it when reaped), and each live child's."""
    postmaster = int((server.data / "postmaster.pid").read_text().split()[0])

    def fields(pid: int | str) -> list[str]:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()

    ticks = sum(int(value) for value in fields(postmaster)[11:15])
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                stat = fields(pid)
            except OSError:  # gone meanwhile
                continue
            if int(stat[1]) == postmaster:
                ticks += int(stat[11]) + int(stat[12])
    return ticks / TICKS


def write_roots(out: Path, jobs: int, steps: int, gpus: int, ingesters: int) -> list[Path]:
    roots = [out / f"host{n}" for n in range(ingesters)]
    rng = random.Random(0)
    for index in range(jobs):
        job = generate.make_job(index, steps, gpus, rng)
        folder = roots[index % ingesters] / job["job_id"]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "progress.json"
        path.write_text(json.dumps(job))
        os.utime(path, (time.time() - 3600, time.time() - 3600))  # not being written
    return roots


def upgrade(db: str | Path) -> None:
    subprocess.run([*CLI, "db", "upgrade", "--db", str(db)], env=ENV, check=True, capture_output=True)


def duckdb_round(roots: list[Path], scratch: Path, prebuilt: bool) -> tuple[float, Path]:
    warehouse = scratch / "duck.duckdb"
    if prebuilt:
        upgrade(warehouse)
    began = time.monotonic()
    subprocess.run([*CLI, "ingest", "--quiet", "--db", str(warehouse), *map(str, roots)], env=ENV, check=True)
    return time.monotonic() - began, warehouse


def split_round(roots: list[Path], scratch: Path, prebuilt: bool) -> float:
    """The control: the same processes as the PostgreSQL round, each into a DuckDB file of its own
    (no stage, no publish): what splitting the work into one process per root costs by itself."""
    files = [scratch / f"split{n}.duckdb" for n in range(len(roots))]
    if prebuilt:
        for file in files:
            upgrade(file)
    began = time.monotonic()
    processes = [
        subprocess.Popen([*CLI, "ingest", "--quiet", "--db", str(file), str(root)], env=ENV)
        for file, root in zip(files, roots, strict=True)
    ]
    for process in processes:
        if process.wait() != 0:
            raise SystemExit(f"an ingest failed ({process.returncode})")
    return time.monotonic() - began


def hosts_round(roots: list[Path], scratch: Path, url: str) -> list[float]:
    """Each ingester alone, one after the other, into one database: each one's wall time is what
    it takes on a host of its own (the machine's cores its own; PostgreSQL busy with it alone)."""
    times = []
    for n, root in enumerate(roots):
        began = time.monotonic()
        command = [*CLI, "ingest", "--quiet", "--db", url, "--stage", str(scratch / f"alone{n}.duckdb"), str(root)]
        subprocess.run(command, env=ENV, check=True)
        times.append(time.monotonic() - began)
    return times


def postgres_round(
    roots: list[Path], scratch: Path, url: str, prebuilt: bool, phases: bool = False
) -> tuple[float, list[dict[str, object]]]:
    """The ingesters at once; with ``phases`` each through bench/pg_phases.py (its phases' CPU
    seconds under ``"phases"`` in its report)."""
    if prebuilt:
        upgrade(url)
        for n in range(len(roots)):
            upgrade(scratch / f"stage{n}.duckdb")
    began = time.monotonic()
    runs = [[sys.executable, str(REPO / "bench" / "pg_phases.py"), str(scratch / f"phases{n}.json")] if phases else CLI
            for n in range(len(roots))]  # fmt: skip
    processes = [
        subprocess.Popen(
            [*runs[n], "ingest", "--json", "--db", url, "--stage", str(scratch / f"stage{n}.duckdb"), str(root)],
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for n, root in enumerate(roots)
    ]
    reports = []
    for process in processes:
        out, err = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"an ingester failed ({process.returncode}): {err.strip()[-2000:]}")
        report = json.loads(out)
        reports.append({**report["published"], "stage_seconds": report["seconds"]})
    for n, report in enumerate(reports):
        if phases:
            report["phases"] = json.loads((scratch / f"phases{n}.json").read_text())
    return time.monotonic() - began, reports


def print_phases(reports: list[dict[str, object]]) -> None:
    """Each phase's CPU seconds, the ingesters' added up (and their backends' for the publish)."""
    total: dict[str, list[float]] = {}
    for report in reports:
        for name, (calls, _, cpu, server) in report["phases"].items():  # type: ignore[attr-defined]
            row = total.setdefault(name, [0, 0.0, 0.0])
            row[0], row[1], row[2] = row[0] + calls, row[1] + cpu, row[2] + server
    for name, (calls, cpu, server) in total.items():
        print(f"    {name:44s} {int(calls):3d} calls  ingesters {cpu:5.2f} CPU s" +
              (f", their backends {server:5.2f}" if server else ""))  # fmt: skip


def counts_duckdb(path: Path) -> dict[str, int]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in COUNTED}  # type: ignore[index]
    finally:
        con.close()


def counts_postgres(url: str) -> dict[str, int]:
    with psycopg.connect(url) as con:
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in COUNTED}  # type: ignore[index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--gpus", type=int, default=2)
    parser.add_argument("--ingesters", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1, help="measure each engine this many times (best kept)")
    parser.add_argument("--prebuilt", action="store_true", help="build every schema first, untimed")
    parser.add_argument(
        "--alone", action="store_true", help="also run each ingester alone, one after the other (a host each)"
    )
    parser.add_argument("--data", type=Path, help="where to write the jobs (default: a temporary folder)")
    parser.add_argument(
        "--phases", action="store_true", help="each ingester through bench/pg_phases.py: CPU seconds per phase"
    )
    args = parser.parse_args()
    bins = bin_dir()
    if bins is None:
        raise SystemExit("PostgreSQL is not installed (Debian's postgresql package: /usr/lib/postgresql/*/bin)")
    base = args.data or Path(tempfile.mkdtemp(prefix="runlytics-pg-ingest-"))
    roots = write_roots(base / "roots", args.jobs, args.steps, args.gpus, args.ingesters)
    server = PgServer(bins)
    duck_times, split_times, pg_times, alone_times = [], [], [], []
    try:
        for n in range(args.rounds):
            scratch = base / f"round{n}"
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir()
            cpu = children_cpu()
            seconds, warehouse = duckdb_round(roots, scratch, args.prebuilt)
            duck_times.append(seconds)
            duck_cpu, cpu = children_cpu() - cpu, children_cpu()
            split_times.append(split_round(roots, scratch, args.prebuilt))
            split_cpu = children_cpu() - cpu
            url = server.new_database()
            cpu, server_began = children_cpu(), server_cpu(server)
            seconds, reports = postgres_round(roots, scratch, url, args.prebuilt, args.phases)
            pg_cpu, pg_server_cpu = children_cpu() - cpu, server_cpu(server) - server_began
            pg_times.append(seconds)
            want, got = counts_duckdb(warehouse), counts_postgres(url)
            if want != got:
                raise SystemExit(f"PostgreSQL's rows differ from DuckDB's: {got} != {want}")
            if args.alone:
                alone_times.append(max(hosts_round(roots, scratch, server.new_database())))
                print(f"round {n}: each ingester alone, the slowest {alone_times[-1]:.1f} s")
            published = sum(int(r["jobs"]) for r in reports)  # type: ignore[call-overload]
            print(f"round {n}: DuckDB {duck_times[-1]:.1f} s, {args.ingesters} DuckDB files at once "
                  f"{split_times[-1]:.1f} s, PostgreSQL {pg_times[-1]:.1f} s "
                  f"({published} jobs published; stage {[r['stage_seconds'] for r in reports]} s, "
                  f"publish {[r['seconds'] for r in reports]} s); rows {got}")  # fmt: skip
            print(f"round {n}: load average {os.getloadavg()[0]:.2f}; CPU seconds: DuckDB {duck_cpu:.1f}, "
                  f"{args.ingesters} DuckDB files {split_cpu:.1f}, "
                  f"PostgreSQL ingesters {pg_cpu:.1f} + server {pg_server_cpu:.1f}; slow_vs_peers recomputed by "
                  f"{sum(1 for r in reports if r.get('peers_recomputed'))} of {len(reports)} ingesters")  # fmt: skip
            if args.phases:
                print_phases(reports)
    finally:
        server.stop()
        if args.data is None:
            shutil.rmtree(base, ignore_errors=True)
    duck, split, pg = min(duck_times), min(split_times), min(pg_times)
    size = f"{args.jobs:,} jobs x {args.steps} steps x {args.gpus} GPUs{', schemas prebuilt' if args.prebuilt else ''}"
    print()
    print(f"| {size} | wall time | vs DuckDB |")
    print("|---|---:|---:|")
    print(f"| one DuckDB ingest of every root | {duck:.1f} s | 1.00x |")
    print(f"| control: {args.ingesters} ingests at once, each its root into a DuckDB file of its own | "
          f"{split:.1f} s | {split / duck:.2f}x |")  # fmt: skip
    print(f"| {args.ingesters} ingesters at once into PostgreSQL (stage + publish) | {pg:.1f} s | {pg / duck:.2f}x |")
    if alone_times:
        alone = min(alone_times)
        print(f"| the slowest of the {args.ingesters} ingesters run alone, one after the other (a host each) | "
              f"{alone:.1f} s | {alone / duck:.2f}x |")  # fmt: skip
    print(f"\ntarget <= {TARGET}x: {'met' if pg / duck <= TARGET else 'NOT met'}")


if __name__ == "__main__":
    main()
