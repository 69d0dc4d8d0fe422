"""Session 20's archive audit: every host is read back exactly from `ingest --archive DIR`.

- A host whose escaped name passed 200 bytes was cut at 150 escaped bytes, which could split an
  escape or a UTF-8 sequence (30 Japanese characters): DuckDB, pandas and polars then failed on
  the whole archive. A long ASCII name read back as its cut form, and the files leave the host
  out, so the true name was lost. A host named `__HIVE_DEFAULT_PARTITION__` was read as NULL
  (pandas failed).
- Now a host is its folder's value, whole, where `host=` and its escaped name fit in 255 bytes
  and readers do not take it for NULL; any other is archived under a stand-in (whole characters,
  `~`, 32 hex digits of its SHA-256) that `DIR/_hosts.jsonl` maps back, and docs/ingest.md's
  recipes, run here as written there, read every host as it was stored.
"""

from __future__ import annotations

import hashlib
import json
import re
import signal
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import duckdb
import pytest
from conftest import REPO, Lab
from test_archive_s17 import T0, _line, _newest
from test_crash import KILL_AT

from runlytics.ingest.pipeline import ingest
from runlytics.warehouse import parts, retention

LONG = "h" * 300
# its stand-in, as docs/ingest.md gives it: 150 escaped bytes of it, ~ and 32 hex digits of its SHA-256
LONG_STAND_IN = "h" * 150 + "~" + hashlib.sha256(LONG.encode()).hexdigest()[:32]
HOSTS = [
    "", "123", "007", "2024-01-01", "true", "NULL", "nan", " ", "a+b", "-dash", ".", "..", "a/b", "x=1%",
    'node "1"\\\n,', "tab\there", "ctl\x01\x1f\x7f", "cr\r\n", "ünï", "%41", "~tilde",
    "日" * 27,  # host= and 243 escaped bytes: fits
    "日" * 28,  # 252 escaped bytes: a stand-in
    "日" * 30,  # the audit's (a)
    "🚀" * 21,  # 4-byte characters: a stand-in cut at whole ones
    "h" * 250,  # 255 bytes with host=: fits
    "h" * 251,
    "h" * 250 + ".example.com",  # the audit's (b)
    "__HIVE_DEFAULT_PARTITION__",  # the audit's (c)
    "%5F_HIVE_DEFAULT_PARTITION__",
    "n~" + "0" * 32,  # looks like a stand-in
    LONG,
    LONG_STAND_IN,  # another host's stand-in, as a host of its own
]  # fmt: skip
SAMPLES = (0, 30)  # seconds after 10:00 of day 0, per host


def _archive(lab: Lab, tmp_path: Path, hosts: list[str]) -> tuple[Path, Counter[tuple[Any, ...]]]:
    """Two samples of each host on day 0, pruned to the archive; the (host, job, GPU, time)s stored."""
    spool, archive = tmp_path / "spool", tmp_path / "archive"
    _newest(spool)
    at = T0 + timedelta(hours=10)
    lines = [_line("jobA", h or None, f"GPU-{i}", 0, at + timedelta(seconds=s)) for i, h in enumerate(hosts)
             for s in SAMPLES]  # fmt: skip
    (spool / "a.jsonl").write_text("".join(lines))
    ingest(lab.db, [], spools=[spool], keep_raw_days=1, archive=archive)
    want = Counter((h, "jobA", f"GPU-{i}", at + timedelta(seconds=s)) for i, h in enumerate(hosts) for s in SAMPLES)
    assert not lab.query("SELECT * FROM gpu_samples WHERE CAST(ts AS DATE) = DATE '2026-01-01'")  # all pruned
    return archive, want


# --- docs/ingest.md's recipes, as written there --------------------------------------------------

RECIPES = re.compile(r"```(?:python)?\n(.*?)```", re.S)


def _recipes() -> tuple[str, str, str]:
    """The DuckDB, pandas and polars recipes of docs/ingest.md's archive paragraph."""
    text = (REPO / "docs" / "ingest.md").read_text()
    start = text.index("Read the archive as follows")
    duck, pandas, polars = RECIPES.findall(text[start : text.index("Until session 20", start)])
    return duck, pandas, polars


