"""Many small jobs: a batch's fast-road rows joined in one table, batch boundaries, a batch that breaks.

The first ingest of thousands of small jobs is paid per file and per batch (docs/benchmark.md,
"Many small jobs"): the C reader's buffers of a whole batch become one Arrow table at once, a
batch holds up to ``BATCH_FILES`` files, and a batch that a file breaks is retried in halves.
None of it may change a fact.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from conftest import Engine, Lab
from depth import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runlytics.ingest import discover, fast, merge
from runlytics.ingest.formats import progress as progress_format
from runlytics.warehouse import migrate

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)

needs_c_reader = pytest.mark.skipif(not fast.AVAILABLE and not os.environ.get("CI"), reason="C reader not built")

# --- the C reader's buffers of many files joined into one table ------------------------------


def _number(top: int) -> st.SearchStrategy[float]:
    return st.integers(0, 100 * top).map(lambda n: n / 100)  # plain numbers: the fast road takes them


GPU = st.fixed_dictionaries(
    {},
    optional={
        "index": st.integers(0, 7),
        "uuid": st.text("GPU-abc0123", max_size=12),
        "utilization_percent": _number(100),
        "memory_used_mb": _number(10**5),
        "temperature_c": _number(120),
        "power_w": _number(1000),
    },
).filter(lambda g: g.get("uuid") or set(g) - {"uuid"})  # else no GPU: the fast road leaves the file
ENTRY = st.fixed_dictionaries(
    {"step": st.integers(0, 10**6)},
    optional={
        "timestamp": st.integers(0, 10**6).map(lambda s: (T0 + timedelta(seconds=s)).isoformat()),
        "loss": _number(10),
        "learning_rate": _number(1),
        "samples_per_second": _number(10**4),
        "iteration_time": _number(100),
        "samples": st.integers(0, 10**9),
        "gpus": st.lists(GPU, max_size=3),
    },
)
DOC = st.lists(ENTRY, max_size=13).map(lambda history: {"job_id": "j", "history": history})


def _parsed(docs: list[dict[str, Any]]) -> list[fast.Parsed]:
    parsed = [fast.parse(json.dumps(doc).encode(), i) for i, doc in enumerate(docs)]
    assert all(p is not None for p in parsed)  # plain documents: the fast road takes every one
    return [p for p in parsed if p is not None]


@needs_c_reader
@settings(max_examples=60, deadline=None)
@given(docs=st.lists(DOC, max_size=12))
def test_a_batch_table_equals_its_files_tables_end_to_end(docs: list[dict[str, Any]]) -> None:
    # row counts that are not multiples of 8 put each file's validity bits mid-byte in the whole
    parsed = _parsed(docs)
    for columns, rows, buffers, one in [
        (fast.ENTRY_COLUMNS, "history_entries", "entry_buffers", "entries"),
        (fast.GPU_COLUMNS, "gpu_count", "gpu_buffers", "gpus"),
    ]:
        joined = fast._table(columns, [(getattr(p, rows), getattr(p, buffers)) for p in parsed])
        joined.validate(full=True)
        expected = pa.Table.from_batches([getattr(p, one) for p in parsed], schema=fast._schema(columns))
        assert joined.to_pylist() == expected.to_pylist()


@needs_c_reader
def test_a_batch_table_keeps_nulls_and_strings_of_each_file() -> None:
    docs = [
        {"history": [{"step": s, "loss": 0.5 if s % 3 else None} for s in range(9)]},
        {"history": []},
        # (a reading of nothing, `{}` or a blank uuid alone, is no GPU: the fast road leaves such a file)
        {"history": [{"step": 1, "gpus": [{"uuid": "GPU-a"}, {"index": 2}, {"uuid": "", "power_w": 1}]}]},
        {"history": [{"step": 2, "gpus": [{"index": 1}, {"uuid": "GPU-bb", "power_w": 300}]}]},
    ]
    docs[0]["history"] = [{k: v for k, v in e.items() if v is not None} for e in docs[0]["history"]]
    parsed = _parsed(docs)
    entries = fast._table(fast.ENTRY_COLUMNS, [(p.history_entries, p.entry_buffers) for p in parsed])
    gpus = fast._table(fast.GPU_COLUMNS, [(p.gpu_count, p.gpu_buffers) for p in parsed])
    assert entries.column("loss").to_pylist() == [None, 0.5, 0.5, None, 0.5, 0.5, None, 0.5, 0.5, None, None]
    assert entries.column("file_id").to_pylist() == [0] * 9 + [2, 3]
    assert gpus.column("gpu_uuid").to_pylist() == ["GPU-a", None, "", None, "GPU-bb"]
    assert gpus.column("gpu_index").to_pylist() == [None, 2, None, 1, None]
    assert gpus.column("power_w").to_pylist() == [None, None, 1.0, None, 300.0]
    assert fast._table(fast.GPU_COLUMNS, []).num_rows == 0


# --- batch boundaries ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def blank(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("blank") / "warehouse.duckdb"
    migrate.upgrade(path)
    return path


def _lab(folder: Path, blank: Path, engine: Engine | None = None) -> Lab:
    """A lab whose file starts as ``blank``; on an engine that ingests, that file is its stage and
    PostgreSQL's ledger names one ingester in every lab (its paths are prefixed with the name)."""
    folder.mkdir(parents=True)
    lab = Lab(folder, engine)
    lab.ingester = "lab"
    shutil.copyfile(blank, lab.db)
    return lab


