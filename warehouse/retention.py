"""Raw GPU samples kept for a window of days, then dropped or moved to an archive.

``runlytics ingest --keep-raw-days N`` (default 30; 0 keeps everything): the sealed parts of
whole days more than N days before the newest sample stored (or today, when that is earlier:
a backfill of last year's spool is not dropped as it arrives) are retired. With
``--archive DIR`` each is first copied to ``DIR/day=YYYY-MM-DD/host=<host>/<part>.parquet``, a
Hive layout DuckDB, pandas (pyarrow) and polars read as it is: the partition columns day and host
come from the path, so the files leave the host column out (a reader would otherwise see it
twice). A host is percent-encoded in its folder name, and the unknown host ('') is ``host=`` (an
empty value, read back as ''; Hive's ``__HIVE_DEFAULT_PARTITION__``, which archives written before
used, stops pandas: it cannot unify a partition of NULL with another, nor type one alone). A host
whose folder would pass the file name limit, or that readers would read as NULL, is in the
folder of a stand-in (parts.host_value), which ``DIR/_hosts.jsonl`` maps back to it: the
documented reading recipe joins it (docs/ingest.md).

The archive holds each pruned sample once. Samples of a pruned day may be stored again (an
nvidia-smi log of an old job imported whole again as it grew, a copy of a spool file) and are then
pruned again: a (day, host) whose archive folder already holds files is rewritten as one file of
those files' rows and the part's, one row per (job, GPU, time), the part's winning (the
warehouse's: the later copy), else the newest file's. The new file is written, synced and renamed
into place before the old ones are removed: a run killed in between leaves a sample in two files,
and its rerun, which prunes the same parts again, merges them. A folder that holds none (the
usual case) only gets the part's copy. The files of the host's folder by the rule before session 20,
where it had another name (a cut one, or its own name where a stand-in's form now gets a
stand-in), are merged in the same way, and that folder removed once empty.

The per-minute rollups (``gpu_minutes``, sealed in parts of their own) are never pruned, and a
(host, day) is pruned only when every (job, GPU, minute) of its samples has its rollup row (checked here, whatever the
rollups' own guarantee): analytics never change when raw samples age out. Each (host, day)
pruned is recorded in ``gpu_pruned_days`` (revision 0044), which the raw window and the readers
of a job's samples ask.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb

from . import db, parts, pg_samples, sealed_reads
from .insights import IDLE_UTILIZATION
from .pg_reader import is_postgres

DEFAULT_KEEP_DAYS = 30
ROLLUPS = "gpu_minutes"
# at most about this many rows archived or dropped per run (at least one (host, day)): a long
# backlog is worked off over several runs, each run's cost stays bounded
PRUNE_ROWS_PER_RUN = 10_000_000
# Analytics read the rollups, but gpu_idle at a gpu_idle.utilization other than the rollups' (10)
# reads the raw samples still kept (insight_gpus.sql): the jobs of a pruned part are then queued, so
# that the run's refresh, after its prune (ingest/pipeline.py), stores what the view now gives (audit 18)
RAW_IDLE = "SELECT count(*) FROM insight_settings WHERE name = 'gpu_idle.utilization' AND value <> $idle"
QUEUE_PRUNED_JOBS = (
    f"INSERT INTO refresh_queue SELECT DISTINCT job_id FROM {parts.READ_FILES} "
    "WHERE job_id IN (SELECT job_id FROM jobs) ON CONFLICT DO NOTHING"
)

MISSING_MINUTES = f"""
SELECT count(*) FROM (
    SELECT DISTINCT job_id, host, gpu_key, date_trunc('minute', ts) AS minute FROM {parts.READ_FILES}
) s
WHERE NOT EXISTS (
    SELECT 1 FROM {ROLLUPS} g
    WHERE g.host = $host AND g.minute >= $lo AND g.minute < $hi
      AND g.job_id = s.job_id AND g.host = s.host AND g.gpu_key = s.gpu_key AND g.minute = s.minute
)
"""


def horizon(
    con: duckdb.DuckDBPyConnection, table: parts.Sealed, keep_days: int, now: datetime | None = None
) -> date | None:
    """Days before this one are pruned; None when nothing is (keep_days 0, no sample, or before year 1)."""
    if keep_days <= 0:
        return None
    row = con.execute(
        f"SELECT greatest((SELECT max(max_ts) FROM {parts.MANIFEST} WHERE table_name = $t), "
        f"(SELECT max({table.ts_column}) FROM {table.hot_table}))",
        {"t": table.name},
    ).fetchone()
    newest = row[0] if row else None
    if newest is None:
        return None
    today = (now or db.utc_now()).date()
    return days_before(min(newest.date(), today), keep_days)


def days_before(day: date, days: int) -> date | None:
    """``day`` less ``days`` days; None before year 1: no sample is that old (a sample may be of
    year 1, and date arithmetic past it a traceback)."""
    return day - timedelta(days=days) if days <= (day - date.min).days else None


# --- what a job lost: readers that must not answer its kept samples as if they were all ----------

# The (host, day)s whose raw samples a prune retired (revision 0044), on either engine: the manifest
# can't say, as a late sample of such a day (of a minute never rolled up) is stored in a new part.
PRUNED_DAYS = "gpu_pruned_days"
RECORD_PRUNED = f"INSERT INTO {PRUNED_DAYS} (host, day, pruned_at) VALUES ($host, $day, $now) ON CONFLICT DO NOTHING"
# A job's GPUs (job_gpu_series: their first and last minute) and the pruned days of their spans
# (usually none: then nothing else is read).
SPAN_DAYS_PRUNED = f"""
SELECT d.host, d.gpu_key, d.day FROM (
    SELECT DISTINCT host, gpu_key,
           CAST(unnest(generate_series(CAST(first_minute AS DATE), CAST(last_minute AS DATE), INTERVAL 1 DAY))
                AS DATE) AS day
    FROM job_gpu_series WHERE job_id = $job_id
) AS d
JOIN {PRUNED_DAYS} p ON p.host = d.host AND p.day = d.day
"""
# of those, the days the job's GPU has minutes on (its minute parts of those days, and the hot ones)
MINUTE_DAYS = "SELECT DISTINCT host, gpu_key, CAST(minute AS DATE) FROM {minutes} WHERE job_id = $job_id"
# PostgreSQL: a rolled-up minute of the job, on a pruned day of its host, that has no raw samples
# (one probe of the packed samples' primary key per such minute)
PG_MINUTE_GONE = f"""
SELECT count(*) > 0 FROM job_gpu_series s
JOIN {PRUNED_DAYS} p ON p.host = s.host
                    AND p.day >= CAST(s.first_minute AS DATE) AND p.day <= CAST(s.last_minute AS DATE)
