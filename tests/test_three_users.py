"""Three users at once: cron ingests, the API serves, an analyst runs SQL — nobody waits or fails.

For about 6 s (26 s under the deep profile) a loop appends steps to some of 20 jobs' progress.json
(40 under the deep profile; and adds a job now and then) and runs ``runlytics ingest`` every ~1 s
(~2 s: as soon as the last one ended, on a loaded machine), 3 times at least (4); meanwhile
``runlytics serve`` answers threads that hammer it over loopback, and ``runlytics sql`` runs every
~1 s. Every ingest must exit 0, every API answer must be 200, every ``sql`` must exit 0;
afterwards both show the last data.
Run with ``pytest -s`` to see the counts.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from depth import examples, seconds
from servers import free_port

from bench import generate

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "runlytics"]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}

JOBS = examples(20, 40)
STEPS = 200
GPUS = 2
# seconds of concurrent work, an ingest every INGEST_PERIOD (or as soon as the last one ended), and
# at least MIN_INGESTS of them under the readers however slow the machine; the deep profile runs
# longer, over twice the jobs (docs/testing.md, "Deep runs")
DURATION = seconds(6.0, 26.0)
INGEST_PERIOD = seconds(1.0, 2.0)
MIN_INGESTS = examples(3, 4)
SQL_PERIOD = 1.0
MAX_INGESTS = 20
MAX_SQL_RUNS = 40
HAMMER_THREADS = 3
MAX_REQUESTS_PER_THREAD = 20_000
JOBS_PER_ROUND = 5
NEW_JOB_EVERY = 3  # rounds
SUBPROCESS_TIMEOUT = 120


def _runlytics(*args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    result = subprocess.run(
        [*CLI, *args], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT
    )
    return result, time.monotonic() - start


def _write(path: Path, doc: dict[str, Any]) -> None:
    """Write as a trainer that replaces its file would: a whole new file, renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


def _append_steps(doc: dict[str, Any], count: int, rng: random.Random) -> None:
    """Extend the history by ``count`` steps that continue the last one."""
    last = doc["history"][-1]
    t = datetime.fromisoformat(last["timestamp"])
    loss = last["loss"]
    for _ in range(count):
        it = rng.uniform(0.2, 0.6)
        t += timedelta(seconds=it)
        loss = max(0.05, loss * rng.uniform(0.995, 1.0005))
        entry = {**last, "step": last["step"] + 1, "timestamp": t.isoformat(), "loss": round(loss, 5)}
        entry["iteration_time"] = round(it, 4)
        entry["gpus"] = [{**g, "utilization_percent": round(rng.uniform(60, 100), 1)} for g in last["gpus"]]
        doc["history"].append(entry)
        last = entry
    doc["current_step"] = doc["total_steps"] = last["step"]
    doc["config"]["max_steps"] = last["step"]
    doc["updated_at"] = t.isoformat()
    doc.pop("ended_at", None)
    doc["status"] = "running"


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.failures: list[str] = []
        self.summary_regressions = 0
        self.sql_runs = 0
        self.sql_failures: list[str] = []
        self.sql_counts: list[int] = []
        self.ingests: list[float] = []
        self.ingest_failures: list[str] = []


def _hammer(base: str, job_ids: list[str], stop: threading.Event, deadline: float, seed: int, stats: Stats) -> None:
    rng = random.Random(seed)
    paths = [
        lambda: f"/api/training/{rng.choice(job_ids)}/analytics",
        lambda: "/api/training/analytics/summary",
        lambda: "/api/training/jobs?limit=20",
        lambda: f"/api/training/{rng.choice(job_ids)}/steps?limit=100",
    ]
    seen_jobs = 0
    with httpx.Client(base_url=base, timeout=30.0) as client:
        for i in range(MAX_REQUESTS_PER_THREAD):
            if stop.is_set() or time.monotonic() > deadline:
                break
            path = paths[i % len(paths)]()
            try:
                response = client.get(path)
                ok = response.status_code == 200
                problem = f"{path}: {response.status_code} {response.text[:300]}"
                if ok and path.endswith("/summary"):
                    total = response.json()["total_jobs"]
                    if total < seen_jobs:  # a reader must never go back to older data
                        with stats.lock:
                            stats.summary_regressions += 1
                    seen_jobs = max(seen_jobs, total)
            except httpx.HTTPError as error:
                ok, problem = False, f"{path}: {type(error).__name__}: {error}"
            with stats.lock:
                stats.requests += 1
                if not ok:
                    stats.failures.append(problem)


def _analyst(db: Path, stop: threading.Event, deadline: float, stats: Stats) -> None:
    for _ in range(MAX_SQL_RUNS):
        if stop.is_set() or time.monotonic() > deadline:
            break
        started = time.monotonic()
        try:
            result, _ = _runlytics("sql", "SELECT count(*) AS n FROM steps", "--db", str(db), "--format", "json")
        except subprocess.TimeoutExpired as error:
            with stats.lock:
                stats.sql_runs += 1
                stats.sql_failures.append(f"timed out: {error}")
            continue
        with stats.lock:
            stats.sql_runs += 1
            if result.returncode != 0:
                stats.sql_failures.append(f"exit {result.returncode}: {result.stderr[-500:]}")
            else:
                stats.sql_counts.append(json.loads(result.stdout)[0]["n"])
        stop.wait(max(0.0, SQL_PERIOD - (time.monotonic() - started)))


