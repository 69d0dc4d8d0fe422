"""A pytest plugin: a brand-new warehouse file in a test is a copy of one built the real way.

A new warehouse is built directly at head (``warehouse/head.py``: the schema's tables, the
head's views, seed rows, the stamp), 0.19 CPU-s in a warm process; the chain it replaced cost
0.6 (docs/benchmark.md, "A new warehouse built at head"). Copying a file costs under a
millisecond, and some tests build hundreds (a hypothesis example each), so each test process
builds one warehouse with the real ``migrate.upgrade_locked`` and afterwards copies that file
where a test would have built a new one. What the tests check is unchanged: the copy holds the
same tables, views and rows as a file built in place. The direct build itself runs for the first
new warehouse of each process, in every test of tests/test_migrations.py (which also builds
through the chain and compares both) and in every ``runlytics`` subprocess (the CLI, crash and
hostile-input tests); PostgreSQL always runs the chain.

The copy is used only where it is equivalent: a whole new warehouse at "head" into a file that
does not exist yet, not asked to come from the chain. It is switched off for the process if the
build leaves anything beside the file or writes the file's own path into it (a later change
that did either would make copies wrong), and for the tests of a module listed in REAL_CHAIN or
marked ``real_migrations``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import duckdb
import pytest

from runlytics.warehouse import db, migrate

# modules whose tests are about building and upgrading warehouses: they build every one for real
REAL_CHAIN = frozenset({"test_migrations", "test_postgres_schema"})

_real_upgrade_locked = migrate.upgrade_locked
_template: Path | None = None
_template_revision = ""
_unusable = False  # the build's output was found to depend on where it was built
_active = True  # False during a test that wants a real build


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


def _upgrade_locked(
    path: Path, revision: str = "head", wait: float = db.DEFAULT_WAIT_SECONDS, *, chain: bool = False
) -> str:
    new_file = (
        isinstance(path, Path)
        and path.parent.is_dir()  # else the build's own error, not the copy's
        and not os.path.lexists(path)
        and not os.path.lexists(f"{path}.wal")
    )
    if not (_active and not _unusable and revision == "head" and new_file and not chain):
        return _real_upgrade_locked(path, revision, wait, chain=chain)
    template = _template or _build_template()
    if template is None:
        return _real_upgrade_locked(path, revision, wait)
    partial = path.with_name(f".{path.name}.template-copy")
    with db.private_files():  # the mode db.connect gives a warehouse it creates (umask | 077)
        shutil.copyfile(template, partial)
    os.replace(partial, path)  # whole or absent, as the build leaves it
    return _template_revision


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "real_migrations: build new warehouses for real, not as a copy")
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