JOIN gpu_minutes m ON m.job_id = s.job_id AND m.host = s.host AND m.gpu_key = s.gpu_key
                  AND m.minute >= p.day AND m.minute < p.day + 1
WHERE s.job_id = $job_id
  AND NOT EXISTS (SELECT 1 FROM {pg_samples.TABLE} r
                  WHERE r.job_id = m.job_id AND r.host = m.host AND r.gpu_key = m.gpu_key AND r.minute = m.minute)
"""


def raw_pruned(con: duckdb.DuckDBPyConnection, job_id: str) -> bool:
    """Whether some of the job's rolled-up minutes have no raw samples left (retention pruned their
    day): its kept samples are then not all of its readings, its minutes are. No raw sample is read
    on DuckDB: a pruned (host, day) of a GPU's span (gpu_pruned_days, usually none) counts when
    the GPU has minutes there."""
    if is_postgres(con):
        return bool(db.one(con, PG_MINUTE_GONE, {"job_id": job_id})[0])
    pruned = set(con.execute(SPAN_DAYS_PRUNED, {"job_id": job_id}).fetchall())
    if not pruned:
        return False
    days = sorted(day for _, _, day in pruned)
    first = datetime.combine(days[0], datetime.min.time())
    last = datetime.combine(days[-1], datetime.max.time())
    minutes = sealed_reads.between(con, parts.GPU_MINUTES, first, last)
    sql = MINUTE_DAYS.format(minutes=minutes.sql)
    return bool(pruned & set(con.execute(sql, {"job_id": job_id, **minutes.params}).fetchall()))


# The raw window of the run, for store_staged: samples of days already past it are not stored
# (their minutes' rollups stand; a lone late sample would recompute a minute from itself alone).
WINDOW = "gpu_raw_window"


# The last day whose raw samples were pruned. The raw window never reaches back over it, whatever
# this run's --keep-raw-days: a run that keeps more days than the run that pruned must not
# recompute a pruned minute from a late sample alone (audit 23: a cron run's --keep-raw-days 7, then
# a run with the default 30, rebuilt a minute of 3 samples from 1; audit 25: the same once a late
# sample of a minute never rolled up had put a part back on the day, which the manifest then showed
# as not pruned).
LAST_PRUNED_DAY = f"SELECT max(day) FROM {PRUNED_DAYS}"


def open_window(con: duckdb.DuckDBPyConnection, table: parts.Sealed, keep_days: int) -> date | None:
    """Remember, on this connection, the first day of raw samples this run keeps: the window of
    ``keep_days``, and never a day whose samples were pruned (LAST_PRUNED_DAY)."""
    first = horizon(con, table, keep_days)
    (pruned,) = db.one(con, LAST_PRUNED_DAY)
    if pruned is not None and (first is None or pruned >= first):
        first = pruned + timedelta(days=1)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {WINDOW} AS SELECT CAST($first AS DATE) AS first_day", {"first": first})
    return first


def window_start(con: duckdb.DuckDBPyConnection) -> datetime | None:
    """The earliest time a sample stored now may have (None: any)."""
    exists = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE temporary AND table_name = $t", {"t": WINDOW}
    ).fetchone()
    if not exists or not exists[0]:
        return None
    row = con.execute(f"SELECT first_day FROM {WINDOW}").fetchone()
    return datetime.combine(row[0], datetime.min.time()) if row and row[0] is not None else None


def prune(
    con: duckdb.DuckDBPyConnection,
    table: parts.Sealed,
    keep_days: int,
    archive: Path | None = None,
    *,
    now: datetime | None = None,
    budget: int = PRUNE_ROWS_PER_RUN,
) -> int:
    """Retire (archiving first when asked) the parts of the days past the window, in the caller's
    transaction; returns the rows pruned. Days whose minutes are not all rolled up stay."""
    if archive is not None:
        ensure_hosts_file(archive)
    before = horizon(con, table, keep_days, now)
    if before is None:
        return 0
    groups = con.execute(
        f"SELECT day, host, list(path ORDER BY path), sum(rows) FROM {parts.MANIFEST} "
        "WHERE table_name = $t AND day < $before GROUP BY day, host ORDER BY day, host",
        {"t": table.name, "before": before},
    ).fetchall()
    folder = parts.root(con)
    raw_idle = bool(db.one(con, RAW_IDLE, {"idle": IDLE_UTILIZATION})[0])
    pruned, done = 0, 0
    for day, host, paths, rows in groups:
        if done and pruned + rows > budget:
            break
        files = [str(folder / path) for path in paths]
        lo = datetime.combine(day, datetime.min.time())
        # bounded to the (host, day), so that the minutes' scan skips every other part
        bounds = {"host": host, "lo": lo, "hi": lo + timedelta(days=1)}
        row = con.execute(MISSING_MINUTES, {"files": db.exact_paths(files), **bounds}).fetchone()
        if row is None or row[0]:
            continue  # not rolled up yet: the raw samples are the only record of those minutes
        if archive is not None:
            archive_group(con, table, files, [Path(path).name for path in paths], archive, day, host)
        if raw_idle:
            con.execute(QUEUE_PRUNED_JOBS, {"files": db.exact_paths(files)})
        parts.retire(con, paths)
        con.execute(RECORD_PRUNED, {"host": host, "day": day, "now": db.utc_now()})
        pruned, done = pruned + rows, done + 1
    if done:
        parts.refresh_view(con, table)
    return pruned


def archive_part(con: duckdb.DuckDBPyConnection, table: parts.Sealed, file: str, folder: Path, name: str) -> Path:
    """Copy a part to the archive without its host column (the folder names it); the same part
    archived twice (a run killed before its commit) is written again under the same name."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / name
    tmp = final.with_name(name + parts.TMP_SUFFIX)
    columns = ", ".join(db.quote_identifier(c) for c in table.columns if c != table.host)
    try:
        con.execute(
            f"COPY (SELECT {columns} FROM {parts.READ_F}) TO $path ({parts.COPY_OPTIONS})",
            {"f": db.exact_paths([file])[0], "path": str(tmp)},
        )
        db.fsync_file(tmp)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final