def _by_recipe(archive: Path) -> dict[str, Counter[tuple[Any, ...]]]:
    """The archive's (host, job, GPU, time) rows as each documented recipe reads them."""
    duck, pandas, polars = (recipe.replace("DIR", str(archive)) for recipe in _recipes())
    columns = ["host", "job_id", "gpu_key", "ts"]
    read: dict[str, Counter[tuple[Any, ...]]] = {}
    with duckdb.connect() as con:
        query = f"SELECT {', '.join(columns)} FROM ({duck.rstrip().rstrip(';')})"
        read["duckdb"] = Counter(con.execute(query).fetchall())
    scope: dict[str, Any] = {}
    exec(pandas, scope)  # noqa: S102 - the documentation's own code
    frame = scope["samples"]
    read["pandas"] = Counter(
        (r.host, r.job_id, r.gpu_key, r.ts.to_pydatetime()) for r in frame[columns].itertuples(index=False)
    )
    scope = {}
    exec(polars, scope)  # noqa: S102
    read["polars"] = Counter(scope["samples"].select(columns).rows())
    return read


def test_every_reader_reads_every_host_back_exactly(lab: Lab, tmp_path: Path) -> None:
    archive, want = _archive(lab, tmp_path, HOSTS)
    for reader, rows in _by_recipe(archive).items():
        lost = sorted(repr(k[0])[:40] for k in want - rows)
        extra = sorted(repr(k[0])[:40] for k in rows - want)
        assert (lost, extra) == ([], []), reader


@pytest.mark.parametrize(
    "host", ["日" * 30, "h" * 250 + ".example.com", "__HIVE_DEFAULT_PARTITION__"], ids=["cjk", "long", "hive-null"]
)
def test_one_such_host_beside_another_is_read_back(lab: Lab, tmp_path: Path, host: str) -> None:
    """The audit's three command lines: the host and another, each archive read by each recipe."""
    archive, want = _archive(lab, tmp_path, [host, "other"])
    assert all(rows == want for rows in _by_recipe(archive).values())


def test_the_plain_hive_readers_no_longer_fail_on_the_whole_archive(lab: Lab, tmp_path: Path) -> None:
    """Without the stand-ins' list a reader still reads every row: a stand-in is valid UTF-8 and no
    reader's NULL (before, one such host stopped DuckDB and pandas and lost rows in polars)."""
    import pandas as pd
    import polars as pl

    archive, want = _archive(lab, tmp_path, HOSTS)
    pattern = str(archive / "**" / "*.parquet")
    by_duckdb = duckdb.sql(f"SELECT host FROM read_parquet('{pattern}', hive_partitioning = true)").fetchall()
    by_pandas = pd.read_parquet(archive)["host"]
    by_polars = pl.scan_parquet(pattern, hive_partitioning=True).select("host").collect()["host"]
    assert len(by_duckdb) == len(by_pandas) == len(by_polars) == sum(want.values())
    assert None not in {h for (h,) in by_duckdb} and not by_pandas.isna().any() and not by_polars.is_null().any()


# --- the folders and the list of stand-ins ------------------------------------------------------------


def test_folder_names_fit_and_a_stand_in_is_listed_once(lab: Lab, tmp_path: Path) -> None:
    archive, _ = _archive(lab, tmp_path, HOSTS)
    folders = sorted(p.parent.name for p in archive.rglob("*.parquet"))
    assert len(folders) == len(set(folders)) == len(HOSTS)  # a folder per host
    assert all(name.isascii() and len(name) <= parts.NAME_MAX for name in folders)
    listed = [json.loads(line) for line in (archive / retention.HOSTS_FILE).read_text().splitlines()]
    stand_ins = {parts.host_value(h): h for h in HOSTS if h and parts.host_value(h) != h}
    assert {e["stand_in"]: e["host"] for e in listed} == stand_ins and len(listed) == len(stand_ins)
    assert set(stand_ins.values()) == {
        "日" * 28, "日" * 30, "🚀" * 21, "h" * 251, "h" * 250 + ".example.com", "__HIVE_DEFAULT_PARTITION__",
        "n~" + "0" * 32, LONG, LONG_STAND_IN,
    }  # fmt: skip
    # the others are their folder's value, whole
    assert {unquote(name.removeprefix("host=")) for name in folders} - set(stand_ins) == set(HOSTS) - set(
        stand_ins.values()
    )


