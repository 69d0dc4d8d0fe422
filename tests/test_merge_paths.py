"""The merge's shortcuts (ingest/merge.py) store exactly what its general statements store.

When no (job, step) repeats in a batch, every entry wins without ranking (ALL_WINNERS); when
every entry is applied and every GPU index equals its reading's position, every GPU reading is
inserted without the semi join and the repeated-index check (INSERT_ALL_GPUS). Each case here
is ingested twice, once as the code runs and once with the shortcuts replaced by the general
statements, and the warehouses must hold the same rows: DuckDB only, as they compare two of
DuckDB's merge statements (on PostgreSQL the merge runs in the same DuckDB stage, and the publish
copies what it stored). The GPU index cases check the rows stored on both engines (``ingest_engine``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pytest
from conftest import Engine, Lab
from depth import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runlytics.ingest import merge

TABLES = {
    "steps": "SELECT * FROM steps ORDER BY ALL",
    "step_gpus": "SELECT * FROM step_gpus ORDER BY ALL",
    "jobs": "SELECT * EXCLUDE (ingested_at, source_dir, source_file) FROM jobs ORDER BY ALL",
    "checkpoints": "SELECT * FROM checkpoints ORDER BY ALL",
    "ledger": "SELECT rows, warning_count, warnings FROM ingest_files WHERE kind = 'progress' ORDER BY ALL",
}


def _general(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(merge, "ALL_WINNERS", merge.BATCH_WINNERS)
    monkeypatch.setattr(merge, "INSERT_ALL_GPUS", merge.INSERT_GPUS)


def _snapshot(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {name: con.execute(sql).fetchall() for name, sql in TABLES.items()}
    finally:
        con.close()


def _ingest_runs(tmp: Path, runs: list[dict[str, dict[str, Any]]]) -> dict[str, list[tuple[Any, ...]]]:
    """Ingest each run's job folders (folder -> document) in turn; the warehouse's rows."""
    lab = Lab(tmp)
    for docs in runs:
        for folder, doc in docs.items():
            lab.write_job(folder, doc)
        lab.ingest()
    return _snapshot(lab.db)


def _both(tmp: Path, monkeypatch: pytest.MonkeyPatch, runs: list[dict[str, dict[str, Any]]]) -> None:
    (tmp / "fast").mkdir()
    (tmp / "general").mkdir()
    fast = _ingest_runs(tmp / "fast", runs)
    with monkeypatch.context() as m:
        _general(m)
        general = _ingest_runs(tmp / "general", runs)
    assert fast == general


def gpu(index: int | None, util: float) -> dict[str, Any]:
    reading: dict[str, Any] = {"utilization_percent": util, "memory_used_mb": 1000.0, "temperature_c": 50.0}
    if index is not None:
        reading["index"] = index
    return reading


def entry(step: int, ts: str | None, gpus: list[dict[str, Any]]) -> dict[str, Any]:
    e: dict[str, Any] = {"step": step, "loss": 1.0 / (step + 1), "gpus": gpus}
    if ts is not None:
        e["timestamp"] = ts
    return e


@pytest.fixture
def lab(tmp_path: Path, ingest_engine: Engine) -> Lab:
    return Lab(tmp_path, ingest_engine)


def test_gpu_index_repeated_within_an_entry_keeps_the_first_reading(lab: Lab) -> None:
    lab.write_job(
        "a",
        {"job_id": "a", "status": "running", "history": [entry(1, None, [gpu(0, 10.0), gpu(1, 20.0), gpu(0, 30.0)])]},
    )
    summary = lab.ingest()
    rows = lab.query("SELECT gpu_index, utilization_percent FROM step_gpus ORDER BY gpu_index")
    assert rows == [(0, 10.0), (1, 20.0)]
    assert [message for _, message in summary.listed_warnings] == [
        "history[0] (step 1): gpus[2] repeats GPU index 0, dropped: one reading per index"
    ]


def test_gpu_indexes_out_of_position_are_kept(lab: Lab) -> None:
    lab.write_job("a", {"job_id": "a", "history": [entry(1, None, [gpu(3, 10.0), gpu(None, 20.0), gpu(0, 30.0)])]})
    lab.ingest()
    rows = lab.query("SELECT gpu_index, utilization_percent FROM step_gpus ORDER BY gpu_index")
    assert rows == [(0, 30.0), (1, 20.0), (3, 10.0)]


@pytest.mark.parametrize(
    "runs",
    [
        pytest.param([{"a": {"history": [entry(s, None, [gpu(0, 1.0), gpu(1, 2.0)]) for s in range(3)]}}], id="new"),
        pytest.param(
            [
                {
                    "a": {
                        "history": [
                            entry(1, "2026-03-01T12:00:00", [gpu(0, 1.0)]),
                            entry(1, "2026-03-01T11:00:00", [gpu(0, 2.0)]),
                        ]
                    }
                }
            ],
            id="repeat-within-file",
        ),
        pytest.param(
            [
                {
                    "a": {"job_id": "x", "history": [entry(1, None, [gpu(0, 1.0)])]},
                    "b": {"job_id": "x", "history": [entry(1, None, [gpu(0, 2.0)]), entry(2, None, [gpu(0, 3.0)])]},
                }
            ],
            id="repeat-across-files",
        ),
        pytest.param(
            [
                {"a": {"history": [entry(1, "2026-03-01T12:00:00", [gpu(0, 1.0)])]}},
                {
                    "a": {
                        "history": [
                            entry(1, "2026-03-01T11:00:00", [gpu(0, 2.0)]),
                            entry(2, "2026-03-01T12:30:00", [gpu(0, 3.0), gpu(0, 4.0)]),
                        ]
                    }
                },
            ],
            id="older-than-stored",
        ),
        pytest.param(
            [
                {
                    "a": {"latest": entry(5, None, [gpu(1, 1.0), gpu(1, 2.0)])},
                    "b": {"step": 3, "gpu_utilization": 50.0, "updated_at": "2026-03-01T12:00:00"},
                }
            ],
            id="latest-and-snapshot",
        ),
    ],
)
def test_shortcuts_store_what_the_general_merge_stores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runs: list[dict[str, dict[str, Any]]]
) -> None:
    _both(tmp_path, monkeypatch, runs)


TIMES = st.sampled_from([None, "2026-03-01T11:00:00", "2026-03-01T12:00:00"])
GPU = st.builds(gpu, st.one_of(st.none(), st.integers(0, 2)), st.sampled_from([1.0, 2.0, 3.0]))
ENTRY = st.builds(entry, st.integers(0, 4), TIMES, st.lists(GPU, max_size=3))
# a `latest` ranked against its own history (its time among the history's, or later)
LATEST = st.builds(
    entry,
    st.integers(0, 4),
    st.sampled_from([None, "2026-03-01T12:00:00", "2026-03-01T13:00:00"]),
    st.lists(GPU, max_size=3),
)
DOC = st.fixed_dictionaries(
    {"job_id": st.sampled_from(["x", "y"]), "history": st.lists(ENTRY, max_size=4)}, optional={"latest": LATEST}
)
RUNS = st.lists(st.dictionaries(st.sampled_from(["a", "b", "c"]), DOC, min_size=1), min_size=1, max_size=2)


@settings(max_examples=examples(2, 12), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(runs=RUNS)
def test_shortcuts_store_what_the_general_merge_stores_generated(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, runs: list[dict[str, dict[str, Any]]]
) -> None:
    _both(tmp_path_factory.mktemp("merge"), monkeypatch, runs)