# the unknown host's folder in archives written before session 17 (Hive's name for a missing value)
LEGACY_UNKNOWN_HOST = parts.HIVE_NULL
# Archives written before session 20 named a host's folder by the parts' rule then: percent-encoded,
# and past this many escaped bytes cut at CUT_PREFIX of them and CUT_HASH hex digits of its SHA-256
CUT_OVER, CUT_PREFIX, CUT_HASH = 200, 150, 16


def _legacy_value(host: str) -> str:
    """A host's folder value, escaped, in archives written before session 20 (the cut could split
    an escape or a character: readers then failed on the whole archive)."""
    text = parts.escape(host)
    if len(text) > CUT_OVER:
        text = text[:CUT_PREFIX] + "~" + hashlib.sha256(host.encode()).hexdigest()[:CUT_HASH]
    return text


def _earlier_folders(archive: Path, folder: Path, host: str) -> list[Path]:
    """The folders beside ``folder`` where archives written before held the host's samples: the
    unknown host's Hive folder (before session 17), a host's folder by the rule before session 20
    where it was another (a cut name; a name of a stand-in's form, now given one). Left out where
    that folder is another's now: Hive's null name is the unknown host's (module docstring), and
    a name of a stand-in's form that HOSTS_FILE lists is its host's stand-in folder."""
    if not host:
        return [folder.with_name(f"host={LEGACY_UNKNOWN_HOST}")]
    old = _legacy_value(host)
    earlier = folder.with_name(f"host={old}")
    if host == parts.HIVE_NULL or earlier == folder:
        return []
    if parts.STAND_IN_TAIL.search(host) and old == parts.escape(host) and host in _listed(archive):
        return []
    return [earlier]


