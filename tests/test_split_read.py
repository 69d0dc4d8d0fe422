"""The careful read of a large file in pieces gives what the read of the whole gives.

A file the fast road refuses and that is SPLIT_BYTES or more is read as its document without
the history plus pieces of entries (ingest/fast.py, ``split``), so that DuckDB never holds the
whole history (docs/benchmark.md, "One very large file"). Here the thresholds are made tiny, so
that every file is read in pieces of one to a few entries, and each warehouse, warnings
included, must equal the one built by reading the files whole.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from runlytics.ingest import fast
from tests.conftest import Lab

pytestmark = pytest.mark.skipif(not fast.AVAILABLE, reason="the C reader is not built")


def _entry(step: int, **extra: Any) -> dict[str, Any]:
    return {
        "step": step,
        "timestamp": f"2026-01-01T00:{step // 60:02d}:{step % 60:02d}Z",
        "loss": 2.0 - step / 100,
        "samples_per_second": 10.5,
        "gpus": [{"index": 0, "utilization_percent": 90.0, "memory_used_mb": 1000.0}],
        **extra,
    }


def _doc(history: Any, **extra: Any) -> dict[str, Any]:
    return {"status": "running", "config": {"batch_size": 4}, "history": history, **extra}


# Each refused by the fast road (a value to warn about somewhere), each a different way.
DOCS: dict[str, str] = {
    "nan-and-infinity": json.dumps(
        _doc([_entry(1, loss=math.nan), _entry(2, loss="n"), _entry(3, iteration_time=math.inf), _entry(4)]),
        allow_nan=True,
    ),
    "strings-in-numbers": json.dumps(_doc([_entry(1), _entry(2, loss="x"), _entry(3, samples="12"), _entry(4)])),
    "nulls": json.dumps(
        _doc(
            [_entry(1, loss=None), _entry(2), _entry(3, gpus=[{"index": 0, "power_w": None}]), _entry(4)],
            latest={"step": 5, "eval_loss": None},
        )
    ),
    "not-objects": json.dumps(_doc([_entry(1), 7, _entry(3, gpus="none"), "x", _entry(5, gpus=[1, {"index": 1}])])),
    "no-steps-and-duplicates": json.dumps(_doc([{"loss": 1.0}, _entry(2), _entry(2, loss=0.5), _entry(-3), None])),
    "rest-needs-repair": json.dumps(_doc([_entry(1), _entry(2, loss="y")], latest=4, checkpoints=[{"step": 1}, 3])),
    "odd-job-fields": json.dumps(
        _doc([_entry(1), _entry(2, timestamp="yesterday")], status="weird", current_step="9", updated_at="x")
    ),
    "escapes-and-unicode": (
        '{"job_id": "j\\u00e9", "history": [{"step": 1, "loss": "\\u00e9", "gpus": [{"uuid": "GPU-\\u00e9"}]},'
        ' {"step": 2, "note": "]}\\"", "loss": 1.5}, {"step": 3, "loss": 1e400}], "status": "completed"}'
    ),
    "empty-history-and-latest": json.dumps(_doc([], latest={"step": 3, "loss": "z"})),
    "whitespace": '\n { "history" :\n [ \n'
    + ",\n".join(json.dumps(_entry(i, loss=str(i))) for i in range(1, 8))
    + '\n ] \n, "status": "paused" }\n',
}


def _warehouse(lab: Lab) -> dict[str, Any]:
    files = lab.query(
        "SELECT regexp_extract(path, '([^/]+)/progress.json$', 1), outcome, rows, warning_count, warnings, error"
        " FROM ingest_files ORDER BY path"
    )
    return {"facts": lab.facts(), "files": files}


def _both(lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, piece_bytes: int) -> tuple[Any, Any]:
    monkeypatch.setattr(fast, "SPLIT_BYTES", 1 << 40)  # never: every file read whole
    lab.db = tmp_path / "whole.duckdb"
    lab.ingest()
    whole = _warehouse(lab)
    monkeypatch.setattr(fast, "SPLIT_BYTES", 0)  # always
    monkeypatch.setattr(fast, "PIECE_BYTES", piece_bytes)
    split, pieces = fast.split, []

    def spy(path: Path, scratch: Path, name: str) -> fast.Pieces | None:
        result = split(path, scratch, name)
        pieces.append((path.parent.name, result is not None and len(result.pieces)))
        return result

    monkeypatch.setattr(fast, "split", spy)
    lab.db = tmp_path / "pieces.duckdb"
    lab.ingest()
    # every file was read in pieces (the fast road refused them all but the one with an empty
    # history, whose `latest` DuckDB reads with the rest), one entry a piece at 1 byte
    assert sorted(name for name, _ in pieces) == sorted(set(DOCS) - {"empty-history-and-latest"})
    assert all(count for _, count in pieces)
    if piece_bytes == 1:
        assert dict(pieces)["not-objects"] == 5
    return whole, _warehouse(lab)


@pytest.mark.parametrize("piece_bytes", [1, 300])
def test_pieces_give_what_the_whole_gives(
    lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, piece_bytes: int
) -> None:
    for name, text in DOCS.items():
        lab.write_job(name, None, raw=text)
    whole, pieces = _both(lab, tmp_path, monkeypatch, piece_bytes)
    assert pieces == whole
    # the documents did hold what they were written for: rows, and warnings to say
    assert all(outcome == "ingested" for _, outcome, *_ in whole["files"])
    assert all(count > 0 for _, _, _, count, *_ in whole["files"])
    assert sum(count for _, _, _, count, *_ in whole["files"]) > 20


def test_the_pieces_are_entries_whatever_they_hold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fast.split cuts between entries only, and gives up where a piece could read differently."""
    monkeypatch.setattr(fast, "PIECE_BYTES", 1)
    path = tmp_path / "p.json"
    path.write_text(DOCS["escapes-and-unicode"])
    pieces = fast.split(path, tmp_path, "t")
    assert pieces is not None and pieces.history_entries == 3
    assert [offset for _, offset in pieces.pieces] == [0, 1, 2]
    histories = [json.loads(p.read_text())["history"] for p, _ in pieces.pieces]
    assert [h[0]["step"] for h in histories] == [1, 2, 3] and histories[1][0]["note"] == ']}"'
    rest = json.loads(pieces.rest.read_text())
    assert rest == {"job_id": "jé", "history": [], "status": "completed"}
    for text in (
        '{"history": [1], "history": []}',  # which one counts is the reader's choice
        '{"hist\\u006fry": [1]}',  # a key that only reads as history once unescaped
        '{"history": {"step": 1}}',
        '{"history": [1]} {"history": [2]}',
        '{"history": [1,]}',
        '\ufeff{"history": [1]}',
    ):
        path.write_text(text)
        assert fast.split(path, tmp_path, "t") is None, text
