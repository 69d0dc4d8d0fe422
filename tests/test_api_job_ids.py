"""Lists of job ids holding commas (warehouse/job_lists.py): compare, export and ``export --jobs``.

A sweep folder named like Hydra's override_dirname (``bs=8,lr=1e-4``) is a job of that id
(inputs.md: the job directory's name when progress.json has no job_id); every list of ids must
be able to name it (audit G7: 404 "unknown job(s): bs=8, lr=1e-4" in every form).
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, Engine, Lab
from fastapi.testclient import TestClient

from runlytics.api.app import create_app

SWEEP = "bs=8,lr=1e-4"
JOBS = (SWEEP, "plain", "a", "b", "a,b")
COMPARE = "/api/training/analytics/compare"
EXPORT = "/api/training/export/steps"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    lab = Lab(tmp_path_factory.mktemp("ids"))
    for n, job in enumerate(JOBS):  # the sweep's id from its folder's name, the others from job_id
        doc: dict[str, Any] = {"status": "completed", "history": [{"step": 1, "iteration_time": 1.0, "samples": n + 1}]}
        lab.write_job(SWEEP if job == SWEEP else f"j{n}", doc if job == SWEEP else {"job_id": job, **doc})
    assert lab.ingest().ingested == len(JOBS)
    return lab


@pytest.fixture(scope="module")
def client(lab: Lab, module_engine: Engine) -> TestClient:
    return TestClient(create_app(module_engine.warehouse(lab.db), token=None))


def compared(client: TestClient, params: Any) -> list[str]:
    response = client.get(COMPARE, params=params)
    assert response.status_code == 200, response.text
    return [job["job_id"] for job in response.json()["jobs"]]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"job_ids": SWEEP}, [SWEEP]),
        ({"job_ids": f"{SWEEP},plain"}, [SWEEP, "plain"]),
        ({"job_ids": f"plain,{SWEEP}"}, ["plain", SWEEP]),
        ([("job_ids", SWEEP), ("job_ids", "plain")], [SWEEP, "plain"]),
        ({"job_ids": f'"{SWEEP}",plain'}, [SWEEP, "plain"]),
        ({"job_ids": "a,b"}, ["a", "b"]),  # a field that names a job is never joined
        ({"job_ids": '"a,b"'}, ["a,b"]),
        ({"job_ids": '"a,b",a, "b"'}, ["a,b", "a", "b"]),
        ({"job_ids": f"{SWEEP},{SWEEP}"}, [SWEEP]),
    ],
    ids=["alone", "first", "last", "repeated", "quoted", "split", "quoted-pair", "mixed", "twice"],
)
def test_compare_names_jobs_whose_ids_hold_commas(client: TestClient, params: Any, expected: list[str]) -> None:
    assert compared(client, params) == expected


def test_an_unknown_id_beside_one_with_a_comma_is_named(client: TestClient) -> None:
    response = client.get(COMPARE, params={"job_ids": f"nope,{SWEEP}"})
    assert (
        response.status_code == 404 and "nope" in response.json()["detail"] and "lr=" not in response.json()["detail"]
    )


def test_the_export_names_a_job_whose_id_holds_a_comma(client: TestClient) -> None:
    response = client.get(EXPORT, params={"job_ids": f"{SWEEP},plain"})
    assert response.status_code == 200, response.text
    rows = list(csv.DictReader(io.StringIO(response.text)))
    # one step each; the sweep is the first job (1 sample), plain the second (2)
    assert sorted((r["job_id"], r["samples"]) for r in rows) == [(SWEEP, "1"), ("plain", "2")]


def test_export_jobs_on_the_command_line(lab: Lab, tmp_path: Path) -> None:
    # DuckDB only: the command line's --jobs goes through the same resolution as the API's
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "runlytics", "export", str(out), "--db", str(lab.db), "--jobs", f"{SWEEP},plain",
         "--format", "csv", "--quiet"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = "".join(path.read_text() for path in sorted(out.rglob("*.csv")))
    assert SWEEP in text and "plain" in text and "\na," not in text
