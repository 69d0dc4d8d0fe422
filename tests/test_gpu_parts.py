"""GPU samples in a hot table plus sealed Parquet parts (warehouse/parts.py), read through the view gpu_samples."""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest
from conftest import DEEP_ONLY, Lab

from runlytics.ingest.pipeline import ingest
from runlytics.warehouse import db, hotfile, migrate, parts, sidefiles, snapshots

DAY = datetime(2026, 1, 1)
T0 = int(DAY.replace(tzinfo=UTC).timestamp())
ROWS = "SELECT job_id, host, gpu_key, ts, utilization_percent, power_w, source FROM gpu_samples ORDER BY ALL"


def sample(
    t: float, util: float, *, job: str = "j", host: str = "node-01", gpu: int = 0, power: float = 100.0
) -> dict[str, Any]:
    return {"ts": t, "host": host, "job_id": job, "gpu_index": gpu, "gpu_uuid": f"GPU-{host}-{gpu}",
            "utilization_percent": util, "power_w": power}  # fmt: skip


def spool(folder: Path, name: str, samples: list[dict[str, Any]]) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text("".join(json.dumps(s) + "\n" for s in samples))
    return folder


def run(lab: Lab, folder: Path, **options: Any) -> None:
    summary = ingest(lab.db, [], spools=[folder], wait=10, **options)
    assert summary.failed == 0


SAMPLE_PARTS = "table_name = 'gpu_samples'"  # the minutes' parts are listed in gpu_parts too


def live(lab: Lab) -> list[tuple[Any, ...]]:
    return lab.query(f"SELECT day, host, rows FROM gpu_parts WHERE {SAMPLE_PARTS} ORDER BY ALL")


def part_files(lab: Lab) -> set[str]:
    folder = sidefiles.parts(lab.db)
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_cold_samples_go_straight_to_parts_and_read_back_the_same(lab: Lab, tmp_path: Path) -> None:
    samples = [sample(T0 + t, t % 100, gpu=g, power=200.0 + g) for t in range(0, 3600, 10) for g in range(2)]
    samples += [sample(T0 + 86400 + t, 50.0, host="node-02") for t in range(0, 600, 10)]
    run(lab, spool(tmp_path / "spool", "a.jsonl", samples))
    assert lab.query("SELECT count(*) FROM gpu_samples_hot") == [(0,)]
    assert live(lab) == [(DAY.date(), "node-01", 720), ((DAY + timedelta(days=1)).date(), "node-02", 60)]
    rows = lab.query(ROWS)
    expected = sorted(
        (s["job_id"], s["host"], f"GPU-{s['host']}-{s['gpu_index']}",
         datetime.fromtimestamp(s["ts"], UTC).replace(tzinfo=None),
         float(s["utilization_percent"]), s["power_w"], "spool")
        for s in samples
    )  # fmt: skip
    assert rows == expected
    # an independent reader of the part files finds the same rows, sorted by the key
    folder = sidefiles.parts(lab.db)
    read = []
    for (path,) in lab.query(f"SELECT path FROM gpu_parts WHERE {SAMPLE_PARTS}"):
        table = pq.read_table(folder / path)
        keys = list(zip(*(table.column(c).to_pylist() for c in ("job_id", "host", "gpu_key", "ts")), strict=True))
        assert keys == sorted(keys)
        read += keys
    assert sorted(read) == [r[:4] for r in expected]
    # the view names each part by its absolute path: a reader in another working directory reads it
    here = os.getcwd()
    try:
        os.chdir(tmp_path)
        con = duckdb.connect(str(snapshots.latest(lab.db)), read_only=True)
        assert con.execute("SELECT count(*) FROM gpu_samples").fetchone() == (len(samples),)
        con.close()
    finally:
        os.chdir(here)


