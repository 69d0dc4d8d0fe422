"""The notebook API: ``runlytics.connect()`` and docs/notebook.ipynb, run from a fresh kernel."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from conftest import DEEP_ONLY

import runlytics
from runlytics.ingest.pipeline import ingest
from runlytics.warehouse import db, snapshots

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples" / "jobs"
NOTEBOOK = REPO / "docs" / "notebook.ipynb"


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("notebook") / "w.duckdb"
    ingest(path, [SAMPLES], wait=10)
    return path


def test_connect_reads_the_newest_snapshot_as_pandas_polars_and_arrow(warehouse: Path) -> None:
    con = runlytics.connect(warehouse)
    try:
        # the connection is on a published copy, not on the file ingest writes
        opened = "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
        assert con.execute(opened).fetchall() == [(str(snapshots.latest(warehouse)),)]
        query = "SELECT job_id, overall_score FROM job_analytics ORDER BY job_id"
        frame = con.sql(query).df()
        assert list(frame["job_id"]) == ["legacy-gpt2-003", "llama-sft-001", "mistral-lora-002"]
        # mistral-lora-002: (91.8 % over its six readings + 100 × 26.667 / 26.7 samples/s) / 2
        assert list(frame["overall_score"].round(2)) == [88.5, 91.25, 95.84]
        assert con.sql(query).pl()["job_id"].to_list() == list(frame["job_id"])
        assert con.sql(query).arrow().read_all().column("job_id").to_pylist() == list(frame["job_id"])
        with pytest.raises(Exception, match="read-only"):
            con.execute("DELETE FROM jobs")
    finally:
        con.close()


def test_a_notebook_holding_a_connection_never_blocks_ingest(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    ingest(path, [SAMPLES], wait=10)
    con = runlytics.connect(path)
    try:
        extra = tmp_path / "jobs" / "extra-004"
        extra.mkdir(parents=True)
        (extra / "progress.json").write_text('{"status": "completed", "history": [{"step": 1, "loss": 1.5}]}')
        ingest(path, [SAMPLES, tmp_path / "jobs"], wait=2)  # a held lock would fail it after 2 s
        # the open connection still reads its snapshot; a new one sees the new job
        assert con.execute("SELECT count(*) FROM jobs").fetchall() == [(3,)]
    finally:
        con.close()
    with runlytics.connect(path) as fresh:
        assert fresh.execute("SELECT loss FROM steps WHERE job_id = 'extra-004'").fetchall() == [(1.5,)]


def test_connect_defaults_to_runlytics_db(warehouse: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(db.ENV_DB, str(warehouse))
    con = runlytics.connect()
    try:
        assert con.execute("SELECT count(*) FROM jobs").fetchall() == [(3,)]
    finally:
        con.close()


def test_connect_to_a_missing_warehouse_says_so_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "w.duckdb"
    with pytest.raises(db.WarehouseError, match="no warehouse at"):
        runlytics.connect(missing)
    assert not missing.parent.exists()
    with pytest.raises(db.WarehouseError, match="no warehouse at"):
        runlytics.connect(tmp_path / "w.duckdb")
    assert list(tmp_path.iterdir()) == []


def test_connect_to_a_duckdb_file_that_is_not_a_warehouse(tmp_path: Path) -> None:
    other = tmp_path / "other.duckdb"
    duckdb.connect(str(other)).close()
    with pytest.raises(db.WarehouseError, match="not a runlytics warehouse"):
        runlytics.connect(other)


def test_importing_runlytics_imports_no_duckdb() -> None:
    probe = "import sys, runlytics, runlytics.writer; print(sorted({'duckdb', 'fastapi', 'pandas'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@DEEP_ONLY  # its reads in every run: the tests above, of the same calls (session 26, CI's time)
def test_the_notebook_runs_from_a_fresh_kernel(warehouse: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # kept stripped in the repository: what readers see comes from their own run
    assert all(not cell.get("outputs") and not cell.get("execution_count") for cell in notebook.cells)
    # the kernel is a subprocess: it inherits this environment
    monkeypatch.setenv(db.ENV_DB, str(warehouse))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the inline backend puts the figures in the outputs
    nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3").execute()
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    figures = [c for c in code if any("image/png" in o.get("data", {}) for o in c.outputs)]
    assert len(figures) == 2  # the loss curves and the GPU hours per week
    text = "\n".join(o["data"]["text/plain"] for c in code for o in c.outputs if "text/plain" in o.get("data", {}))
    assert "llama-sft-001" in text and "mistral-lora-002" in text
    # by hand from samples/jobs: legacy-gpt2-003 ran 300 s on 1 GPU (week of 26 Oct); llama-sft-001
    # 25 s on 1 GPU and mistral-lora-002 (running) 360 s so far on 2 GPUs: 745 GPU-seconds
    assert "2026-10-26   0.083333" in text
    assert "2026-11-02   0.206944" in text
