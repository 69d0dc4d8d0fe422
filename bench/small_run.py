"""Benchmark: a small incremental ingest, a cron run that finds one new job beside those stored.

    python bench/small_run.py [--runs 8] [--stored 3]

A warehouse holds the sample jobs (samples/jobs) and ``--stored`` - 3 copies more; each of
``--runs`` runs then adds one new job (a copy of llama-sft-001 under a new job_id) and ingests,
in this process (Python's start and imports left out: they are the same for any run). Prints
the median wall and CPU seconds of a run. Such a run's cost is mostly fixed (DuckDB binding and
optimising the stage's and refresh's statements): docs/benchmark.md, "A small incremental run".
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from runlytics.ingest.pipeline import ingest

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples" / "jobs"


def _add_job(root: Path, job_id: str) -> None:
    folder = root / job_id
    shutil.copytree(SAMPLES / "llama-sft-001", folder)
    doc = json.loads((folder / "progress.json").read_text())
    doc["job_id"] = job_id
    path = folder / "progress.json"
    path.write_text(json.dumps(doc))
    # written a minute ago, as a cron run finds it: a file changed within two seconds of a run is
    # read again by the next one (ingest/ledger.py), which would make each run read two
    old = time.time() - 60
    for item in [folder, *folder.rglob("*")]:
        os.utime(item, (old, old))


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=8, help="incremental runs to time (default 8)")
    parser.add_argument("--stored", type=int, default=3, help="jobs stored before the runs (at least 3)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root, db_path = Path(tmp) / "jobs", Path(tmp) / "w.duckdb"
        shutil.copytree(SAMPLES, root)
        for n in range(max(0, args.stored - 3)):
            _add_job(root, f"stored-{n}")
        ingest(db_path, [root])
        walls, cpus = [], []
        for n in range(args.runs):
            _add_job(root, f"new-{n}")
            wall, cpu = time.perf_counter(), _cpu()
            summary = ingest(db_path, [root])
            walls.append(time.perf_counter() - wall)
            cpus.append(_cpu() - cpu)
            assert (summary.ingested, summary.failed) == (1, 0), summary
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    print(f"small incremental run: {wall:.3f} s wall, {cpu:.3f} s CPU (median of {args.runs})")


if __name__ == "__main__":
    main()