def _cron(root: Path, db: Path, docs: dict[str, dict[str, Any]], deadline: float, stats: Stats) -> None:
    """Every ~2 s: some jobs grow (a new job now and then), then `runlytics ingest` runs."""
    rng = random.Random(7)
    for round_no in range(1, MAX_INGESTS + 1):
        started = time.monotonic()
        for job_id in rng.sample(sorted(docs), JOBS_PER_ROUND):
            _append_steps(docs[job_id], rng.randint(5, 30), rng)
            _write(root / job_id / "progress.json", docs[job_id])
        if round_no % NEW_JOB_EVERY == 0:
            new = generate.make_job(len(docs), STEPS, GPUS, rng)
            docs[new["job_id"]] = new
            _write(root / new["job_id"] / "progress.json", new)
        try:
            result, seconds = _runlytics("ingest", str(root), "--db", str(db), "--quiet")
            stats.ingests.append(seconds)
            if result.returncode != 0:
                stats.ingest_failures.append(f"exit {result.returncode}: {result.stdout[-300:]}{result.stderr[-500:]}")
        except subprocess.TimeoutExpired as error:
            stats.ingest_failures.append(f"timed out: {error}")
        if time.monotonic() >= deadline and round_no >= MIN_INGESTS:
            break
        time.sleep(max(0.0, INGEST_PERIOD - (time.monotonic() - started)))


def _wait_ready(base: str, server: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, f"runlytics serve exited with {server.returncode}"
        try:
            if httpx.get(base + "/readyz", timeout=5.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"runlytics serve not ready after {timeout:g} s")


def test_ingest_api_and_sql_at_once(tmp_path: Path) -> None:
    root = tmp_path / "jobs"
    db = tmp_path / "warehouse.duckdb"
    subprocess.run(
        [sys.executable, str(REPO / "bench" / "generate.py"), str(root), "--jobs", str(JOBS), "--steps", str(STEPS),
         "--gpus", str(GPUS)],
        check=True, capture_output=True, timeout=SUBPROCESS_TIMEOUT,
    )  # fmt: skip
    docs = {p.parent.name: json.loads(p.read_text()) for p in sorted(root.glob("*/progress.json"))}
    assert len(docs) == JOBS
    first, _ = _runlytics("ingest", str(root), "--db", str(db), "--quiet")
    assert first.returncode == 0, first.stderr

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server_log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [*CLI, "serve", "--db", str(db), "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO, env=ENV, stdout=server_log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    stats = Stats()
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        _wait_ready(base, server)
        deadline = time.monotonic() + DURATION
        hard_deadline = deadline + 60  # readers stop by then even if the main loop overran
        job_ids = sorted(docs)  # only jobs present from the start: no 404 by design
        threads = [
            threading.Thread(target=_hammer, args=(base, job_ids, stop, hard_deadline, n, stats), daemon=True)
            for n in range(HAMMER_THREADS)
        ]
        threads.append(threading.Thread(target=_analyst, args=(db, stop, hard_deadline, stats), daemon=True))
        for t in threads:
            t.start()

        _cron(root, db, docs, deadline, stats)
        stop.set()
        for t in threads:
            t.join(timeout=SUBPROCESS_TIMEOUT)
        assert not any(t.is_alive() for t in threads), "a reader thread did not stop"

        expected_steps = sum(len(d["history"]) for d in docs.values())
        print(
            f"\nthree users: {stats.requests} API requests, {len(stats.failures)} failed; "
            f"{stats.sql_runs} sql runs, {len(stats.sql_failures)} failed; "
            f"{len(stats.ingests)} ingests, {len(stats.ingest_failures)} failed, "
            f"max {max(stats.ingests, default=0):.2f} s, mean {sum(stats.ingests) / max(len(stats.ingests), 1):.2f} s; "
            f"{stats.summary_regressions} summary regressions; {len(docs)} jobs, {expected_steps} steps"
        )
        assert stats.requests > 0 and stats.sql_runs > 0 and stats.ingests
        assert not stats.ingest_failures, stats.ingest_failures[:5]
        assert not stats.failures, f"{len(stats.failures)} of {stats.requests} requests failed: {stats.failures[:5]}"
        assert not stats.sql_failures, stats.sql_failures[:5]
        assert stats.sql_counts == sorted(stats.sql_counts), "runlytics sql went back to older data"
        assert stats.summary_regressions == 0, "the API went back to older data"

        # After the last ingest, the API and `runlytics sql` show what was written last.
        summary = httpx.get(base + "/api/training/analytics/summary", timeout=30.0)
        assert summary.status_code == 200, summary.text
        assert summary.json()["total_jobs"] == len(docs)
        for job_id, doc in docs.items():
            answer = httpx.get(f"{base}/api/training/{job_id}/analytics", timeout=30.0)
            assert answer.status_code == 200, answer.text
            assert answer.json()["performance"]["total_iterations"] == doc["history"][-1]["step"], job_id
        sql, _ = _runlytics("sql", "SELECT count(*) AS n FROM steps", "--db", str(db), "--format", "json")
        assert sql.returncode == 0, sql.stderr
        assert json.loads(sql.stdout)[0]["n"] == expected_steps
    finally:
        stop.set()
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)
        server_log.close()