def _write_jobs(lab: Lab, jobs: list[tuple[str, int, int]]) -> None:
    """Folders f00.. with a job id each (ids may repeat: a second folder claiming one fails)."""
    for i, (job_id, steps, first) in enumerate(jobs):
        history = [
            {
                "step": s,
                "timestamp": (T0 + timedelta(minutes=i, seconds=s)).isoformat(),
                "loss": round(1 / (s + 1), 4),
                "gpus": [{"index": 0, "utilization_percent": 50.0 + s}],
            }
            for s in range(first, first + steps)
        ]
        doc = {"job_id": job_id, "status": "running", "updated_at": (T0 + timedelta(minutes=i)).isoformat(),
               "history": history, "checkpoints": [{"step": first, "path": f"checkpoint-{first}"}]}  # fmt: skip
        lab.write_job(f"f{i:02d}", doc)
        (lab.root / f"f{i:02d}" / f"checkpoint-{first + steps}").mkdir()
    stamp = (T0 - timedelta(days=1)).timestamp()
    for path in lab.root.rglob("progress.json"):
        os.utime(path, (stamp, stamp))  # not fresh: every file gets its fingerprint


def _relative(lab: Lab, value: Any) -> Any:
    """``value`` with the lab's folder named ROOT: two labs' facts compared."""
    if isinstance(value, str):
        return value.replace(str(lab.root), "ROOT")
    if isinstance(value, (list, tuple)):
        return type(value)(_relative(lab, v) for v in value)
    if isinstance(value, dict):
        return {k: _relative(lab, v) for k, v in value.items()}
    return value


def _ledger(lab: Lab) -> list[tuple[Any, ...]]:
    rows = lab.query("SELECT path, outcome, rows, warning_count, error FROM ingest_files ORDER BY path")
    prefix = f"{lab.ingester}:" if lab.engine.ingests else ""  # PostgreSQL's: the ingester's paths
    assert all(row[0].startswith(prefix) for row in rows)
    return [(row[0][len(prefix) :], *row[1:]) for row in rows]


JOBS = st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d", "e", "f"]), st.integers(0, 4), st.integers(0, 3)),
                min_size=1, max_size=9)  # fmt: skip


