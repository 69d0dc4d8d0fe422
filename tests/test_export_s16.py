"""Export defects of the session 16 audit (docs/export.md), each read back as a user reads it.

- a job id too long for a partition folder's name (a Hydra sweep folder, a long Japanese id)
  no longer fails the whole Parquet export: the table is written with job_id a column, and
  every reader docs/export.md shows reads the true ids;
- CSV: a text cell starting with ``'`` gets the guard's ``'`` too, so ``-x`` and ``'-x`` stay two;
- a killed export's hidden folders are tidied by the next export to OUT, and an old export an
  interrupted ``--overwrite`` moved aside goes back to OUT;
- CSV: ``""`` (empty text) and an empty field (NULL) are told apart by the documented readers.
"""

from __future__ import annotations

import csv
import fcntl
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pytest
from conftest import DUCKDB_ENGINE, REPO, Lab
from fastapi.testclient import TestClient

from runlytics.api.app import create_app
from runlytics.warehouse import export

# an ordinary Hydra multirun folder name: 195 characters, 450 bytes once %-escaped
SWEEP = ",".join(
    f"{k}={v}"
    for k, v in [
        ("model", "llama-3-8b"), ("lr", "1e-4"), ("bs", "32"), ("warmup", "100"), ("seed", "1"),
        ("dropout", "0.1"), ("wd", "0.01"), ("sched", "cosine"), ("accum", "8"), ("epochs", "3"),
        ("precision", "bf16"), ("opt", "adamw"), ("beta1", "0.9"), ("beta2", "0.95"), ("eps", "1e-8"),
        ("clip", "1.0"), ("ctx", "4096"), ("lora_r", "16"), ("lora_alpha", "32"),
    ]
)  # fmt: skip
JAPANESE = "exp/" + "日本語" * 30  # 94 characters, 274 bytes in UTF-8 alone
PARTITIONED = ("steps", "step_gpus", "checkpoints", "gpu_samples")


def doc(job_id: str, losses: list[float]) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "status": "completed",
        "started_at": 1_735_689_600,
        "history": [{"step": i + 1, "loss": loss, "gpus": [{"index": 0, "utilization_percent": 50.0}]}
                    for i, loss in enumerate(losses)],
        "checkpoints": [{"step": 1}],
    }  # fmt: skip


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    lab = Lab(tmp_path_factory.mktemp("export_s16"))
    jobs = {"normal": "normal", "123": "123", "sweep": SWEEP, "japanese": JAPANESE, "dash": "-x", "quoted": "'-x"}
    for n, (folder, job_id) in enumerate(jobs.items()):
        lab.write_job(folder, doc(job_id, [1.0 + n, 0.5 + n]))
    summary = lab.ingest(lab.root)
    assert summary.failed == 0, summary.problems
    return lab


def run(lab: Lab, out: Path, fmt: str = "parquet", **selection: Any) -> export.Result:
    with DUCKDB_ENGINE.reader(lab.db) as con:
        return export.export(con, out, fmt, export.Selection(**selection))


def step_losses(lab: Lab) -> list[tuple[str, int, float]]:
    return sorted(lab.query("SELECT job_id, step, loss FROM step_facts"))


# --- 1. a job id too long for a folder name ----------------------------------------------