def test_a_stand_in_is_cut_at_whole_characters() -> None:
    for host, kept in (("日" * 30, "日" * 16), ("🚀" * 21, "🚀" * 12), ("h" * 251, "h" * 150), ("%" * 90, "%" * 50)):
        value = parts.host_value(host)
        assert value.startswith(kept + "~") and len(value) == len(kept) + 33, host[:5]
        assert unquote(parts.escape(value), errors="strict") == value
        assert parts.STAND_IN_TAIL.search(value)
    assert parts.host_value(LONG) == LONG_STAND_IN
    assert parts.host_value("日" * 27) == "日" * 27 and parts.host_value("h" * 250) == "h" * 250
    assert parts.host_value("n~" + "0" * 32) != "n~" + "0" * 32  # looks like a stand-in: gets one


def test_the_list_is_there_empty_without_stand_ins_and_keeps_lines_it_cannot_read(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    retention.list_host(archive, "node-1")
    assert (archive / retention.HOSTS_FILE).read_text() == ""
    (archive / retention.HOSTS_FILE).write_text('{"edited": by hand')  # no newline at its end
    for _ in range(2):
        retention.list_host(archive, LONG)
    lines = (archive / retention.HOSTS_FILE).read_text().split("\n")
    assert lines == ['{"edited": by hand', json.dumps({"stand_in": LONG_STAND_IN, "host": LONG}), ""]
    assert not list(archive.glob("*.tmp"))


def test_a_long_hosts_day_pruned_again_is_merged_in_its_stand_in_folder(lab: Lab, tmp_path: Path) -> None:
    """A copy of a pruned spool file: stored again, pruned again, archived once under the stand-in."""
    archive, want = _archive(lab, tmp_path, [LONG, "日" * 30])
    (tmp_path / "spool" / "copy.jsonl").write_text((tmp_path / "spool" / "a.jsonl").read_text())
    ingest(lab.db, [], spools=[tmp_path / "spool"], keep_raw_days=1, archive=archive)
    assert len(list(archive.rglob("*.parquet"))) == 2
    assert len((archive / retention.HOSTS_FILE).read_text().splitlines()) == 2
    assert all(rows == want for rows in _by_recipe(archive).values())


# --- the parts' own folders ---------------------------------------------------------------------------


def test_the_parts_read_every_host_back_and_name_folders_apart(lab: Lab, tmp_path: Path) -> None:
    """The parts are read by path (the manifest holds the host), never by folder name: every host
    reads back from the view; the unknown host and one named Hive's way no longer share a folder."""
    spool = tmp_path / "spool"
    _newest(spool)
    at = T0 + timedelta(hours=10)
    (spool / "a.jsonl").write_text("".join(_line("jobA", h or None, f"GPU-{i}", 0, at) for i, h in enumerate(HOSTS)))
    ingest(lab.db, [], spools=[spool], keep_raw_days=0)
    assert sorted(h for (h,) in lab.query("SELECT host FROM gpu_samples WHERE job_id = 'jobA'")) == sorted(HOSTS)
    folders = lab.query("SELECT host, path FROM gpu_parts WHERE table_name = 'gpu_samples' AND day = DATE '2026-01-01'")
    by_folder = {Path(path).parent.name: host for host, path in folders}
    assert len(by_folder) == len(HOSTS) and all(len(name) <= parts.NAME_MAX for name in by_folder)


# --- archives written before session 20 (review of b690acd) -------------------------------------------

# Hosts whose folder session 20 renamed, and one whose folder it kept: a name over 200 escaped bytes
# (cut at 150 and a 16-digit hash), one whose cut split an escape (readers failed on the whole
# archive), one that looks like a stand-in (its own name before, a stand-in now).
RENAMED = ["h" * 220, "日" * 27, "n~" + "0" * 32]


def _old_value(host: str) -> str:
    """A host's folder value, escaped, as archives written before session 20 named it (the rule of
    `git show b9d106c:warehouse/parts.py`), written out here as that code had it."""
    text = quote(host, safe="")
    if len(text) > 200:
        text = text[:150] + "~" + hashlib.sha256(host.encode()).hexdigest()[:16]
    return text


def _as_before_session_20(archive: Path, hosts: list[str]) -> None:
    """Lay an archive out as the code before session 20 wrote it: each host's folder by the old rule,
    and no list of stand-ins."""
    day = archive / "day=2026-01-01"
    for host in hosts:
        old = day / f"host={_old_value(host)}"
        assert old != retention.archive_folder(archive, T0.date(), host), host  # the folder was renamed
        retention.archive_folder(archive, T0.date(), host).rename(old)
    (archive / retention.HOSTS_FILE).unlink()


def _copy_pruned_again(tmp_path: Path) -> None:
    """A copy of the pruned spool file: its samples are stored again, and pruned again."""
    (tmp_path / "spool" / "copy.jsonl").write_text((tmp_path / "spool" / "a.jsonl").read_text())


def test_a_day_archived_by_the_old_rule_pruned_again_is_merged_into_the_hosts_folder(lab: Lab, tmp_path: Path) -> None:
    """The review's arch_repro.sh: before, the samples went to the new folder beside the old one's
    (each twice, and the old cut name read back as a host of its own)."""
    archive, want = _archive(lab, tmp_path, [*RENAMED, "other"])
    _as_before_session_20(archive, RENAMED)
    _copy_pruned_again(tmp_path)
    ingest(lab.db, [], spools=[tmp_path / "spool"], keep_raw_days=1, archive=archive)
    folders = sorted(p.parent for p in archive.rglob("*.parquet"))
    expected = sorted(retention.archive_folder(archive, T0.date(), h) for h in [*RENAMED, "other"])
    assert folders == expected  # one file a host, in its folder now; the old folders gone
    assert sorted(p.name for p in (archive / "day=2026-01-01").iterdir()) == sorted(f.name for f in expected)
    assert all(rows == want for rows in _by_recipe(archive).values())


def test_an_archive_written_before_has_its_list_after_any_run_with_archive(lab: Lab, tmp_path: Path) -> None:
    """The recipes open DIR/_hosts.jsonl: a run that archives nothing writes it (empty) where missing."""
    archive, want = _archive(lab, tmp_path, ["node-1", "007"])
    (archive / retention.HOSTS_FILE).unlink()  # as the code before session 20 left the archive
    for keep_days in (1, 0):  # nothing left to prune; no retention at all
        ingest(lab.db, [], spools=[tmp_path / "spool"], keep_raw_days=keep_days, archive=archive)
        assert (archive / retention.HOSTS_FILE).read_text() == ""
        assert all(rows == want for rows in _by_recipe(archive).values())
        (archive / retention.HOSTS_FILE).unlink()
    ingest(lab.db, [], spools=[tmp_path / "spool"], keep_raw_days=1, archive=tmp_path / "none")
    assert not (tmp_path / "none").exists()  # no archive folder made before anything is archived


def test_a_stand_ins_line_is_written_before_its_folder(
    lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run killed between the two then leaves a line without a folder (harmless), never a
    folder whose stand-in no line maps back."""
    folder = retention.archive_folder(tmp_path / "archive", T0.date(), LONG)
    seen: list[bool] = []
    write = retention._write_whole

    def recording(path: Path, text: str) -> None:
        if LONG_STAND_IN in text:
            seen.append(folder.exists())
        write(path, text)

    monkeypatch.setattr(retention, "_write_whole", recording)
    _archive(lab, tmp_path, [LONG])
    assert seen == [False]


@pytest.mark.parametrize(
    "point",
    [
        "runlytics.warehouse.retention:_write_merged:after",  # merged into the new folder, the old files kept
        "runlytics.warehouse.retention:_remove_archived:after",  # the old files and folder removed, not committed
    ],
)
def test_a_merge_from_an_old_folder_killed_then_rerun_holds_each_sample_once(
    lab: Lab, tmp_path: Path, point: str
) -> None:
    hosts = ["h" * 220, "n~" + "0" * 32]  # old folders the readers read (a split escape would stop them)
    archive, want = _archive(lab, tmp_path, hosts)
    _as_before_session_20(archive, hosts)
    _copy_pruned_again(tmp_path)
    spool = tmp_path / "spool"
    options = ["--db", str(lab.db), "--spool", str(spool), "--keep-raw-days", "1", "--archive", str(archive)]
    killed = subprocess.run([sys.executable, "-c", KILL_AT, point, "1", "ingest", *options, "--quiet"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    files = str(archive / "**" / "*.parquet")
    keys = duckdb.sql(f"SELECT DISTINCT job_id, gpu_key, ts FROM read_parquet('{files}', hive_partitioning = false)")
    assert sorted(keys.fetchall()) == sorted({k[1:] for k in want})  # every sample in the archive at the kill
    rerun = subprocess.run([sys.executable, "-m", "runlytics", "ingest", *options, "--quiet"], cwd=REPO,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr
    folders = sorted(p.parent for p in archive.rglob("*.parquet"))
    assert folders == sorted(retention.archive_folder(archive, T0.date(), h) for h in hosts)
    assert all(rows == want for rows in _by_recipe(archive).values())
