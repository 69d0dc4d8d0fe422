"""Session 20's review: ``snapshots.published_write``, the writer's sequence `db upgrade` and
`insights set` share (check the file, lock, check the snapshots folder and the warehouse, mark
unpublished, write, publish)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from runlytics.warehouse import db, snapshots
from runlytics.warehouse.lock import run_lock


def write_table(path: Path) -> None:
    con = duckdb.connect(str(path))
    try:
        con.execute("CREATE TABLE t AS SELECT 42 AS x")
        con.execute("CHECKPOINT")
    finally:
        con.close()


def lock_is_free(path: Path) -> bool:
    with run_lock(path, wait=0):
        return True


def test_the_body_runs_marked_and_its_commits_are_published(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    seen: list[bool] = []
    with snapshots.published_write(path, wait=0):
        seen.append(snapshots.unpublished(path).exists())  # marked before the first commit
        write_table(path)
    assert seen == [True]
    assert not snapshots.unpublished(path).exists()
    snapshot = snapshots.latest(path)
    assert snapshot is not None
    con = duckdb.connect(str(snapshot), read_only=True)
    try:
        assert con.execute("SELECT x FROM t").fetchall() == [(42,)]
    finally:
        con.close()
    assert lock_is_free(path)


def test_a_refused_check_leaves_no_marker_and_no_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    ran: list[str] = []

    def refuse() -> None:
        raise db.WarehouseError("written by a newer runlytics")

    with pytest.raises(db.WarehouseError, match="newer"), snapshots.published_write(path, wait=0, check=refuse):
        ran.append("body")
    assert ran == []
    assert not snapshots.unpublished(path).exists() and snapshots.latest(path) is None
    assert lock_is_free(path)


def test_the_snapshots_folder_is_checked_before_the_warehouse_as_ingest_does(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    snapshots.folder(path).write_text("a file where the folder goes")
    checked: list[str] = []
    writing = snapshots.published_write(path, wait=0, check=lambda: checked.append("warehouse"))
    with pytest.raises(db.WarehouseError, match="its snapshots folder"), writing:
        pass
    assert checked == [] and not snapshots.unpublished(path).exists()


def test_a_file_that_is_no_warehouse_is_refused_before_its_lock_file(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    path.write_text("not a warehouse\n")
    with pytest.raises(db.WarehouseError, match="not a DuckDB database file"), snapshots.published_write(path, 0):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.duckdb"]


def test_a_body_that_fails_leaves_the_marker_for_the_next_run_to_publish(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    with pytest.raises(OSError, match="disk full"), snapshots.published_write(path, wait=0):
        write_table(path)
        raise OSError("disk full")
    assert snapshots.unpublished(path).exists() and snapshots.latest(path) is None
    assert lock_is_free(path)


def test_a_busy_lock_is_waited_for_then_refused(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    with run_lock(path, wait=0), pytest.raises(db.WarehouseBusy), snapshots.published_write(path, wait=0):
        pass
    assert not snapshots.unpublished(path).exists()