# The archive's stand-ins and their hosts (parts.host_value), one JSON object a line, in ASCII
# ({"stand_in": …, "host": …}), there once a part is archived (and, empty, after any run with
# --archive over an archive written before session 20): the reading recipe joins it. No reader of
# the archive's Parquet files takes it for one (pyarrow's discovery skips a name that begins with
# '_'; it is no *.parquet file). Rewritten whole (temporary file, fsync, rename) before a
# stand-in's folder is made, so that each such folder has its line.
HOSTS_FILE = "_hosts.jsonl"


def archive_folder(archive: Path, day: date, host: str) -> Path:
    """Where the archive holds a (day, host): the unknown host '' is ``host=`` (module docstring)."""
    return archive / f"day={day.isoformat()}" / f"host={parts.segment(host) if host else ''}"


def archive_group(
    con: duckdb.DuckDBPyConnection,
    table: parts.Sealed,
    files: list[str],
    names: list[str],
    archive: Path,
    day: date,
    host: str,
) -> None:
    """Copy the parts (``files``, named ``names``) of a (day, host) to the archive, where each of
    their samples is then once (module docstring)."""
    folder = archive_folder(archive, day, host)
    archive.mkdir(parents=True, exist_ok=True)
    list_host(archive, host)  # before the folder: a kill in between leaves a line without a folder
    folder.mkdir(parents=True, exist_ok=True)
    held = []
    for each in (folder, *_earlier_folders(archive, folder, host)):
        for stale in each.glob("*" + parts.SUFFIX + parts.TMP_SUFFIX):
            stale.unlink()  # a killed run's (the ingest lock keeps every other writer out)
        held += _archived(each)
    if all(path.parent == folder and path.name in names for path in held):
        # none, or these parts' own copies (a run killed before its commit): copied (again) as they are
        for file, name in zip(files, names, strict=True):
            archive_part(con, table, file, folder, name)
        return
    _write_merged(con, table, files, held, folder)
    _remove_archived(held)


