"""Null values in numeric fields: dropped with a warning each (inputs.md), found by SQL.

progress.NULL_WARNINGS finds them in DuckDB; the walk below, in plain Python over the parsed
file, is the oracle it is checked against on generated files. On both engines (``ingest_engine``):
on PostgreSQL the warnings are read from the ledger that ``ingest --db URL`` published.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from conftest import Engine, Lab
from depth import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runlytics.ingest import progress


@pytest.fixture
def lab(tmp_path: Path, ingest_engine: Engine) -> Lab:
    return Lab(tmp_path, ingest_engine)


def expected_warnings(doc: dict[str, Any]) -> list[str]:
    """The null warnings of a document, entry by entry as BATCH_ENTRIES numbers them."""
    history, latest = doc.get("history"), doc.get("latest")
    entries: list[tuple[str, dict[str, Any], list[str]]] = []
    if isinstance(history, list):
        entries += [(f"history[{i}]", e, progress.ENTRY_NUMBERS) for i, e in enumerate(history)]
    if isinstance(latest, dict):
        entries.append(("latest", latest, progress.ENTRY_NUMBERS))
    elif history is None and latest is None and doc.get("step") is not None:
        entries.append(("snapshot", doc, progress.SNAPSHOT_NUMBERS))
    out = []
    for place, entry, fields in entries:
        step = entry.get("step")
        if not _is_step(step):
            continue
        label = f"{place} (step {int(step)})"
        out += _message(label, entry, fields)
        gpus = entry.get("gpus") if fields is progress.ENTRY_NUMBERS else None
        for j, reading in enumerate(gpus if isinstance(gpus, list) else []):
            out += _message(f"{label} gpus[{j}]", reading, progress.GPU_NUMBERS)
    return out


def _message(label: str, values: dict[str, Any], fields: list[str]) -> list[str]:
    nulls = [name for name in fields if name in values and values[name] is None]
    return [f"{label}: " + "; ".join(f"{name} is null, dropped" for name in nulls)] if nulls else []


def _is_step(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) and 0 <= value <= 1e18 and value == int(value)


def null_warnings_stored(lab: Lab) -> list[str]:
    [(warnings,)] = lab.query("SELECT warnings FROM ingest_files")
    return [w for w in json.loads(warnings or "[]") if "is null" in w]


MAYBE_NULL = st.sampled_from([None, 1.5, 0, "x"])
READING = st.dictionaries(st.sampled_from(progress.GPU_NUMBERS), MAYBE_NULL, max_size=3)
ENTRY = st.fixed_dictionaries(
    {"step": st.sampled_from([1, 2, 2.0, None, -1, 2.5, "3"])},
    optional={
        **{name: MAYBE_NULL for name in progress.ENTRY_NUMBERS},
        "gpus": st.one_of(st.none(), st.lists(READING, max_size=3)),
    },
)
DOC = st.one_of(
    st.fixed_dictionaries({"history": st.lists(ENTRY, max_size=4)}, optional={"latest": st.one_of(st.none(), ENTRY)}),
    st.fixed_dictionaries({"latest": ENTRY}),
    st.fixed_dictionaries(
        {"step": st.sampled_from([5, None, 1.5])},
        optional={name: MAYBE_NULL for name in progress.SNAPSHOT_NUMBERS},
    ),
)


# one to three documents, each a job of its own, in one run: an ingest's fixed cost is most of an
# example's, so about half the examples check as many documents (docs/testing.md, "Deep runs": 15
# examples under the deep profile)
@settings(max_examples=examples(3, 15), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(docs=st.lists(DOC, min_size=1, max_size=3))
def test_null_warnings_match_the_oracle(
    tmp_path_factory: pytest.TempPathFactory, lab: Lab, docs: list[dict[str, Any]]
) -> None:
    # each example a new jobs root and files and job ids of its own; on PostgreSQL all in one
    # database (a new stage of the same ingester merges with what the database holds: docs/postgresql.md)
    lab = lab.sharing(tmp_path_factory.mktemp("nulls"))
    ids = [f"{lab.root.parent.name}-j{k}" for k in range(len(docs))]
    for job_id, doc in zip(ids, docs, strict=True):
        lab.write_job(job_id, {"job_id": job_id, "status": "running", **doc})
    lab.ingest()
    expected = {job_id: expected_warnings(doc) for job_id, doc in zip(ids, docs, strict=True)}
    assert null_warnings_by_job(lab, ids) == expected


def null_warnings_by_job(lab: Lab, ids: list[str]) -> dict[str, list[str]]:
    """The null warnings of jobs ``ids`` (on PostgreSQL's shared database an earlier example's jobs stay)."""
    rows = lab.query(
        "SELECT job_id, warnings FROM ingest_files WHERE job_id IN (SELECT unnest(CAST($jobs AS VARCHAR[])))",
        {"jobs": ids},
    )
    assert len(rows) == len(ids)  # one file each
    return {job: [w for w in json.loads(warnings or "[]") if "is null" in w] for job, warnings in rows}


def test_null_in_a_file_that_is_repaired_is_found_in_the_repaired_copy(lab: Lab) -> None:
    history = [{"step": 1, "loss": None, "gpus": "none"}, {"step": 2, "gpus": [{"power_w": None}, 3]}]
    lab.write_job("j", {"job_id": "j", "status": "running", "history": history})
    lab.ingest()
    assert null_warnings_stored(lab) == [
        "history[0] (step 1): loss is null, dropped",
        "history[1] (step 2) gpus[0]: power_w is null, dropped",
    ]


def test_only_files_with_null_values_get_null_warnings(lab: Lab) -> None:
    lab.write_job("a", {"job_id": "a", "status": "running", "history": [{"step": 1, "loss": None}]})
    lab.write_job("b", {"job_id": "b", "status": "running", "history": [{"step": 1}], "config": {"note": "null"}})
    lab.write_job("c", {"job_id": "c", "status": "running", "history": [{"step": 1, "loss": 2.0}]})
    summary = lab.ingest()
    assert dict(lab.query("SELECT job_id, warning_count FROM ingest_files")) == {"a": 1, "b": 0, "c": 0}
    assert summary.warnings == 1
