"""Export defects of the session 20 audit (docs/export.md), each reproduced deterministically.

- OUT's rule ("must not exist, or be an empty folder"; only ``--overwrite`` replaces, and only
  an export) holds when the finished export is installed, not only when it starts: a folder
  made and filled meanwhile (a user's files, another export to the same OUT) is never removed,
  and the export that finds it fails as for a non-empty OUT (exit 2). The races are played
  at the moment between the export's last write (its manifest) and its install, or inside
  ``_install`` itself;
- the readers' recipes: polars reads the JSON columns as Binary (the cast to text shown), and
  pandas with ``dtype_backend="pyarrow"`` keeps a NULL ``eval_loss`` apart from a NaN ``loss``.
"""

from __future__ import annotations

import fcntl
import json
import math
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from conftest import DUCKDB_ENGINE, REPO, Lab

from runlytics import cli
from runlytics.warehouse import export


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    lab = Lab(tmp_path_factory.mktemp("export_s20"))
    history = [
        {"step": 1, "loss": float("nan"), "eval_loss": 2.0},  # diverged, evaluated
        {"step": 2, "loss": 1.0},  # no evaluation: eval_loss NULL
    ]
    doc = {"job_id": "j", "status": "completed", "started_at": 1_735_689_600, "config": {"lr": 0.1}, "history": history}
    lab.write_job("j", doc)
    summary = lab.ingest(lab.root)
    assert summary.failed == 0, summary.problems
    return lab


def run(lab: Lab, out: Path, fmt: str = "parquet", *, overwrite: bool = False) -> export.Result:
    with DUCKDB_ENGINE.reader(lab.db) as con:
        return export.export(con, out, fmt, overwrite=overwrite)


def before_install(monkeypatch: pytest.MonkeyPatch, action: Callable[[], None]) -> None:
    """Run ``action`` once, after the export's last write (its manifest) and before its install:
    the window in which the audit's user and second export came in."""
    real = export._manifest
    done: list[bool] = []

    def manifest(*args: Any) -> dict[str, Any]:
        if not done:
            done.append(True)
            action()
        return real(*args)

    monkeypatch.setattr(export, "_manifest", manifest)


def thesis(out: Path) -> None:
    out.mkdir()
    (out / "thesis.txt").write_text("my only copy\n")


def an_export(folder: Path, fmt: str) -> Path:
    """A folder as an export leaves it (its manifest and a table), for ``_install`` itself."""
    folder.mkdir()
    (folder / export.MANIFEST).write_text(json.dumps({"format": fmt}))
    (folder / "jobs.csv").write_text(f"{fmt}\n")
    return folder


def manifest_format(out: Path) -> str:
    return str(json.loads((out / export.MANIFEST).read_text())["format"])


# --- 1. OUT's rule at the install ---------------------------------------------------------


