"""GPU samples whose strings hold a NUL character reach PostgreSQL (warehouse/pg_telemetry.py).

PostgreSQL's text holds no NUL, and a spool line may escape one (``\\u0000``) in any string. The
telemetry publish sends every string with U+FFFD in its place, as the jobs' publish does
(ingest/postgres.py, NUL_FREE): a sample with a NUL in its host, GPU UUID or job id no longer
fails every later publish of its stage (issue #18, review R2).
"""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from conftest import Lab

from runlytics.warehouse.postgres import SESSION_OPTIONS

TS = 1762423200.5
FIELDS = ("host", "gpu_uuid", "job_id")


@pytest.mark.parametrize("ingest_engine", ["postgresql"], indirect=True)  # PostgreSQL's publish
def test_a_nul_in_a_samples_strings_is_published_as_u_fffd(ingest_engine: object, tmp_path: Path) -> None:
    lab = Lab(tmp_path, ingest_engine)  # type: ignore[arg-type]
    lab.write_job("a", {"job_id": "a", "status": "running", "history": [{"step": 1, "loss": 1.0}]})
    spool = tmp_path / "spool"
    spool.mkdir()
    good = {
        "ts": TS,
        "host": "node-01",
        "job_id": "a",
        "gpu_index": 0,
        "gpu_uuid": "GPU-0",
        "utilization_percent": 50.0,
    }
    samples = [good]
    for n, field in enumerate(FIELDS, start=1):  # one sample per string with a NUL, each its own GPU
        bad = {**good, "ts": TS + n, "gpu_index": n, "gpu_uuid": f"GPU-{n}"}
        bad[field] = bad[field] + "\u0000x"
        samples.append(bad)
    (spool / "s.jsonl").write_text("".join(json.dumps(sample) + "\n" for sample in samples))
    assert lab.ingest(spool_root=spool, keep_raw_days=0).failed == 0  # the publish raised here before
    # a later run publishes too (a new job)
    lab.write_job("b", {"job_id": "b", "status": "running", "history": [{"step": 1, "loss": 1.0}]})
    lab.ingest(spool_root=spool, keep_raw_days=0)
    with psycopg.connect(lab.target().libpq_url, options=SESSION_OPTIONS) as pg:
        assert pg.execute("SELECT job_id FROM jobs ORDER BY 1").fetchall() == [("a",), ("b",)]
        got = pg.execute(f"SELECT {', '.join(FIELDS)} FROM gpu_samples ORDER BY ts").fetchall()
    want = [tuple(str(sample[f]).replace("\x00", "\ufffd") for f in FIELDS) for sample in samples]
    assert got == want
