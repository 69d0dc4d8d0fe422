"""`runlytics analytics`, `insights` (list, thresholds, set) and `export` on a PostgreSQL warehouse
(issue #18, item 1) print and write what they do on DuckDB.

The generated and real jobs of tests/test_postgres_views.py are ingested into DuckDB and copied
with `runlytics db copy`; then each command runs on both, and its output is compared whole
(export: the manifest, every CSV file's rows, every Parquet table's types and rows).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from pg_server import PgServer

from runlytics.cli import EXIT_OK, EXIT_QUERY, EXIT_USAGE, EXIT_WAREHOUSE, main
from runlytics.warehouse import insights, migrate
from tests.test_postgres_views import generated_warehouse

READ = "read_parquet($glob, hive_partitioning = true, hive_types_autocast = false)"


@pytest.fixture(scope="module")
def engines(pg_server: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    tmp = tmp_path_factory.mktemp("pg_cli")
    warehouse = generated_warehouse(tmp)
    url = pg_server.new_database()
    assert main(["db", "copy", "--db", str(warehouse), "--to", url]) == EXIT_OK
    yield str(warehouse), url


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(argv))
    return code, capsys.readouterr().out


def _same(engines: tuple[str, str], capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The command's exit code and stdout, equal on both engines; DuckDB's stdout."""
    duck, pg = (_run(capsys, *argv, "--db", name) for name in engines)
    assert pg == duck, argv
    return duck[1]