def test_a_folder_made_and_filled_while_the_export_ran_is_kept_and_the_cli_exits_2(
    lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "race"  # missing when the export starts: it passes the first check
    before_install(monkeypatch, lambda: thesis(out))
    code = cli.main(["export", str(out), "--db", str(lab.db), "--quiet"])
    said = capsys.readouterr().err
    assert code == 2, said
    assert f"runlytics export: {out} exists and is not empty: it was filled while this export ran" in said
    assert said.rstrip().endswith("this export was discarded"), said
    assert sorted(p.name for p in out.iterdir()) == ["thesis.txt"]
    assert (out / "thesis.txt").read_text() == "my only copy\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["race"]  # the discarded export's folder removed


def test_of_two_exports_to_one_missing_out_one_wins_and_the_other_fails(
    lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "two"
    won: list[export.Result] = []
    # the CSV export runs whole while the Parquet one is about to install
    before_install(monkeypatch, lambda: won.append(run(lab, out, "csv")))
    with pytest.raises(export.ExportError, match="not empty: it was filled while this export ran"):
        run(lab, out, "parquet")
    assert won and won[0].fmt == "csv"
    assert manifest_format(out) == "csv" and (out / "steps.csv").is_file() and not (out / "steps").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two"]


def test_overwrite_never_removes_a_folder_that_became_a_users(
    lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    before_install(monkeypatch, lambda: thesis(out))
    with pytest.raises(export.ExportError, match="holds no earlier export"):
        run(lab, out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["thesis.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_overwrite_checks_the_manifest_again_at_the_install(
    lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    run(lab, out, "csv")

    def reuse() -> None:  # the earlier export's folder, taken for something else meanwhile
        (out / export.MANIFEST).unlink()
        (out / "thesis.txt").write_text("my only copy\n")

    before_install(monkeypatch, reuse)
    with pytest.raises(export.ExportError, match="holds no earlier export"):
        run(lab, out, overwrite=True)
    assert (out / "thesis.txt").is_file() and (out / "jobs.csv").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_overwrite_still_replaces_an_export_put_there_meanwhile(
    lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    before_install(monkeypatch, lambda: run(lab, out, "csv"))  # finishes first: an earlier export
    run(lab, out, "parquet", overwrite=True)
    assert manifest_format(out) == "parquet" and not (out / "steps.csv").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_overwrite_fails_when_out_was_replaced_while_it_waited_for_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = an_export(tmp_path / "out", "first")
    work = an_export(tmp_path / ".out.export-0123456789ab", "mine")
    elsewhere = tmp_path / "elsewhere"

    def flock(fd: int, operation: int) -> None:  # another --overwrite finished while this one waited
        out.rename(elsewhere)
        an_export(out, "theirs")

    monkeypatch.setattr(export, "fcntl", types.SimpleNamespace(flock=flock, LOCK_EX=fcntl.LOCK_EX))
    with pytest.raises(export.ExportError, match="changed while this export ran"):
        export._install(work, out, True)
    assert manifest_format(out) == "theirs" and manifest_format(elsewhere) == "first"
    assert manifest_format(work) == "mine"  # left to the caller, which removes it


def test_an_earlier_export_that_cannot_go_back_is_kept_and_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = an_export(tmp_path / "out", "first")
    work = an_export(tmp_path / ".out.export-0123456789ab", "mine")
    real = export._same_folder

    def same_folder(fd: int, path: Path) -> bool:
        if ".replaced-" in path.name:  # OUT moved aside: filled before the new export is renamed to it
            thesis(out)
        return real(fd, path)

    monkeypatch.setattr(export, "_same_folder", same_folder)
    with pytest.raises(export.ExportError, match="changed while this export ran") as caught:
        export._install(work, out, True)
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("out.kept-")]
    assert len(kept) == 1 and manifest_format(kept[0]) == "first" and str(kept[0]) in str(caught.value)
    assert sorted(p.name for p in out.iterdir()) == ["thesis.txt"] and manifest_format(work) == "mine"
    assert not export._tidy(out)  # the next export to OUT leaves it alone (it may not be an export)
    assert manifest_format(kept[0]) == "first"


def test_install_refuses_a_file_or_a_link_made_at_out(tmp_path: Path) -> None:
    work = an_export(tmp_path / ".out.export-0123456789ab", "mine")
    (tmp_path / "target").mkdir()
    for make in (lambda p: p.write_text("x"), lambda p: p.symlink_to(tmp_path / "target")):
        out = tmp_path / "out"
        make(out)
        for overwrite in (False, True):
            with pytest.raises(export.ExportError, match="not a folder"):
                export._install(work, out, overwrite)
        out.unlink()
    assert manifest_format(work) == "mine" and not any((tmp_path / "target").iterdir())


# --- 2. the readers' recipes --------------------------------------------------------------


def test_the_documented_readers_give_json_as_text_and_keep_null_and_nan_apart(lab: Lab, tmp_path: Path) -> None:
    docs = (REPO / "docs" / "export.md").read_text()
    assert 'pl.col("config").cast(pl.String)' in docs and 'pl.col("metrics").cast(pl.String)' in docs
    assert docs.count('dtype_backend="pyarrow")') == 2
    out = tmp_path / "out"
    run(lab, out)
    # polars: JSON as Binary, text once cast
    jobs_pl = pl.read_parquet(str(out / "jobs" / "**" / "*.parquet"))
    assert jobs_pl.schema["config"] == pl.Binary
    assert jobs_pl.with_columns(pl.col("config").cast(pl.String))["config"].to_list() == ['{"lr":0.1}']
    glob = str(out / "steps" / "**" / "*.parquet")
    steps_pl = pl.read_parquet(glob, hive_partitioning=True, hive_schema={"job_id": pl.String})
    assert steps_pl.schema["metrics"] == pl.Binary  # trainer metrics: none in this job, the type alike
    steps_pl = steps_pl.with_columns(pl.col("metrics").cast(pl.String)).sort("step")
    assert steps_pl.schema["metrics"] == pl.String
    assert steps_pl["loss"].is_nan().to_list() == [True, False]  # polars: apart as read
    assert steps_pl["eval_loss"].is_null().to_list() == [False, True]
    # pandas: by default a NULL eval_loss and a NaN loss are alike; with pyarrow's types, apart
    by_job = ds.partitioning(pa.schema([("job_id", pa.string())]), flavor="hive")
    plain = pd.read_parquet(out / "steps", partitioning=by_job).sort_values("step")
    assert plain["loss"].isna().tolist() == [True, False] and plain["eval_loss"].isna().tolist() == [False, True]
    steps = pd.read_parquet(out / "steps", partitioning=by_job, dtype_backend="pyarrow").sort_values("step")
    assert steps["loss"].isna().tolist() == [False, False] and math.isnan(steps["loss"].iloc[0])
    assert steps["eval_loss"].isna().tolist() == [False, True] and steps["job_id"].tolist() == ["j", "j"]
    jobs = pd.read_parquet(out / "jobs", dtype_backend="pyarrow")
    assert jobs["config"].tolist() == ['{"lr":0.1}']