def list_host(archive: Path, host: str) -> None:
    """Make sure the archive's HOSTS_FILE is there and, when the host's folder holds a stand-in,
    names its host. Lines that do not parse (an edit by hand) are kept as they are."""
    path = archive / HOSTS_FILE
    value = parts.host_value(host) if host else host
    if value == host:  # the usual case: the folder holds the host itself
        ensure_hosts_file(archive)
        return
    text = _text(path)
    if value not in _stand_ins(text):
        ended = text if text.endswith("\n") or not text else text + "\n"  # a last line cut by hand
        _write_whole(path, ended + json.dumps({"stand_in": value, "host": host}) + "\n")


def ensure_hosts_file(archive: Path) -> None:
    """Write an empty HOSTS_FILE in an archive that has none (one written before session 20: it has
    no stand-in), so that the reading recipes, which open it, read the archive. Nothing is made
    where no archive is yet."""
    path = archive / HOSTS_FILE
    if archive.is_dir() and not path.exists():
        _write_whole(path, "")


def _write_whole(path: Path, text: str) -> None:
    """Replace a file of the archive by ``text``: a temporary file, fsync, rename."""
    tmp = path.with_name(path.name + parts.TMP_SUFFIX)
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as out:
            out.write(text)
        db.fsync_file(tmp)
        os.replace(tmp, path)
        db.fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.exists() else ""


def _listed(archive: Path) -> set[str]:
    """The stand-ins the archive's HOSTS_FILE lists."""
    return _stand_ins(_text(archive / HOSTS_FILE))


def _stand_ins(text: str) -> set[str]:
    """The stand-ins a HOSTS_FILE's text lists."""
    listed = set()
    for line in text.split("\n"):  # as readers split it (str.splitlines would split at U+2028 too)
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("stand_in"), str):
            listed.add(entry["stand_in"])
    return listed


def _archived(folder: Path) -> list[Path]:
    """The archive files of a folder, newest first (a part's name begins with its creation time)."""
    return sorted(folder.glob("*" + parts.SUFFIX), key=lambda path: path.name, reverse=True)


def _write_merged(
    con: duckdb.DuckDBPyConnection, table: parts.Sealed, files: list[str], held: list[Path], folder: Path
) -> Path:
    """One new file of the parts' rows and those of the archive files ``held`` (newest first), one
    row per (job, GPU, time): the parts', else the newest file's; sorted as a part is."""
    columns = [db.quote_identifier(c) for c in table.columns if c != table.host]
    key = [db.quote_identifier(c) for c in table.key if c != table.host]
    listed = ", ".join(columns)
    reads = [f"SELECT {listed}, 0 AS archive_rank FROM read_parquet($parts, hive_partitioning = false)"]
    params: dict[str, object] = {"parts": db.exact_paths(files)}
    for rank, path in enumerate(held, start=1):
        reads.append(f"SELECT {listed}, {rank} FROM read_parquet($held{rank}, hive_partitioning = false)")
        params[f"held{rank}"] = db.exact_paths([str(path)])[0]
    final = folder / parts.new_name()
    tmp = final.with_name(final.name + parts.TMP_SUFFIX)
    order = ", ".join(key)
    select = (
        f"SELECT {listed} FROM ({' UNION ALL '.join(reads)}) AS copies "
        f"QUALIFY row_number() OVER (PARTITION BY {order} ORDER BY archive_rank) = 1 ORDER BY {order}"
    )
    try:
        con.execute(f"COPY ({select}) TO $path ({parts.COPY_OPTIONS})", {**params, "path": str(tmp)})
        db.fsync_file(tmp)
        os.replace(tmp, final)
        db.fsync_dir(folder)  # the new file is there for good before the old ones go
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final


def _remove_archived(held: list[Path]) -> None:
    """Remove archive files merged into a new one (and a folder they leave empty: the unknown
    host's of an older archive)."""
    for path in held:
        path.unlink(missing_ok=True)
    for folder in sorted({path.parent for path in held}):
        if any(folder.iterdir()):
            db.fsync_dir(folder)
        else:
            folder.rmdir()
            db.fsync_dir(folder.parent)