def test_overlong_job_ids_export_and_every_documented_reader_gets_them(lab: Lab, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run(lab, out)
    expected = step_losses(lab)
    assert {SWEEP, JAPANESE} <= {j for j, *_ in expected} and result.rows["steps"] == len(expected)
    glob = str(out / "steps" / "**" / "*.parquet")
    # DuckDB, as docs/export.md reads every table
    con = duckdb.connect()
    read = "read_parquet($glob, hive_partitioning = true, hive_types_autocast = false)"
    assert sorted(con.execute(f"SELECT job_id, step, loss FROM {read}", {"glob": glob}).fetchall()) == expected
    # pandas with pyarrow
    by_job = ds.partitioning(pa.schema([("job_id", pa.string())]), flavor="hive")
    frame = pd.read_parquet(out / "steps", partitioning=by_job)
    assert sorted(frame[["job_id", "step", "loss"]].itertuples(index=False, name=None)) == expected
    # polars
    frame_pl = pl.read_parquet(glob, hive_partitioning=True, hive_schema={"job_id": pl.String})
    assert sorted(frame_pl.select("job_id", "step", "loss").iter_rows()) == expected
    for table in PARTITIONED:  # every fact table the same way, the true ids in a column
        rows = con.execute(f"SELECT DISTINCT job_id FROM {read}", {"glob": str(out / table / "**" / "*.parquet")})
        relation = export.SOURCES[table]
        assert sorted(rows.fetchall()) == sorted(lab.query(f"SELECT DISTINCT job_id FROM {relation}")), table
    manifest = (out / "manifest.json").read_text()
    assert '"partitioned_by": null' in manifest and any("too long for a folder name" in n for n in result.notes)


def test_a_selection_without_overlong_ids_keeps_the_hive_layout(lab: Lab, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(lab, out, job_ids=("normal", "123"))
    assert sorted(p.name for p in (out / "steps").iterdir()) == ["job_id=123", "job_id=normal"]
    only_sweep = run(lab, tmp_path / "sweep", job_ids=(SWEEP,))
    assert only_sweep.rows["steps"] == 2


# --- 2. CSV: a value starting with ' ------------------------------------------------------


def unguard(cell: str) -> str:
    """docs/export.md's reading rule: one leading ' is the guard's."""
    return cell[1:] if cell.startswith("'") else cell


def test_csv_guard_keeps_dash_x_and_quote_dash_x_apart(lab: Lab, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(lab, out, "csv")
    with open(out / "jobs.csv", newline="") as f:
        ids = [unguard(row["job_id"]) for row in csv.DictReader(f)]
    assert sorted(ids) == sorted(j for (j,) in lab.query("SELECT job_id FROM jobs"))
    with open(out / "steps.csv", newline="") as f:
        rows = sorted((unguard(r["job_id"]), int(r["step"]), float(r["loss"])) for r in csv.DictReader(f))
    assert rows == step_losses(lab)


def test_api_csv_guard_keeps_them_apart(lab: Lab) -> None:
    app = create_app(DUCKDB_ENGINE.warehouse(lab.db))
    app.state.token = None
    with TestClient(app) as client:
        answer = client.get("/api/training/export/steps", params={"job_ids": '-x,"\'-x"'})
    assert answer.status_code == 200, answer.text
    cells = sorted({unguard(row["job_id"]) for row in csv.DictReader(io.StringIO(answer.text))})
    assert cells == ["'-x", "-x"]


# --- 3. a killed export's leftovers -------------------------------------------------------


def test_next_export_removes_a_dead_exports_folders_not_a_live_ones(lab: Lab, tmp_path: Path) -> None:
    out = tmp_path / "out"
    dead = tmp_path / ".out.export-0123456789ab"
    (dead / "steps").mkdir(parents=True)
    live = tmp_path / ".out.export-ba9876543210"
    live.mkdir()
    dead_pg = tmp_path / ".out.pg-abcd_123"
    dead_pg.mkdir()
    mine = tmp_path / ".out.export-notanexport"  # not a name an export gives: never touched
    mine.mkdir()
    holder = subprocess.Popen(  # a live export: its folder locked by a process that runs on
        [sys.executable, "-c", "import fcntl,os,sys,time; fd=os.open(sys.argv[1], os.O_RDONLY);"
         "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)", str(live)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        run(lab, out, "csv", job_ids=("normal",))
        assert not dead.exists() and not dead_pg.exists()
        assert live.is_dir() and mine.is_dir() and (out / "manifest.json").is_file()
    finally:
        holder.kill()
        holder.wait()


def test_an_interrupted_overwrite_gets_its_old_export_back(lab: Lab, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(lab, out, "csv", job_ids=("normal",))
    moved = tmp_path / ".out.replaced-0123456789ab"
    os.replace(out, moved)  # what kill -9 between --overwrite's two renames leaves
    with pytest.raises(export.ExportError, match=r"restored .*out.* not empty"):
        run(lab, out, "csv")  # OUT holds the old export again: not replaced without --overwrite
    assert not moved.exists() and (out / "jobs.csv").read_text().count("\n") == 2  # header, normal
    done = runlytics("export", str(out), "--db", str(lab.db), "--format", "csv", "--overwrite", "--quiet")
    assert done.returncode == 0, done.stderr
    assert (out / "jobs.csv").read_text().count("\n") == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_restore_is_said_when_the_export_then_fails(lab: Lab, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(lab, out, "csv", job_ids=("normal",))
    os.replace(out, tmp_path / ".out.replaced-0123456789ab")
    failed = runlytics("export", str(out), "--db", str(lab.db), "--format", "csv", "--overwrite", "--jobs", "nope")
    assert failed.returncode != 0
    said = failed.stderr.splitlines()
    assert len(said) == 2 and said[0].startswith(f"runlytics export: restored {out} from .out.replaced-"), said
    assert said[1].startswith("runlytics export: no job(s) 'nope'"), said
    assert (out / "jobs.csv").read_text().count("\n") == 2  # the old export, back in OUT


def test_an_export_holds_a_lock_on_its_folder_while_it_runs(
    lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bool] = []
    real = export._install

    def install(work: Path, out: Path, overwrite: bool) -> None:
        fd = os.open(work, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            seen.append(False)
        except BlockingIOError:
            seen.append(True)  # held by the export (flock locks are per open file)
        finally:
            os.close(fd)
        real(work, out, overwrite)

    monkeypatch.setattr(export, "_install", install)
    run(lab, tmp_path / "out", "csv", job_ids=("normal",))
    assert seen == [True]


def runlytics(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RUNLYTICS_DB", None)
    command = [sys.executable, "-m", "runlytics", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


# --- 4. CSV: "" is not NULL ---------------------------------------------------------------


def test_csv_empty_text_and_null_are_told_apart_by_the_documented_readers(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    lab.write_job("j", {"job_id": "j", "status": "completed", "history": [{"step": 1, "loss": 1.0}]})
    lab.ingest(lab.root)
    spool = tmp_path / "spool"
    spool.mkdir()
    sample = '{"ts": 1735689600, "host": "", "job_id": "j", "gpu_index": 0, "utilization_percent": 1.0}\n'
    (spool / "s.jsonl").write_text(sample)
    os.utime(spool / "s.jsonl", (1_735_689_600, 1_735_689_600))
    assert lab.ingest(spool_root=spool).failed == 0
    assert lab.query("SELECT host, gpu_uuid FROM gpu_samples") == [("", None)]
    docs = (REPO / "docs" / "export.md").read_text()  # the options checked here are the ones documented
    assert "allow_quoted_nulls = false" in docs and "quoted_strings_can_be_null=False" in docs
    out = tmp_path / "out"
    run(lab, out, "csv")
    path = str(out / "gpu_samples.csv")
    got = duckdb.sql(f"SELECT host, gpu_uuid FROM read_csv('{path}', allow_quoted_nulls = false)").fetchall()
    assert got == [("", None)]
    table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(quoted_strings_can_be_null=False))
    frame = table.to_pandas()
    assert frame["host"].tolist() == [""] and frame["gpu_uuid"].isna().tolist() == [True]
    got_pl = pl.read_csv(path, schema_overrides={"host": pl.String, "gpu_uuid": pl.String})
    assert got_pl.select("host", "gpu_uuid").rows() == [("", None)]
