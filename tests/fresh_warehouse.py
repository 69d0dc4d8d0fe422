"""A pytest plugin: a brand-new warehouse file in a test is a copy of one the real chain built.

Building a warehouse runs the whole alembic chain (24 revisions, about 200 statements): 0.75 s
on an idle core, 1 s under CI's load, paid again by every test that ingests into a new file --
a third of the suite's time. The chain's result does not depend on the file it is built in, so
each test process builds one warehouse with the real ``migrate.upgrade_locked`` and afterwards
copies that file where a test would have built a new one. What the tests check is unchanged:
the copy holds the same tables, views, macros and rows as a file built in place, and the chain
itself is still run, by the first new warehouse of each process and by every test of
tests/test_migrations.py and of PostgreSQL (which never take the copy). Runs of ``runlytics`` in
a subprocess (the CLI, crash and hostile-input tests) build their warehouses for real too.

The copy is used only where it is equivalent: the whole chain ("head") into a file that does not
exist yet. It is switched off for the process if the chain leaves anything beside the file or
writes the file's own path into it (a later revision that did either would make copies wrong),
and for the tests of a module listed in REAL_CHAIN or marked ``real_migrations``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import duckdb
import pytest

from runlytics.warehouse import db, migrate

# modules whose tests are about building and upgrading warehouses: they run the chain every time
REAL_CHAIN = frozenset({"test_migrations", "test_postgres_schema"})

_real_upgrade_locked = migrate.upgrade_locked
_template: Path | None = None
_template_revision = ""
_unusable = False  # the chain's output was found to depend on where it was built
_active = True  # False during a test that wants the real chain


def _build_template() -> Path | None:
    global _template, _template_revision, _unusable
    folder = Path(tempfile.mkdtemp(prefix="runlytics-template-"))
    path = folder / "template.duckdb"
    revision = _real_upgrade_locked(path)
    beside = {p.name for p in folder.iterdir()} - {path.name}
    with duckdb.connect(str(path), read_only=True) as con:
        texts = [row[0] or "" for row in con.execute("SELECT sql FROM duckdb_views() WHERE NOT internal").fetchall()]
        texts += [row[0] or "" for row in con.execute("SELECT sql FROM duckdb_tables()").fetchall()]
    if beside or any(str(folder) in text for text in texts) or str(folder).encode() in path.read_bytes():
        _unusable = True
        shutil.rmtree(folder, ignore_errors=True)
        return None
    _template, _template_revision = path, revision
    return path


def _upgrade_locked(path: Path, revision: str = "head", wait: float = db.DEFAULT_WAIT_SECONDS) -> str:
    new_file = (
        isinstance(path, Path)
        and path.parent.is_dir()  # else the chain's own error, not the copy's
        and not os.path.lexists(path)
        and not os.path.lexists(f"{path}.wal")
    )
    if not (_active and not _unusable and revision == "head" and new_file):
        return _real_upgrade_locked(path, revision, wait)
    template = _template or _build_template()
    if template is None:
        return _real_upgrade_locked(path, revision, wait)
    partial = path.with_name(f".{path.name}.template-copy")
    with db.private_files():  # the mode db.connect gives a warehouse it creates (umask | 077)
        shutil.copyfile(template, partial)
    os.replace(partial, path)  # whole or absent, as a chain that commits once leaves it
    return _template_revision


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "real_migrations: build new warehouses with the alembic chain, not a copy")
    migrate.upgrade_locked = _upgrade_locked


def pytest_unconfigure(config: pytest.Config) -> None:
    migrate.upgrade_locked = _real_upgrade_locked
    if _template is not None:
        shutil.rmtree(_template.parent, ignore_errors=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> object:
    global _active
    module = getattr(item, "module", None)
    name = module.__name__.rpartition(".")[2] if module is not None else ""
    _active = name not in REAL_CHAIN and item.get_closest_marker("real_migrations") is None
    try:
        return (yield)
    finally:
        _active = True
