"""The readers on PostgreSQL (issue #18, item 3): the API, `runlytics sql` and `runlytics status`
give for a PostgreSQL copy of a warehouse the answers they give for the DuckDB warehouse itself.

Generated jobs (tests/test_postgres_views.py's: every insight anomaly, GPU samples with power,
real trainer files) are ingested into DuckDB and copied with ``runlytics db copy``
(warehouse/pg_copy.py); then the same requests go to an app over each, and the JSON answers are
compared whole.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pg_server import PgServer

from runlytics.api.app import create_app
from runlytics.cli import EXIT_OK, EXIT_QUERY, EXIT_USAGE, EXIT_WAREHOUSE, main
from runlytics.warehouse import db, health, pg_copy, pg_reader, snapshots
from tests.test_postgres_views import generated_warehouse


@pytest.fixture(scope="module")
def engines(pg_server: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    warehouse = generated_warehouse(tmp_path_factory.mktemp("pg_api"))
    url = pg_server.new_database()
    pg_copy.copy(warehouse, db.PostgresUrl(url))
    yield warehouse, url


@pytest.fixture(scope="module")
def clients(engines: tuple[Path, str]) -> tuple[TestClient, TestClient]:
    warehouse, url = engines
    return TestClient(create_app(warehouse)), TestClient(create_app(db.PostgresUrl(url)))


def _both(clients: tuple[TestClient, TestClient], url: str) -> Any:
    duck, pg = (c.get(url) for c in clients)
    assert (pg.status_code, url) == (duck.status_code, url)
    assert pg.json() == duck.json(), url
    return duck.json()


def _job_ids(clients: tuple[TestClient, TestClient]) -> list[str]:
    page = clients[0].get("/api/training/jobs", params={"limit": 1000}).json()
    return [row["job_id"] for row in page["jobs"]]


def test_job_list_pages_and_sorts(clients: tuple[TestClient, TestClient]) -> None:
    first = _both(clients, "/api/training/jobs")
    assert first["total"] > 20
    for sort in ("-start_time", "job_id", "-final_loss", "overall_score", "model_name", "-end_time"):
        url = f"/api/training/jobs?sort={sort}&limit=7"
        while url:  # every page, by the cursors each engine hands out
            url = _both(clients, url)["next"]
    _both(clients, "/api/training/jobs?status=completed&id_prefix=clean")
    _both(clients, "/api/training/jobs?since=2026-11-30T00:00:00Z&until=2026-12-02T00:00:00%2B01:00")


def test_job_analytics_of_every_job(clients: tuple[TestClient, TestClient]) -> None:
    ids = _job_ids(clients)
    with_gpus = 0
    for job_id in ids:
        answer = _both(clients, f"/api/training/{job_id}/analytics")
        with_gpus += bool(answer["gpus"])
        _both(clients, f"/api/training/{job_id}")
    assert with_gpus > 0  # the per-GPU breakdown (view job_gpus) was compared too
    _both(clients, "/api/training/no-such-job/analytics")  # 404 on both


def test_summary_filters_and_pages(clients: tuple[TestClient, TestClient]) -> None:
    answer = _both(clients, "/api/training/analytics/summary")
    assert answer["total_jobs"] > 20
    _both(clients, "/api/training/analytics/summary?status=completed")
    _both(clients, "/api/training/analytics/summary?model=no-such-model")
    url = "/api/training/analytics/summary?limit=3"
    while url:
        url = _both(clients, url)["next"]
    _both(clients, "/api/training/analytics/summary?limit=4&offset=5")


def test_compare(clients: tuple[TestClient, TestClient]) -> None:
    ids = _job_ids(clients)
    _both(clients, f"/api/training/analytics/compare?job_ids={','.join(ids[:50])}")
    _both(clients, f"/api/training/analytics/compare?job_ids={ids[3]},{ids[1]},{ids[3]}")
    _both(clients, f"/api/training/analytics/compare?job_ids={ids[0]},missing-one")  # 404


def test_fleet_trends(clients: tuple[TestClient, TestClient]) -> None:
    answer = _both(clients, "/api/training/analytics/fleet")
    assert answer["throughput_histogram"] and answer["utilization_over_time"] and answer["gpu_hours"]
    _both(clients, "/api/training/analytics/fleet?bins=1&buckets=7&status=completed")
    _both(clients, "/api/training/analytics/fleet?model=no-such-model")


def test_steps_checkpoints_and_ingest_runs(clients: tuple[TestClient, TestClient]) -> None:
    for job_id in _job_ids(clients)[:5]:
        _both(clients, f"/api/training/{job_id}/steps?limit=50")
        _both(clients, f"/api/training/{job_id}/checkpoints")
    _both(clients, "/api/ingest/runs")


def test_metrics_of_every_job(clients: tuple[TestClient, TestClient]) -> None:
    histories = 0
    for job_id in _job_ids(clients):
        for metric in _both(clients, f"/api/training/{job_id}/metrics")["metrics"][:4]:
            url = f"/api/training/{job_id}/metrics/history?name={metric['name']}&limit=100"
            while url:  # every page
                url = _both(clients, url)["next"]
            histories += 1
    assert histories > 5
    _both(clients, "/api/training/tinyllama-sft/metrics/history?name=no-such-metric")  # 404


def test_live_figures_of_metrics(engines: tuple[Path, str], clients: tuple[TestClient, TestClient]) -> None:
    warehouse, url = engines
    duck, pg = snapshots.connect_latest(warehouse), pg_reader.Cursor(pg_reader.connect(db.PostgresUrl(url)))
    try:
        every = _job_ids(clients)  # not only the running ones: the GPU samples' branch too
        assert health.running_job_ids(pg) == health.running_job_ids(duck) != []
        assert health.jobs_by_status(pg) == health.jobs_by_status(duck)
        assert health.running_jobs(pg, every) == health.running_jobs(duck, every)
        gpus = health.running_gpus(duck, every)
        assert health.running_gpus(pg, every) == gpus and any(g["sample_epoch"] for g in gpus)
    finally:
        duck.close()
        pg.close()
    # /metrics: the same lines, but the snapshot's time and the heartbeat's, which PostgreSQL lacks
    duck_lines, pg_lines = (set(c.get("/metrics").text.splitlines()) for c in clients)
    assert pg_lines < duck_lines
    assert all("snapshot" in line or "ingest" in line for line in duck_lines - pg_lines)


def test_reads_go_to_the_replica(engines: tuple[Path, str]) -> None:
    _, url = engines
    # the primary is unreachable: every read is the replica's
    app = create_app(db.PostgresUrl("postgresql://nobody@127.0.0.1:1/none"), read_db=db.PostgresUrl(url))
    answer = TestClient(app).get("/api/training/analytics/summary")
    assert answer.status_code == 200 and answer.json()["total_jobs"] > 20
    down = TestClient(create_app(db.PostgresUrl("postgresql://nobody@127.0.0.1:1/none")))
    assert down.get("/api/training/analytics/summary").status_code == 503


def test_sql_on_postgres(engines: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    warehouse, url = engines
    query = "SELECT job_id, final_loss, start_time FROM job_results ORDER BY job_id LIMIT 4"
    # DuckDB's `sql` locks the settings of the process's instance of the snapshot: a process of its own
    ran = subprocess.run(
        [sys.executable, "-m", "runlytics", "sql", "--db", str(warehouse), "--format", "json", query],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    duck = json.loads(ran.stdout)
    assert main(["sql", "--db", url, "--format", "json", query]) == EXIT_OK
    assert json.loads(capsys.readouterr().out) == duck
    assert main(["sql", "--db", url, "--format", "csv", "SELECT 1 AS a, 'x%' AS b"]) == EXIT_OK
    assert capsys.readouterr().out == "a,b\n1,x%\n"


@pytest.mark.parametrize(
    ("query", "said"),
    [
        ("SELECT 1; DELETE FROM jobs", "refused: several statements"),
        ("SELECT 1; COMMIT; SET default_transaction_read_only = off; DELETE FROM jobs", "several statements"),
        ("DELETE FROM jobs", "refused: DELETE"),  # no SELECT (audit 18), as on DuckDB
        ("WITH d AS (DELETE FROM jobs RETURNING 1) SELECT count(*) FROM d", "in a read-only transaction"),
        ("SELECT pg_sleep(5)", "stopped after 0.2 s (--timeout)"),
        ("SELEC 1", "syntax error"),
    ],
)
def test_sql_on_postgres_refuses_and_fails_in_one_line(
    engines: tuple[Path, str], capsys: pytest.CaptureFixture[str], query: str, said: str
) -> None:
    _, url = engines
    assert main(["sql", "--db", url, "--timeout", "0.2", query]) == EXIT_QUERY
    err = capsys.readouterr().err
    assert said in err and err.count("\n") == 1, err
    assert main(["sql", "--db", url, "--format", "csv", "SELECT count(*) AS n FROM jobs"]) == EXIT_OK
    assert int(capsys.readouterr().out.split()[1]) > 20  # nothing was deleted


def test_sql_allow_read_is_duckdb_only(engines: tuple[Path, str], tmp_path: Path) -> None:
    assert main(["sql", "--db", engines[1], "--allow-read", str(tmp_path), "SELECT 1"]) == EXIT_USAGE


def test_serve_checks_its_arguments_and_the_database(engines: tuple[Path, str]) -> None:
    warehouse, url = engines
    assert main(["serve", "--db", str(warehouse), "--read-db", url]) == EXIT_USAGE  # a replica of DuckDB?
    assert main(["serve", "--db", url, "--read-db", str(warehouse)]) == EXIT_USAGE
    # unreachable: said before listening
    assert main(["serve", "--db", "postgresql://nobody@127.0.0.1:1/none"]) == EXIT_WAREHOUSE


def test_status_on_postgres(engines: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    warehouse, url = engines
    assert main(["status", "--json", "--db", str(warehouse)]) == EXIT_OK
    duck = json.loads(capsys.readouterr().out)
    assert main(["status", "--json", "--db", url]) == EXIT_OK
    pg = json.loads(capsys.readouterr().out)
    same = ("schema_revision", "jobs", "step_rows", "gpu_samples", "files", "recent_runs", "problem_files")
    assert {k: pg[k] for k in same} == {k: duck[k] for k in same}
    assert pg["warning_files"] == duck["warning_files"]
    assert pg["warehouse"] == url and pg["snapshot"] is None and pg["size_bytes"] > 0
    assert main(["status", "--db", url]) == EXIT_OK
    assert f"warehouse   {url}" in capsys.readouterr().out


def test_gpu_readings_of_every_job(clients: tuple[TestClient, TestClient]) -> None:
    sources = set()
    for job_id in _job_ids(clients):
        url = f"/api/training/{job_id}/gpus?limit=250"
        while url:  # every page, by the cursors each engine hands out (250 rows: a few pages a job)
            answer = _both(clients, url)
            sources.add(answer["source"])
            url = answer["next"]
        _both(clients, f"/api/training/{job_id}/gpus?gpu=1&limit=1000")
    assert sources == {"gpu_samples", "step_readings"}


def test_downsampled_steps(clients: tuple[TestClient, TestClient]) -> None:
    # of equal extremes in a bucket both engines keep the smallest step (docs/decisions.md)
    kept = 0
    for n, job_id in enumerate(_job_ids(clients)):
        kept += len(_both(clients, f"/api/training/{job_id}/steps?max_points=10&fields=ts,loss")["steps"])
        kept += len(_both(clients, f"/api/training/{job_id}/steps?max_points=60")["steps"])  # every field
        if n % 3 == 0:  # the rarer shapes on every third job (each request ~0.1 s on the two engines)
            kept += len(_both(clients, f"/api/training/{job_id}/steps?max_points=500&fields=ts,loss")["steps"])
            _both(clients, f"/api/training/{job_id}/steps?max_points=10&fields=loss,eval_loss&from_step=3&to_step=40")
    assert kept > 100
    _both(clients, "/api/training/tinyllama-sft/steps?max_points=12")  # too few for 10 fields: 422 on both


def test_insights(clients: tuple[TestClient, TestClient]) -> None:
    seen = 0
    for job_id in _job_ids(clients):
        seen += len(_both(clients, f"/api/training/{job_id}/insights")["insights"])
        _both(clients, f"/api/training/{job_id}/insights?severity=warning")
    assert seen > 10
    url = "/api/training/insights?limit=7"
    while url:  # every page, by the cursors each engine hands out
        url = _both(clients, url)["next"]
    _both(clients, "/api/training/insights?kind=loss_spike&status=completed")
    _both(clients, "/api/training/insights?kind=no-such-kind")  # 422
    _both(clients, "/api/training/no-such-job/insights")  # 404


def test_export_of_steps(clients: tuple[TestClient, TestClient], tmp_path: Path) -> None:
    import duckdb

    ids = _job_ids(clients)
    for chosen in (ids[:1], ids[:40], ids):
        query = ",".join(chosen)
        duck, pg = (c.get(f"/api/training/export/steps?job_ids={query}") for c in clients)
        assert (pg.status_code, pg.content) == (duck.status_code, duck.content)  # CSV: byte for byte
        assert duck.status_code == 200 and duck.content.count(b"\n") > len(chosen)
        duck, pg = (c.get(f"/api/training/export/steps?job_ids={query}&format=parquet") for c in clients)
        assert pg.status_code == duck.status_code == 200
        read = []
        for name, answer in (("duck", duck), ("pg", pg)):
            (tmp_path / f"{name}.parquet").write_bytes(answer.content)
            read.append(duckdb.sql(f"SELECT * FROM '{tmp_path / name}.parquet'"))
        # repr: a NaN loss is equal to itself there
        assert read[0].types == read[1].types and repr(read[0].fetchall()) == repr(read[1].fetchall())
    _both(clients, f"/api/training/export/steps?job_ids={ids[0]},no-such-job")  # 404


def test_downsampled_gpu_readings(clients: tuple[TestClient, TestClient]) -> None:
    seen = set()
    for n, job_id in enumerate(_job_ids(clients)):
        for points in (10, 1000) if n % 3 else (10, 40, 1000):
            answer = _both(clients, f"/api/training/{job_id}/gpus?max_points={points}")
            seen.add((answer["source"], answer["resolution"]))
        if n % 3 == 0:
            _both(clients, f"/api/training/{job_id}/gpus?max_points=20&gpu=0")
    # minute buckets of the rollups, samples with their extremes, readings logged with steps
    assert seen == {("gpu_samples", "minute"), ("gpu_samples", "sample"), ("step_readings", "sample")}


def test_downsampled_metric_points(engines: tuple[Path, str], clients: tuple[TestClient, TestClient]) -> None:
    from runlytics.warehouse import history, metric_history

    warehouse, url = engines
    duck, pg = snapshots.connect_latest(warehouse), pg_reader.Cursor(pg_reader.connect(db.PostgresUrl(url)))
    compared = 0
    try:
        for job_id in _job_ids(clients):
            for metric in clients[0].get(f"/api/training/{job_id}/metrics").json()["metrics"][:3]:
                # max_points 0: the buckets' rows; 10^6: the range whole (it fits)
                for most in (0, 10**6):
                    params = {"job_id": job_id, "name": metric["name"], "after": -(2**63), "to_step": None,
                              "buckets": 4, "max_points": most}  # fmt: skip
                    answers = [
                        con.execute(
                            history.downsampled_sql(
                                con, metric_history.POINTS_SOURCE, "ts, value", "ts, value", ["value"]
                            ),
                            params,
                        ).fetchall()
                        for con in (duck, pg)
                    ]
                    assert repr(answers[1]) == repr(answers[0]), (job_id, metric["name"], most)
                    compared += bool(answers[0])
    finally:
        duck.close()
        pg.close()
    assert compared > 5


def test_downsampled_metric_history_endpoint(clients: tuple[TestClient, TestClient]) -> None:
    for job_id in _job_ids(clients)[:10]:
        for metric in clients[0].get(f"/api/training/{job_id}/metrics").json()["metrics"][:2]:
            _both(clients, f"/api/training/{job_id}/metrics/history?name={metric['name']}&max_points=10")