# the stage's batching (DuckDB's ingest, unchanged under ``ingest --db``): a publish copies its result
# whatever the batches were, and the next test checks that copy on PostgreSQL
@settings(max_examples=examples(2, 6), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(jobs=JOBS, size=st.integers(1, 4))
def test_batch_boundaries_do_not_change_the_facts(
    tmp_path_factory: pytest.TempPathFactory, blank: Path, jobs: list[tuple[str, int, int]], size: int
) -> None:
    tmp = tmp_path_factory.mktemp("boundaries")
    results = {}
    for name, batch_files in [("one batch", progress_format.BATCH_FILES), (f"batches of {size}", size)]:
        lab = _lab(tmp / name.replace(" ", "-"), blank)
        _write_jobs(lab, jobs)
        previous = progress_format.BATCH_FILES
        progress_format.BATCH_FILES = batch_files
        try:
            lab.ingest()
        finally:
            progress_format.BATCH_FILES = previous
        results[name] = _relative(lab, (lab.facts(), _ledger(lab)))
    (facts, ledger), (other_facts, other_ledger) = results.values()
    assert other_facts == facts
    assert other_ledger == ledger


def test_a_file_that_breaks_its_batch_fails_alone_and_the_rest_is_ingested(
    tmp_path: Path, blank: Path, monkeypatch: pytest.MonkeyPatch, ingest_engine: Engine
) -> None:
    # A fault injected into the merge of any batch holding the job "poison": the statement
    # failures the batch's retry exists for (none is known that the checks let through).
    jobs = [(f"job-{i}", 3, 0) for i in range(13)]
    jobs[9] = ("poison", 3, 0)
    clean = _lab(tmp_path / "clean", blank, ingest_engine)
    _write_jobs(clean, jobs)
    shutil.rmtree(clean.root / "f09")
    clean.ingest()

    lab = _lab(tmp_path / "lab", blank, ingest_engine)
    _write_jobs(lab, jobs)
    attempts: list[int] = []
    apply = merge.apply

    def poisoned(con: duckdb.DuckDBPyConnection) -> None:
        attempts.append(con.execute("SELECT count(*) FROM batch_jobs").fetchone()[0])  # type: ignore[index]
        if con.execute("SELECT count(*) FROM batch_jobs WHERE job_id = 'poison'").fetchone()[0]:  # type: ignore[index]
            raise duckdb.ConversionException("poisoned")
        apply(con)

    monkeypatch.setattr(merge, "apply", poisoned)
    summary = lab.ingest()
    assert summary.ingested == 12 and summary.failed == 1
    assert [p["path"] for p in summary.problems] == [str(lab.root / "f09" / "progress.json")]
    assert summary.problems[0]["reason"] == "could not be ingested: poisoned"
    # halves, not file by file: 13 -> 6 + 7 -> ... the poisoned half split down to one file
    assert attempts[0] == 13 and len(attempts) < 13
    assert _relative(lab, lab.facts()) == _relative(clean, clean.facts())
    assert [row[1] for row in _ledger(lab)] == ["ingested"] * 9 + ["failed"] + ["ingested"] * 3


# --- discovery of many job folders ------------------------------------------------------------


def test_discovery_finds_checkpoint_folders_and_their_trainer_states(tmp_path: Path) -> None:
    job = tmp_path / "run"
    for name in ("checkpoint-10", "checkpoint-2", "last-checkpoint", ".hidden", "checkpoint-5"):
        (job / name).mkdir(parents=True)
    (job / "progress.json").write_text("{}")
    (job / "checkpoint-10" / "trainer_state.json").write_text("{}")
    (job / "last-checkpoint" / "trainer_state.json").write_text("{}")
    (job / ".hidden" / "trainer_state.json").write_text("{}")
    (job / "checkpoint-5" / "trainer_state.json").mkdir()  # a folder of that name: not a state
    (found,) = discover.discover([tmp_path])
    assert found.path == job and found.progress == job / "progress.json"
    assert found.checkpoints == {10: "checkpoint-10", 2: "checkpoint-2", 5: "checkpoint-5"}
    assert list(found.checkpoints) == [10, 2, 5]  # in name order, as the folders are listed
    assert found.trainer_states == [job / "checkpoint-10" / "trainer_state.json",
                                    job / "last-checkpoint" / "trainer_state.json"]  # fmt: skip
