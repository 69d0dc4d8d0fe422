"""The views as whole SQL texts: warehouse/sql is what the migrations build, each view's newest
frozen copy is its current text, and the sections of job_analytics agree everywhere they appear."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pytest
from alembic.script import ScriptDirectory
from pydantic import BaseModel

from runlytics.api import models
from runlytics.migrations import frozen
from runlytics.warehouse import db, migrate, parts, queries, views

# job_analytics columns that belong to no section of a job's analytics (queries.job_analytics
# returns the first three at the top, and reads gpu_source and warnings itself)
OUTSIDE_SECTIONS = frozenset(
    {
        "job_id", "status", "model_name", "created_at", "started_at", "ended_at", "updated_at",
        "gpu_source", "step_rows", "timed_rows", "nonfinite_losses", "warnings",
    }
)  # fmt: skip


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("head") / "w.duckdb"
    migrate.upgrade(path)
    return path


# Views over sealed tables (a hot table and Parquet parts) are rebuilt from the parts' manifest by
# warehouse/parts.py, not from a warehouse/sql file.
STORAGE_VIEWS = (
    "SELECT view_name, sql FROM duckdb_views() WHERE NOT internal AND view_name NOT IN (SELECT unnest($storage))"
)


def _stored_views(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """DuckDB's own text of every view (normalised by its parser: comments and layout gone)."""
    return dict(con.execute(STORAGE_VIEWS, {"storage": sorted(parts.TABLES)}).fetchall())


def test_every_current_view_is_one_file_in_dependency_order() -> None:
    files = {p.stem for p in views.SQL.glob("*.sql")}
    assert files == set(views.ORDER)
    assert [v.name for v in views.CURRENT] == list(views.ORDER)


def test_the_migrations_build_exactly_the_current_texts(head: Path) -> None:
    with db.connection(head) as con:
        built = _stored_views(con)
        assert set(built) == set(views.ORDER)
        con.execute("BEGIN")
        for view in views.CURRENT:
            con.execute(view.create_sql())
        current = _stored_views(con)
        con.execute("ROLLBACK")
    assert current == built


def test_the_newest_frozen_copy_of_each_view_is_its_current_text() -> None:
    """A change to warehouse/sql needs a new revision that freezes the new text (and creates it)."""
    chain = [s.revision for s in reversed(list(ScriptDirectory.from_config(migrate.alembic_config()).walk_revisions()))]
    folders = sorted(p.name for p in frozen.FROZEN.iterdir() if p.is_dir())
    assert set(folders) <= set(chain), "a folder of frozen views names no revision"
    for view in views.CURRENT:
        copies = [r for r in chain if (frozen.FROZEN / r / f"{view.name}.sql").exists()]
        assert copies, f"{view.name}: no revision creates it"
        (newest,) = frozen.views(copies[-1], (view.name,))
        assert newest.template == view.template, (
            f"warehouse/sql/{view.name}.sql differs from its copy frozen by revision {copies[-1]}: "
            "add a revision that freezes the new text and creates the view"
        )


# sections of the answer that are not columns of job_analytics (counted from insight_results)
API_ONLY_SECTIONS = {"insights"}


def _model_sections() -> dict[str, type[BaseModel]]:
    sections = {}
    for name, field in models.JobAnalytics.model_fields.items():
        if name in API_ONLY_SECTIONS:
            continue
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            sections[name] = field.annotation
    return sections


def _commented_sections() -> dict[str, list[str]]:
    """The columns under each ``-- <section>`` comment of job_analytics.sql's select list (a line
    ``x.name,`` or one that ends ``AS name,``)."""
    text = (views.SQL / "job_analytics.sql").read_text()
    select = text[text.index("SELECT") : text.index("@compact_list")]
    out: dict[str, list[str]] = {}
    section = None
    for line in select.splitlines():
        if comment := re.fullmatch(r"\s+-- (\w+).*", line):
            section = comment.group(1)
        elif (column := re.fullmatch(r"\s+(?:\w+\.(\w+)|.*\bAS (\w+)),", line)) and section is not None:
            out.setdefault(section, []).append(column.group(1) or column.group(2))  # x.name, or ... AS name
    return out


def test_sections_agree_in_the_view_the_queries_and_the_api_models(head: Path) -> None:
    with db.connection(head, read_only=True) as con:
        view_columns = [r[0] for r in con.execute("DESCRIBE job_analytics").fetchall()]
        result_columns = [r[0] for r in con.execute("DESCRIBE job_results").fetchall()]
    assert result_columns == view_columns
    in_sections = [c for columns in queries.SECTIONS.values() for c in columns]
    # every column of job_analytics is in exactly one section, or outside them all on purpose
    assert sorted(in_sections) == sorted(set(in_sections))
    assert set(view_columns) == set(in_sections) | OUTSIDE_SECTIONS
    assert not set(in_sections) & OUTSIDE_SECTIONS
    # the API's response models: the same sections, the same fields in the same order
    model_sections = _model_sections()
    assert list(model_sections) == list(queries.SECTIONS)
    for section, model in model_sections.items():
        assert tuple(model.model_fields) == queries.SECTIONS[section], section
    # the view's own section comments
    for section, columns in _commented_sections().items():
        if section in queries.SECTIONS:
            assert [c for c in columns if c not in OUTSIDE_SECTIONS] == list(queries.SECTIONS[section]), section
        else:
            assert set(columns) <= OUTSIDE_SECTIONS, section
    assert set(_commented_sections()) >= set(queries.SECTIONS)
