"""Hostile entries in a jobs root: odd names, odd files, files that vanish. Each fails alone."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import Lab

ODD_NAMES = ["*", "exp[1]", "exp1", "q?", "{a,b}", "a]b", "[!x]", "st*r", "back\\slash", "x**y"]


def doc(job_id: str, loss: float = 1.0) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "status": "completed",
        "history": [{"step": 1, "loss": loss, "iteration_time": 1.0}, {"step": 2, "loss": loss / 2}],
    }


def settled(path: Path) -> None:
    """Date a file's last change an hour ago: a file changed within seconds is read again."""
    past = path.stat().st_mtime - 3600
    os.utime(path, (past, past))


def test_folder_names_are_never_glob_patterns(tmp_path: Path) -> None:
    """Each folder is read as itself: `*` reads no sibling, `exp[1]` is not `exp1`."""
    root = tmp_path / "root[*]?"
    root.mkdir()
    lab = Lab(tmp_path)
    for i, name in enumerate(ODD_NAMES):
        folder = root / name
        folder.mkdir()
        (folder / "progress.json").write_text(json.dumps(doc(f"job-{i}", loss=float(i + 1))))
        settled(folder / "progress.json")
    summary = lab.ingest(root)
    assert (summary.files_seen, summary.ingested, summary.failed, summary.pending) == (len(ODD_NAMES),) * 2 + (0, 0)
    jobs = dict(lab.query("SELECT job_id, source_dir FROM jobs"))
    assert jobs == {f"job-{i}": str((root / name).resolve()) for i, name in enumerate(ODD_NAMES)}
    losses = dict(lab.query("SELECT job_id, loss FROM steps WHERE step = 1"))
    assert losses == {f"job-{i}": float(i + 1) for i in range(len(ODD_NAMES))}
    # and a second run finds every file unchanged, none "unchanged" by mistake before
    again = lab.ingest(root)
    assert (again.unchanged, again.ingested, again.failed) == (len(ODD_NAMES), 0, 0)


def test_odd_names_in_a_file_holding_null_values(tmp_path: Path) -> None:
    """The null-warning read (read_text, read_json_objects) takes the same exact paths."""
    lab = Lab(tmp_path)
    for name in ("exp[1]", "exp1"):
        lab.write_job(name, None, raw=json.dumps({"job_id": name, "history": [{"step": 1, "loss": None}]}))
    summary = lab.ingest()
    assert (summary.ingested, summary.failed) == (2, 0)
    warnings = {job: json.loads(w) for job, w in lab.query("SELECT job_id, warnings FROM ingest_files")}
    expected = ["no status: kept as unknown", "history[0] (step 1): loss is null, dropped"]
    assert warnings == {"exp[1]": expected, "exp1": expected}
