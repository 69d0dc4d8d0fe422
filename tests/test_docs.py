"""Every SQL example in docs/ runs against a warehouse of the sample jobs."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import duckdb
import pytest

from runlytics.ingest.pipeline import ingest

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = re.compile(r"```sql\n(.*?)```", re.S)
EXAMPLES = [
    pytest.param(sql, id=f"{doc.name}:{i}")
    for doc in sorted((REPO / "docs").glob("*.md"))
    for i, sql in enumerate(EXAMPLE.findall(doc.read_text()))
]


@pytest.fixture(scope="module")
def sample_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("docs")
    shutil.copytree(REPO / "samples" / "jobs", tmp / "jobs")
    ingest(tmp / "w.duckdb", [tmp / "jobs"])
    return tmp / "w.duckdb"


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize("sql", EXAMPLES)
def test_example_runs(sample_warehouse: Path, sql: str) -> None:
    con = duckdb.connect(str(sample_warehouse), read_only=True)
    try:
        rows = con.execute(sql).fetchall()
    finally:
        con.close()
    assert isinstance(rows, list)


def test_best_job_per_model_example(sample_warehouse: Path) -> None:
    sql = EXAMPLE.findall((REPO / "docs" / "views.md").read_text())[0]
    con = duckdb.connect(str(sample_warehouse), read_only=True)
    try:
        rows = con.execute(sql).fetchall()
    finally:
        con.close()
    assert [(model, job) for model, job, *_ in rows] == [
        ("mistral-7b", "mistral-lora-002"),
        ("llama-3-8b", "llama-sft-001"),
        ("gpt2", "legacy-gpt2-003"),
    ]