def test_samples_of_the_current_hour_stay_hot_until_the_hour_is_sealed(lab: Lab, tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    cutoff = (now - parts.SEAL_LAG).replace(minute=0, second=0, microsecond=0)
    recent = int(cutoff.replace(tzinfo=UTC).timestamp()) + 1
    run(lab, spool(tmp_path / "spool", "a.jsonl", [sample(recent + t, 10.0) for t in range(5)]))
    assert lab.query("SELECT count(*) FROM gpu_samples_hot") == [(5,)]
    assert live(lab) == []
    # an hour later they are past the cutoff: the next run seals them (the view reads the same)
    with db.connection(lab.db) as con, db.atomic(con):
        assert parts.seal(con, parts.GPU_SAMPLES, cutoff + timedelta(hours=1)) == 5
    assert lab.query("SELECT count(*) FROM gpu_samples_hot") == [(0,)]
    assert [r[2] for r in live(lab)] == [5]
    assert [r[4] for r in lab.query(ROWS)] == [10.0] * 5


def test_a_sample_seen_twice_is_stored_once_the_later_wins_across_hot_and_parts(lab: Lab, tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    run(lab, spool(folder, "a.jsonl", [sample(T0 + t, 10.0) for t in range(10)]))
    before = part_files(lab)
    run(lab, spool(folder, "b.jsonl", [sample(T0 + t, 20.0) for t in range(5, 15)]))
    assert [(r[3].second, r[4]) for r in lab.query(ROWS)] == [(t, 10.0 if t < 5 else 20.0) for t in range(15)]
    # the part holding the replaced samples was retired (its file waits for the snapshots)
    assert lab.query("SELECT count(*) FROM gpu_parts_retired") >= [(1,)]
    assert before <= part_files(lab)
    # a hot sample replaced by the same sample arriving late, after the hour turned
    with db.connection(lab.db) as con:
        con.execute(
            "INSERT INTO gpu_samples_hot SELECT * REPLACE (ts + INTERVAL 1 HOUR AS ts, 'x' AS source) FROM gpu_samples"
        )
    run(lab, spool(folder, "c.jsonl", [sample(T0 + 3600 + t, 30.0) for t in range(3)]))
    late = lab.query(
        "SELECT second(ts), utilization_percent, source FROM gpu_samples WHERE ts >= $t ORDER BY 1",
        {"t": DAY + timedelta(hours=1)},
    )
    assert late == [(t, 30.0 if t < 3 else (10.0 if t < 5 else 20.0), "spool" if t < 3 else "x") for t in range(15)]
    assert lab.query("SELECT count(*) FROM gpu_samples_hot") == [(0,)]


def test_a_hot_sample_sent_again_replaces_the_stored_one_without_a_key_index(lab: Lab, tmp_path: Path) -> None:
    """The hot table has no primary key (revision 0026): ingest keeps one row per key itself."""
    now = datetime.now(UTC).replace(tzinfo=None)
    hour = int(((now - parts.SEAL_LAG).replace(minute=0, second=0, microsecond=0)).replace(tzinfo=UTC).timestamp())
    folder = tmp_path / "spool"
    run(lab, spool(folder, "a.jsonl", [sample(hour + t, 10.0, gpu=g) for t in range(10) for g in range(2)]))
    # a second file resends part of the first, each of its samples twice
    resent = [sample(hour + t, 20.0 + t, gpu=0) for t in range(5, 15)]
    spool(folder, "b.jsonl", resent + resent)
    run(lab, folder)
    run(lab, folder)  # nothing new: idempotent
    # (read through the view: an hour turning during the test seals the rows, with the same values)
    hot = lab.query("SELECT gpu_key, second(ts), utilization_percent FROM gpu_samples ORDER BY ALL")
    expected = [("GPU-node-01-0", t, 10.0 if t < 5 else 20.0 + t) for t in range(15)]
    expected += [("GPU-node-01-1", t, 10.0) for t in range(10)]
    assert hot == sorted(expected)
    keys = "SELECT count(*) FROM duckdb_constraints() WHERE table_name = $t AND constraint_type = 'PRIMARY KEY'"
    assert lab.query(keys, {"t": "gpu_samples_hot"}) == [(0,)]


def test_late_samples_of_another_job_add_a_part_without_rewriting(lab: Lab, tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    run(lab, spool(folder, "a.jsonl", [sample(T0 + t, 10.0) for t in range(100)]))
    with db.connection(lab.db) as con, db.atomic(con):
        con.execute(
            "CREATE TEMP TABLE late AS SELECT * REPLACE ('k' AS job_id, 20.0 AS utilization_percent) "
            "FROM gpu_samples WHERE second(ts) BETWEEN 50 AND 59"
        )
        assert parts.store_cold(con, parts.GPU_SAMPLES, "late") == 1
        parts.refresh_view(con, parts.GPU_SAMPLES)
        assert con.execute("SELECT count(*) FROM gpu_parts_retired").fetchone() == (0,)
        assert con.execute(f"SELECT count(*) FROM gpu_parts WHERE {SAMPLE_PARTS}").fetchone() == (2,)
    assert lab.query("SELECT job_id, count(*), sum(utilization_percent) FROM gpu_samples GROUP BY 1 ORDER BY 1") == [
        ("j", 100, 1000.0),
        ("k", 10, 200.0),
    ]


def test_compaction_merges_a_complete_day_into_one_part(lab: Lab, tmp_path: Path) -> None:
    for n in range(4):  # one run per file: a part each, the day's earlier parts merged as it goes
        run(lab, spool(tmp_path / f"spool-{n}", "a.jsonl", [sample(T0 + 3600 * n + t, float(n)) for t in range(20)]))
        assert live(lab) == [(DAY.date(), "node-01", 20 * (n + 1))]
    assert [r[4] for r in lab.query(ROWS)] == [float(n) for n in range(4) for _ in range(20)]
    assert lab.query(f"SELECT count(*) FROM gpu_parts_retired WHERE {SAMPLE_PARTS}") == [
        (6,)
    ]  # 3 merged away, 3 merges
    # an incomplete day (it ends after the cutoff) is left alone
    with db.connection(lab.db) as con, db.atomic(con):
        con.execute("CREATE TEMP TABLE more AS SELECT * REPLACE (ts + INTERVAL 5 HOUR AS ts) FROM gpu_samples")
        parts.store_cold(con, parts.GPU_SAMPLES, "more")
        assert parts.compact(con, parts.GPU_SAMPLES, DAY + timedelta(hours=23)) == 0
        assert parts.compact(con, parts.GPU_SAMPLES, DAY + timedelta(hours=24)) == 1


def test_a_reader_of_an_old_snapshot_reads_on_while_parts_are_replaced_and_files_go_later(
    lab: Lab, tmp_path: Path
) -> None:
    folder = tmp_path / "spool"
    run(lab, spool(folder, "a.jsonl", [sample(T0 + t, 10.0) for t in range(30)]))
    reader_path = snapshots.latest(lab.db)
    reader = snapshots.connect_latest(lab.db)
    assert reader.execute("SELECT sum(utilization_percent) FROM gpu_samples").fetchone() == (300.0,)
    first = set(lab.query("SELECT path FROM gpu_parts"))
    # replaced (rewritten by a re-sent sample), then compacted: the old part is retired
    run(lab, spool(folder, "b.jsonl", [sample(T0, 40.0)] + [sample(T0 + 100 + t, 1.0) for t in range(5)]))
    assert first <= set(lab.query("SELECT path FROM gpu_parts_retired"))
    assert reader.execute("SELECT sum(utilization_percent) FROM gpu_samples").fetchone() == (300.0,)
    assert lab.query("SELECT sum(utilization_percent) FROM gpu_samples") == [(335.0,)]
    # the file outlives every snapshot that may name it, plus the grace time: the reader's copy is
    # no longer kept (snapshots.KEEP), but the reader holds it open and reads on for the grace time
    assert snapshots.KEEP > 1 or reader_path not in set(snapshots.folder(lab.db).iterdir())
    for _ in range(snapshots.KEEP):
        snapshots.publish(lab.db)
    with db.connection(lab.db) as con, db.atomic(con):
        assert parts.delete_retired(con, grace=3600) == 0  # retired a moment ago
    assert reader.execute("SELECT sum(utilization_percent) FROM gpu_samples").fetchone() == (300.0,)
    with db.connection(lab.db) as con, db.atomic(con):
        assert parts.delete_retired(con, grace=0) >= 1
    assert lab.query("SELECT count(*) FROM gpu_parts_retired") == [(0,)]
    files = part_files(lab)
    assert files == {path for (path,) in lab.query("SELECT path FROM gpu_parts")}
    reader.close()


def test_files_of_a_killed_run_are_removed_by_the_next(lab: Lab, tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    run(lab, spool(folder, "a.jsonl", [sample(T0 + t, 10.0) for t in range(30)]))
    kept = part_files(lab)
    stray = sidefiles.parts(lab.db) / "gpu_samples" / "day=2026-01-01" / "host=node-01"
    (stray / "01000000000000000000-deadbeef.parquet").write_bytes(b"PAR1 torn")
    (stray / "01000000000000000001-deadbeef.parquet.tmp").write_bytes(b"PAR1")
    (stray / "notes.txt").write_text("not ours")
    run(lab, spool(folder, "b.jsonl", [sample(T0 + 7200, 5.0, host="node-09")]))
    files = part_files(lab)
    assert kept <= files and "gpu_samples/day=2026-01-01/host=node-01/notes.txt" in files
    assert not any("deadbeef" in f for f in files)


def test_hot_rows_of_an_upgraded_warehouse_are_sealed_and_the_file_rebuilt_small(
    lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrate.upgrade(lab.db)
    with db.connection(lab.db) as con:
        con.execute(
            "INSERT INTO gpu_samples_hot SELECT 'j', 'h' || (i % 4), 0, TIMESTAMP '2026-01-01' + to_seconds(i), NULL, "
            "i % 100, random() * 1000, NULL, 50, 200, NULL, 0, 'spool', '#' || (i % 7) FROM range(1000000) r(i)"
        )
        con.execute("CHECKPOINT")
    big = lab.db.stat().st_size
    before = lab.query("SELECT sum(utilization_percent), count(*) FROM gpu_samples")
    monkeypatch.setattr(hotfile, "MIN_BYTES", 0)
    # the half-built copy of a run killed while rebuilding is deleted by the next run
    torn = lab.db.with_name(lab.db.name + hotfile.TMP_SUFFIX)
    torn.write_bytes(b"torn")
    run(lab, spool(tmp_path / "spool", "a.jsonl", [sample(T0, 1.0, host="h9")]))
    assert lab.query("SELECT count(*) FROM gpu_samples_hot") == [(0,)]
    assert lab.query("SELECT sum(utilization_percent) - 1, count(*) - 1 FROM gpu_samples") == before
    assert lab.query(f"SELECT count(DISTINCT host) FROM gpu_parts WHERE {SAMPLE_PARTS}") == [(5,)]
    # the rows left the file: it was rebuilt, and the snapshot is a copy of the small file
    assert lab.db.stat().st_size < big / 2, (lab.db.stat().st_size, big)
    assert snapshots.latest(lab.db).stat().st_size == lab.db.stat().st_size
    assert not list(tmp_path.rglob("*" + hotfile.TMP_SUFFIX))
    assert lab.db.stat().st_mode & 0o077 == 0  # as private as the file it replaced
    assert lab.query("SELECT count(*) FROM gpu_samples") == [(before[0][1] + 1,)]


def block_size(path: Path) -> int:
    with db.connection(path, read_only=True) as con:
        row = con.execute("SELECT block_size FROM pragma_database_size() WHERE database_name = current_database()")
        return int(row.fetchone()[0])  # type: ignore[index]


def test_a_new_warehouse_has_small_blocks_and_its_first_ingest_is_not_rebuilt(
    lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The head build creates the file with hotfile.BLOCK_SIZE blocks: no rebuild at the end of a
    first ingest, whatever its size."""
    monkeypatch.setattr(hotfile, "CONVERT_MIN_BYTES", 0)
    migrate.upgrade(lab.db)
    assert block_size(lab.db) == hotfile.BLOCK_SIZE
    inode = lab.db.stat().st_ino
    run(lab, spool(tmp_path / "spool", "a.jsonl", [sample(T0 + t, 1.0, gpu=g) for t in range(600) for g in range(4)]))
    assert lab.db.stat().st_ino == inode
    assert block_size(lab.db) == hotfile.BLOCK_SIZE
    assert block_size(snapshots.latest(lab.db)) == hotfile.BLOCK_SIZE
    assert lab.query("SELECT count(*) FROM gpu_samples") == [(2400,)]


def test_a_file_of_default_blocks_is_rebuilt_once_with_small_blocks(
    lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DuckDB's 256 KiB blocks are most of a warehouse whose rows are in parts: a run rebuilds the
    file with hotfile.BLOCK_SIZE once (the same rows), and later runs leave it."""
    monkeypatch.setattr(hotfile, "CONVERT_MIN_BYTES", 0)
    migrate.upgrade(lab.db, chain=True)  # as a warehouse created before the head build's small blocks
    assert block_size(lab.db) == 262144  # DuckDB's default
    folder = tmp_path / "spool"
    run(lab, spool(folder, "a.jsonl", [sample(T0 + t, float(t % 100), gpu=g) for t in range(600) for g in range(4)]))
    assert block_size(lab.db) == hotfile.BLOCK_SIZE
    assert block_size(snapshots.latest(lab.db)) == hotfile.BLOCK_SIZE
    assert lab.query("SELECT count(*), sum(utilization_percent) FROM gpu_samples") == [(2400, 4 * 6 * sum(range(100)))]
    inode = lab.db.stat().st_ino
    run(lab, spool(folder, "b.jsonl", [sample(T0 + 600 + t, 1.0) for t in range(60)]))
    assert lab.db.stat().st_ino == inode  # not rebuilt again
    assert lab.query("SELECT count(*) FROM gpu_samples") == [(2460,)]


def test_a_big_first_ingest_never_passes_through_the_duckdb_file(lab: Lab, tmp_path: Path) -> None:
    samples = [sample(T0 + t, float(t % 100), gpu=g) for t in range(20000) for g in range(8)]
    run(lab, spool(tmp_path / "spool", "a.jsonl", samples))
    assert lab.query("SELECT count(*) FROM gpu_samples") == [(160000,)]
    stored = sum(p.stat().st_size for p in sidefiles.parts(lab.db).rglob("*.parquet"))
    assert stored / 160000 < 10  # bytes per sample in the parts
    assert lab.db.stat().st_size < 8 * 2**20


def test_a_warehouse_moved_with_its_parts_reads_them_after_the_next_run(lab: Lab, tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    run(lab, spool(folder, "a.jsonl", [sample(T0 + t, 10.0) for t in range(30)]))
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.move(lab.db, moved / lab.db.name)
    shutil.move(sidefiles.parts(lab.db), sidefiles.parts(moved / lab.db.name))
    other = Lab(moved)
    run(other, spool(folder, "b.jsonl", [sample(T0 + 7200, 5.0, host="node-09")]))
    assert other.query("SELECT count(*) FROM gpu_samples") == [(31,)]


@DEEP_ONLY  # a downgrade with data, ~9 s (docs/testing.md, "Deep runs")
def test_migration_down_folds_the_parts_back_into_a_table_and_up_again(lab: Lab, tmp_path: Path) -> None:
    from alembic import command
    from sqlalchemy import create_engine

    folder = tmp_path / "spool"
    run(lab, spool(folder, "a.jsonl", [sample(T0 + t, float(t), gpu=g) for t in range(50) for g in range(2)]))
    run(lab, spool(folder, "b.jsonl", [sample(T0 + t, 99.0) for t in range(40, 60)]))
    rows = lab.query(ROWS)
    assert len(rows) == 110 and lab.query("SELECT count(*) FROM gpu_parts") != [(0,)]

    def alembic(action: str, revision: str) -> None:
        engine = create_engine(f"duckdb:///{lab.db}")
        with engine.connect() as conn:
            config = migrate.alembic_config()
            config.attributes["connection"] = conn
            getattr(command, action)(config, revision)
            conn.commit()
        engine.dispose()

    alembic("downgrade", "0013")
    assert lab.query("SELECT table_type FROM information_schema.tables WHERE table_name = 'gpu_samples'") == [
        ("BASE TABLE",)
    ]
    assert lab.query(ROWS) == rows
    alembic("upgrade", "head")
    assert lab.query(ROWS) == rows
    run(lab, spool(folder, "c.jsonl", [sample(T0 + 7200, 5.0)]))
    assert len(lab.query(ROWS)) == 111


def test_a_reader_whose_copy_was_replaced_before_it_opened_it_opens_the_newer(
    lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One copy is kept (snapshots.KEEP): a reader that listed the folder just before a publish
    finds its copy gone and lists again, instead of falling back to the warehouse."""
    run(lab, spool(tmp_path / "spool", "a.jsonl", [sample(T0 + t, 10.0) for t in range(30)]))
    gone = snapshots.latest(lab.db)
    assert gone is not None
    newer = snapshots.publish(lab.db)
    assert not gone.exists() and snapshots.KEEP == 1
    listed = iter([gone, newer])
    monkeypatch.setattr(snapshots, "latest", lambda db_path: next(listed))
    con = snapshots.connect_latest(lab.db)
    assert con.execute("SELECT count(*) FROM gpu_samples").fetchone() == (30,)
    assert con.execute("SELECT current_setting('parquet_metadata_cache')").fetchone() == (True,)
    con.close()
    listed = iter([gone, newer, newer])
    reader = snapshots.Reader(lab.db)
    assert reader.cursor().execute("SELECT count(*) FROM gpu_samples").fetchone() == (30,)
    assert reader.snapshot == newer


def test_a_warehouse_folder_named_like_a_glob_reads_its_own_parts(tmp_path: Path) -> None:
    """DuckDB takes '[1]' in a read_parquet path as a pattern: 'g[1]/...' would read 'g1/...'. The
    parts' paths are escaped, so a decoy copy in 'g1' (every reading 999) is never read."""
    warehouse = tmp_path / "g[1]" / "w.duckdb"
    samples = [sample(T0 + t, t % 100, gpu=g) for t in range(0, 3600, 10) for g in range(2)]
    summary = ingest(warehouse, [], spools=[spool(tmp_path / "spool", "a.jsonl", samples)], wait=10)
    assert summary.failed == 0
    shutil.copytree(tmp_path / "g[1]", tmp_path / "g1")
    decoys = sorted((tmp_path / "g1").rglob("*.parquet"))
    assert decoys  # the samples were sealed: the view reads parts
    with duckdb.connect() as con:
        for decoy in decoys:
            table = pq.read_table(decoy)
            column = table.schema.get_field_index("utilization_percent")
            if column >= 0:
                table = table.set_column(column, table.schema.field(column), [[999.0] * table.num_rows])
            pq.write_table(table, decoy)
    expected = [(720, sum(t % 100 for t in range(0, 3600, 10)) * 2)]
    with db.connection(warehouse, read_only=True) as con:
        assert con.execute("SELECT count(*), sum(utilization_percent) FROM gpu_samples").fetchall() == expected
    with db.connection(snapshots.latest(warehouse), read_only=True) as con:
        assert con.execute("SELECT count(*), sum(utilization_percent) FROM gpu_samples").fetchall() == expected