def _job_ids(engines: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> list[str]:
    fleet = json.loads(_same(engines, capsys, "insights", "--json", "--limit", "1000"))
    assert fleet["insights"]
    code, out = _run(capsys, "sql", "--db", engines[1], "--format", "json", "SELECT job_id FROM jobs ORDER BY job_id")
    assert code == EXIT_OK
    return [row["job_id"] for row in json.loads(out)]


def test_analytics_of_every_job(engines: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    ids = _job_ids(engines, capsys)
    assert len(ids) > 20
    with_gpus = 0
    for job_id in ids[::3]:  # the API's test compares every job's; here the command around it
        with_gpus += bool(json.loads(_same(engines, capsys, "analytics", job_id))["gpus"])
    assert with_gpus > 0
    assert _run(capsys, "analytics", "no-such-job", "--db", engines[1])[0] == EXIT_QUERY


def test_insights_lists(engines: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    fleet = _same(engines, capsys, "insights")
    assert fleet.startswith("insights as of ") and "loss_spike" in fleet
    _same(engines, capsys, "insights", "--json")
    _same(engines, capsys, "insights", "--limit", "5")  # "(more: …)"
    _same(engines, capsys, "insights", "--kind", "loss_spike", "--severity", "warning", "--json")
    _same(engines, capsys, "insights", "--status", "running")
    seen = 0
    for job_id in _job_ids(engines, capsys)[::4]:  # every job's: tests/test_postgres_api.py
        seen += len(json.loads(_same(engines, capsys, "insights", job_id, "--json"))["insights"])
        _same(engines, capsys, "insights", "--job", job_id)
    assert seen > 0
    assert _same(engines, capsys, "insights", "no-such-job") == ""  # exit 4 on both
    assert _run(capsys, "insights", "no-such-job", "--db", engines[1])[0] == EXIT_QUERY


def test_thresholds(engines: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    shown = json.loads(_same(engines, capsys, "insights", "thresholds", "--json"))
    assert shown == {name: float(value) for name, value in sorted(insights.DEFAULTS.items())}
    assert "loss_spike.mad_factor" in _same(engines, capsys, "insights", "thresholds")


def test_set_a_threshold(engines: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    before = json.loads(_same(engines, capsys, "insights", "--json", "--limit", "1000"))
    try:
        for name in engines:
            code, out = _run(capsys, "insights", "set", "gpu_idle.utilization", "90", "--db", name)
            assert (code, out) == (EXIT_OK, f"{name}: gpu_idle.utilization = 90; insights recomputed\n")
        after = json.loads(_same(engines, capsys, "insights", "--json", "--limit", "1000"))
        assert after["thresholds"]["gpu_idle.utilization"] == 90
        idle = [[i for i in answer["insights"] if i["kind"] == "gpu_idle"] for answer in (before, after)]
        assert len(idle[1]) > len(idle[0])  # recomputed with the higher threshold
        # a refused value writes nothing, on PostgreSQL as on DuckDB
        assert _run(capsys, "insights", "set", "loss_spike.mad_factor", "-1", "--db", engines[1])[0] == EXIT_USAGE
        assert _run(capsys, "insights", "set", "no.such", "1", "--db", engines[1])[0] == EXIT_USAGE
        _same(engines, capsys, "insights", "thresholds", "--json")
    finally:  # the module's warehouses as they were, for the other tests
        for name in engines:
            _run(capsys, "insights", "set", "gpu_idle.utilization", "10", "--db", name)
    assert json.loads(_same(engines, capsys, "insights", "--json", "--limit", "1000")) == before


def _exported(out: Path, fmt: str) -> dict[str, Any]:
    """An export's manifest (less its time) and every table's column types and rows, sorted."""
    manifest = json.loads((out / "manifest.json").read_text())
    manifest.pop("exported_at")
    tables: dict[str, Any] = {}
    con = duckdb.connect()
    for table, entry in manifest["tables"].items():
        if fmt == "csv":
            lines = (out / entry["path"]).read_text().splitlines()
            tables[table] = (lines[:1], sorted(lines[1:]))
        else:
            relation = con.sql(f"SELECT * FROM {READ}", params={"glob": str(out / entry["path"] / "**" / "*.parquet")})
            # repr: a NaN loss is equal to itself there
            tables[table] = (relation.columns, relation.types, sorted(repr(row) for row in relation.fetchall()))
    con.close()
    return {"manifest": manifest, "tables": tables}


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_export(engines: tuple[str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path, fmt: str) -> None:
    ids = _job_ids(engines, capsys)
    selections: list[list[str]] = [[], ["--jobs", ",".join(ids[:3] + ids[-2:])], ["--since", "2026-11-30T12:00:00Z"]]
    for n, chosen in enumerate(selections):
        outs = [tmp_path / f"{n}-duck", tmp_path / f"{n}-pg"]
        lines = []
        for name, out in zip(engines, outs, strict=True):
            code, said = _run(capsys, "export", str(out), "--format", fmt, *chosen, "--db", name)
            assert code == EXIT_OK, said
            lines.append(said.split(" in ")[0].removeprefix(str(out)))  # less the folder and the seconds
        assert lines[1] == lines[0]
        duck, pg = (_exported(out, fmt) for out in outs)
        assert pg == duck, chosen
        assert duck["manifest"]["jobs"] > 0
        assert n > 0 or duck["manifest"]["tables"]["gpu_samples"]["rows"] > 0
    assert _run(capsys, "export", str(tmp_path / "x"), "--jobs", "no-such-job", "--db", engines[1])[0] == EXIT_QUERY
    assert not (tmp_path / "x").exists()


def test_environment_names_the_warehouse(
    engines: tuple[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNLYTICS_DB", engines[1])
    code, out = _run(capsys, "insights", "thresholds", "--json")
    assert code == EXIT_OK and json.loads(out)["stall.factor"] == insights.DEFAULTS["stall.factor"]


def test_unreachable_or_unbuilt_database(
    engines: tuple[str, str], pg_server: PgServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    empty = pg_server.new_database()
    for url in ("postgresql://nobody@127.0.0.1:1/none", empty):
        for argv in (
            ["analytics", "run-1"],
            ["insights"],
            ["insights", "set", "stall.factor", "3"],
            ["export", str(tmp_path / "out")],
        ):
            capsys.readouterr()
            assert main([*argv, "--db", url]) == EXIT_WAREHOUSE, argv
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and ("cannot connect" in err or "no runlytics schema yet" in err), err
    assert not (tmp_path / "out").exists()


def test_the_ingest_line_counts_the_jobs_whose_insights_alone_it_published(
    pg_server: PgServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """It called them running: after ``insights set`` they are every job of the stage."""
    samples = Path(__file__).resolve().parent.parent / "samples" / "jobs"
    root, stage, url = tmp_path / "jobs", str(tmp_path / "stage.duckdb"), pg_server.new_database()
    root.mkdir()
    for name in ("llama-sft-001", "mistral-lora-002"):  # completed, running
        shutil.copytree(samples / name, root / name)
    ingest = ["ingest", str(root), "--db", url, "--stage", stage]
    assert main(["db", "upgrade", "--db", url]) == EXIT_OK
    code, out = _run(capsys, *ingest)
    assert code == EXIT_OK and ": published 2 jobs whole, the insights alone of 0 jobs, 1 run in " in out, out
    assert main(["insights", "set", "stall.factor", "3", "--db", url]) == EXIT_OK
    shutil.copytree(samples / "legacy-gpt2-003", root / "legacy-gpt2-003")
    code, out = _run(capsys, *ingest)
    assert code == EXIT_OK and ": published 1 job whole, the insights alone of 2 jobs, 1 run in " in out, out


def test_sql_refuses_a_database_at_another_revision_but_not_a_role_that_cannot_see_it(
    engines: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """It ran the query on any revision; a role with SELECT on the views alone still queries."""
    import psycopg

    url = engines[1]
    role = f"analyst_{os.getpid()}"
    with psycopg.connect(url, autocommit=True) as pg:
        try:
            for revision, said in (("0045", "schema at revision 0045"), ("9999", "written by a newer version")):
                pg.execute("UPDATE alembic_version SET version_num = %s", [revision])
                assert main(["sql", "SELECT 1", "--db", url]) == EXIT_WAREHOUSE
                assert said in capsys.readouterr().err
        finally:
            pg.execute("UPDATE alembic_version SET version_num = %s", [migrate.HEAD_REVISION])
        pg.execute(f'CREATE ROLE "{role}" LOGIN')
        try:
            pg.execute(f'GRANT SELECT ON job_results TO "{role}"')
            as_analyst = url.replace("postgresql://postgres@", f"postgresql://{role}@")
            code, out = _run(
                capsys, "sql", "SELECT count(*) AS n FROM job_results", "--db", as_analyst, "--format", "json"
            )
            assert code == EXIT_OK and json.loads(out)[0]["n"] > 0
        finally:
            pg.execute(f'DROP OWNED BY "{role}"')
            pg.execute(f'DROP ROLE "{role}"')
