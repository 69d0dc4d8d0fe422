"""GPU rollups (gpu_minutes): equal to the raw computation, whatever order the samples arrive in.

A reference in Python rolls the stored samples up per GPU and minute (an independent reader);
the per-job figures from the rollups are compared with the same figures computed from the raw
samples by the view texts of before revision 0015 (frozen copies); samples stored batch by
batch (minute by minute, late, read twice) give the same rollups as one rebuild from every
sample; and a small case is worked out by hand.
"""

from __future__ import annotations

import math
import random
import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from depth import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runlytics.ingest import gpu_samples
from runlytics.migrations import frozen
from runlytics.warehouse import db, migrate, parts, results, retention, rollups

T0 = datetime(2026, 1, 1)
FIGURES = rollups.FIGURES
# (host, gpu_index, gpu_uuid): two GPUs under index 0 on one host (containers), a MIG instance,
# a GPU known by its index only, and a second host
GPUS = (
    ("n1", 0, "GPU-aaaa-0001"),
    ("n1", 0, "GPU-bbbb-0002"),
    ("n1", 1, "MIG-4f1e-77aa-0003"),
    ("n2", 0, None),
)
ODD = (None, math.nan, math.inf, -math.inf)


def _value(rng: random.Random, low: float, high: float) -> float | None:
    """A reading: mostly decimal-looking (its sum depends on the order), now and then missing or odd."""
    if rng.random() < 0.1:
        return rng.choice(ODD)
    return round(rng.uniform(low, high), 1) + 0.01


def _samples(seed: int, jobs: int = 2, minutes: int = 6) -> list[dict[str, Any]]:
    """Samples of multi-GPU jobs, ~every 7 s with jitter, a gap of minutes, some fields missing."""
    rng = random.Random(seed)
    rows = []
    for j in range(jobs):
        for host, index, uuid in GPUS:
            t = rng.uniform(0, 20)
            while t < minutes * 60:
                if not (100 < t < 230 and index == 1):  # the MIG instance's gap of two minutes
                    row = {
                        "job_id": f"j{j}",
                        "host": host,
                        "gpu_index": index,
                        "gpu_uuid": uuid,
                        "ts": T0 + timedelta(seconds=round(t, 3)),
                        "utilization_percent": rng.choice([_value(rng, 0, 100), rng.choice([0.5, 5.0, 9.9, 10.0])]),
                        "memory_used_mb": _value(rng, 1000, 80000),
                        "memory_total_mb": 81920.0 if rng.random() < 0.9 else None,
                        "temperature_c": _value(rng, 30, 90),
                        "power_w": _value(rng, 50, 700),
                        "sm_clock_mhz": _value(rng, 200, 2000) if rng.random() < 0.7 else None,
                        "clocks_event_reasons": rng.choice([None, 0, 1, 4, 8, 32, 0x104]),
                    }
                    rows.append(row)
                t += rng.uniform(1, 13)
    return rows


def _no_negative_infinity(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The samples with a -Infinity utilization read as +Infinity: the views before revision 0015,
    which the raw figures are computed with, count -Infinity as idle time; revision 0041 does not
    (time with a finite reading only). +Infinity is neither on both sides."""
    return [{**r, "utilization_percent": math.inf} if r["utilization_percent"] == -math.inf else r for r in rows]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated warehouse with three jobs, copied by each test."""
    path = tmp_path_factory.mktemp("template") / "w.duckdb"
    migrate.upgrade(path)
    with db.connection(path) as con:
        con.execute(
            "INSERT INTO jobs (job_id, status, config, ingested_at) "
            "SELECT 'j' || i, 'running', '{}', TIMESTAMP '2026-01-02' FROM range(3) r(i)"
        )
    return path


def _copy(template: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(template, folder / "w.duckdb"))


@pytest.fixture
def warehouse(template: Path, tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    with db.connection(_copy(template, tmp_path)) as con:
        yield con


def _store(con: duckdb.DuckDBPyConnection, rows: list[dict[str, Any]]) -> None:
    with db.atomic(con):
        gpu_samples.store(con, rows, "spool")


def _rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple[Any, ...]]:
    cursor = con.execute(sql)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]  # type: ignore[misc]


def _key(row: Any) -> Any:
    return repr(tuple("NaN" if isinstance(v, float) and math.isnan(v) else v for v in row))


MINUTES = "SELECT * FROM gpu_minutes ORDER BY job_id, host, gpu_key, minute"


# --- the rollups against a reference in Python ---------------------------------------------------


def _seconds_between(a: datetime, b: datetime) -> float:
    """The views' @seconds_between: the exact microseconds between two times, divided once."""
    return ((b - a) // timedelta(microseconds=1)) / 1e6


def _ordered_sum(values: list[float]) -> float | None:
    return sum(sorted(values)) if values else None


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def _seconds(timed: list[dict[str, Any]], keep: Any) -> float | None:
    return _ordered_sum([s["interval"] for s in timed if keep(s)])


def _reference(samples: list[tuple[Any, ...]]) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Per (job, host, gpu_key, minute), from the stored samples, as docs/views.md defines it."""
    by_gpu: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for s in samples:
        by_gpu.setdefault((s["job_id"], s["host"], s["gpu_key"]), []).append(s)
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for key, rows in by_gpu.items():
        rows.sort(key=lambda s: s["ts"])
        for i, s in enumerate(rows):
            nxt = rows[i + 1] if i + 1 < len(rows) else None
            s["interval"] = _seconds_between(s["ts"], nxt["ts"]) if nxt else None
            s["next_power"] = nxt["power_w"] if nxt else None
        minutes: dict[datetime, list[dict[str, Any]]] = {}
        for s in rows:
            minutes.setdefault(s["ts"].replace(second=0, microsecond=0), []).append(s)
        for minute, group in minutes.items():
            r: dict[str, Any] = {
                "gpu_index": group[-1]["gpu_index"],
                "gpu_uuid": max((s["gpu_uuid"] for s in group if s["gpu_uuid"] is not None), default=None),
                "samples": len(group),
                "first_ts": group[0]["ts"],
                "last_ts": group[-1]["ts"],
            }
            for f in FIGURES:
                finite = [s[f] for s in group if s[f] is not None and math.isfinite(s[f])]
                r[f"{f}_n"] = len(finite)
                r[f"{f}_sum"] = _ordered_sum(finite)
                r[f"{f}_min"] = min(finite, default=None)
                r[f"{f}_max"] = max(finite, default=None)
            totals = [s["memory_total_mb"] for s in group if s["memory_total_mb"] is not None]
            r["memory_total_mb_max"] = max((t for t in totals if math.isfinite(t)), default=None)
            r["nonfinite"] = sum(any(s[f] is not None and not math.isfinite(s[f]) for f in FIGURES[:3]) for s in group)
            timed = [s for s in group if s["interval"] is not None]
            r["interval_seconds"] = _seconds(timed, lambda s: True)
            r["utilization_seconds"] = _seconds(timed, lambda s: _finite(s["utilization_percent"]))
            # idle time is time with a finite reading below 10: not NaN, NULL or -inf (revision 0041)
            r["idle_seconds"] = _seconds(
                timed, lambda s: _finite(s["utilization_percent"]) and s["utilization_percent"] < 10
            )
            r["reasons_seconds"] = _seconds(timed, lambda s: s["clocks_event_reasons"] is not None)
            r["throttled_seconds"] = _seconds(timed, lambda s: (s["clocks_event_reasons"] or 0) & 236 != 0)
            terms = [
                (s["power_w"] + s["next_power"]) / 2 * s["interval"]
                for s in timed
                if _finite(s["power_w"]) and _finite(s["next_power"])
            ]
            energy = _ordered_sum(terms)
            r["energy_wh"] = energy / 3600 if energy is not None else None
            out[(*key, minute)] = r
    return out


def test_the_rollups_equal_a_reference_computed_from_the_samples(warehouse: duckdb.DuckDBPyConnection) -> None:
    rows = _samples(seed=1)
    for start in range(0, len(rows), 97):  # batches cut anywhere, as spool reads are
        _store(warehouse, rows[start : start + 97])
    stored = _rows(warehouse, "SELECT * FROM gpu_samples")
    expected = _reference(stored)  # type: ignore[arg-type]
    got = {(r["job_id"], r["host"], r["gpu_key"], r["minute"]): r for r in _rows(warehouse, MINUTES)}  # type: ignore[call-overload]
    assert set(got) == set(expected)
    assert len(got) > 40
    for key, want in expected.items():
        row = got[key]
        for column, value in want.items():
            # sums to the last bit: the same terms added in the same (ascending) order
            assert repr(row[column]) == repr(value), (key, column)
    # the cases are there: a GPU known by its index, two under index 0, a MIG instance, NaN and
    # infinities, missing fields, a minute with no finite utilization
    keys = {(k[1], k[2]) for k in got}
    assert {("n2", "#0"), ("n1", "GPU-aaaa-0001"), ("n1", "GPU-bbbb-0002"), ("n1", "MIG-4f1e-77aa-0003")} <= keys
    assert any(r["nonfinite"] for r in got.values())
    assert any(r["sm_clock_mhz_n"] < r["samples"] for r in got.values())


# --- per-job figures: from the rollups, against the raw computation of before 0015 -------------

# versions/views/<revision>/ copies that read the raw samples, in dependency order
RAW_VIEWS = (
    ("job_gpus", "0013"),
    ("job_resources", "0013"),
    ("gpu_utilization_readings", "0006"),
    ("insight_gpus", "0011"),
)
COMPARED = {
    "job_gpus": "SELECT * FROM job_gpus ORDER BY job_id, host, gpu_uuid, gpu_index",
    "job_resources": "SELECT * FROM job_resources ORDER BY job_id",
    "job_energy": "SELECT * FROM job_energy ORDER BY job_id",
    "job_analytics": "SELECT * FROM job_analytics ORDER BY job_id",
    # gpu_key (revision 0037) is not in the raw-reading copy of 0011
    "insight_gpus": "SELECT COLUMNS(lambda c: c NOT IN ('message', 'gpu_key')) FROM insight_gpus "
    "ORDER BY job_id, kind, host, gpu_index, value",
}


def _same(new: list[tuple[Any, ...]], old: list[tuple[Any, ...]], what: str) -> None:
    assert len(new) == len(old), what
    for a, b in zip(new, old, strict=True):
        for x, y in zip(a, b, strict=True):
            if isinstance(x, float) and isinstance(y, float):
                # means and time-weighted sums: the same terms grouped per minute
                assert x == pytest.approx(y, rel=1e-12, abs=1e-9) or (math.isnan(x) and math.isnan(y)), what
            else:
                assert x == y, (what, a, b)


def _raw_figures(con: duckdb.DuckDBPyConnection, queries: dict[str, str]) -> dict[str, list[tuple[Any, ...]]]:
    """The figures with the views of before revision 0015 (reading the raw samples)."""
    con.execute("BEGIN")
    try:
        for name, revision in RAW_VIEWS:
            for view in frozen.views(revision, (name,)):
                con.execute(view.create_sql())
        return {name: con.execute(sql).fetchall() for name, sql in queries.items()}
    finally:
        con.execute("ROLLBACK")


@pytest.mark.parametrize("seed", [2, 3])
def test_per_job_figures_from_the_rollups_equal_those_from_the_raw_samples(
    warehouse: duckdb.DuckDBPyConnection, seed: int
) -> None:
    _store(warehouse, _no_negative_infinity(_samples(seed, jobs=3)))
    warehouse.execute("DELETE FROM insight_settings WHERE name = 'gpu_idle.share'")
    warehouse.execute("INSERT INTO insight_settings VALUES ('gpu_idle.share', 0.05)")  # some GPUs are idle
    utilization = {
        "utilization_minutes": results.UTILIZATION_SELECT.format(where="") + " ORDER BY job_id, minute",
    }
    raw = _raw_figures(warehouse, {**COMPARED, **utilization})
    new = {name: warehouse.execute(sql).fetchall() for name, sql in COMPARED.items()}
    new["utilization_minutes"] = warehouse.execute(
        results.ROLLUP_UTILIZATION_SELECT.format(where="") + " ORDER BY job_id, minute"
    ).fetchall()
    for name in raw:
        _same(new[name], raw[name], name)
    assert len(new["job_gpus"]) == 12
    assert any(r[1] == "gpu_idle" for r in new["insight_gpus"])
    assert all(r[13] is not None for r in new["job_gpus"])  # energy


def test_a_threshold_other_than_the_rollups_reads_the_raw_samples(warehouse: duckdb.DuckDBPyConnection) -> None:
    _store(warehouse, _no_negative_infinity(_samples(4)))
    warehouse.execute("UPDATE insight_settings SET value = 55 WHERE name = 'gpu_idle.utilization'")
    query = {"insight_gpus": COMPARED["insight_gpus"]}
    raw = _raw_figures(warehouse, query)
    new = warehouse.execute(query["insight_gpus"]).fetchall()
    _same(new, raw["insight_gpus"], "insight_gpus")
    assert any(r[1] == "gpu_idle" for r in new)


def test_the_figures_stay_when_the_raw_samples_age_out(warehouse: duckdb.DuckDBPyConnection) -> None:
    """The per-job views read the rollups only: with every raw sample gone, the same figures."""
    _store(warehouse, _samples(5))
    queries = {
        **COMPARED,
        "utilization_minutes": results.ROLLUP_UTILIZATION_SELECT.format(where="") + " ORDER BY job_id, minute",
    }  # rows in a stated order: DuckDB gives a parallel scan's in any
    before = {name: warehouse.execute(sql).fetchall() for name, sql in queries.items()}
    warehouse.execute("BEGIN")
    try:
        warehouse.execute("CREATE TEMP TABLE no_samples AS SELECT * FROM gpu_samples LIMIT 0")
        kind = warehouse.execute(
            "SELECT table_type FROM information_schema.tables WHERE table_name = 'gpu_samples'"
        ).fetchone()
        warehouse.execute("DROP VIEW gpu_samples" if kind == ("VIEW",) else "DROP TABLE gpu_samples")
        warehouse.execute("CREATE VIEW gpu_samples AS SELECT * FROM no_samples")
        after = {name: warehouse.execute(sql).fetchall() for name, sql in queries.items()}
    finally:
        warehouse.execute("ROLLBACK")
    assert after == before
    assert before["job_gpus"]


# --- incremental updates -----------------------------------------------------------------------


def _normal(rows: list[tuple[Any, ...]]) -> list[str]:
    return sorted(_key(r) for r in rows)


@settings(max_examples=examples(5, 10), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=6),
    late=st.lists(st.integers(min_value=0, max_value=10_000), max_size=8),
    reread=st.booleans(),
    seed=st.integers(min_value=0, max_value=3),
    seal=st.booleans(),
)
def test_batches_in_any_order_give_the_rollups_of_one_rebuild(
    template: Path,
    tmp_path_factory: pytest.TempPathFactory,
    cuts: list[int],
    late: list[int],
    reread: bool,
    seed: int,
    seal: bool,
) -> None:
    """Samples arriving minute by minute, some late (a batch of them after later ones), some read
    twice: the rollups maintained batch by batch equal those recomputed from every sample; with
    ``seal``, the minutes are sealed into parts after each batch (revision 0021), so the next
    batch finds its neighbours there and moves the part's rows back to be recomputed."""
    rows = sorted(_samples(seed, jobs=1, minutes=4), key=lambda r: r["ts"])
    held = {i % len(rows) for i in late}
    on_time = [r for i, r in enumerate(rows) if i not in held]
    bounds = sorted({0, len(on_time), *(c % (len(on_time) + 1) for c in cuts)})
    batches = [on_time[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    batches.append([rows[i] for i in sorted(held)])
    if reread:
        batches.append(rows[len(rows) // 3 : len(rows) // 2])
    with db.connection(_copy(template, tmp_path_factory.mktemp("inc"))) as con:
        for batch in batches:
            if batch:
                _store(con, batch)
            if seal:  # before sealing: the view shows each minute once, recomputed where its part was
                assert _normal(con.execute(MINUTES).fetchall()) == _normal(con.execute(rollups.SELECT_ALL).fetchall())
                with db.atomic(con):
                    parts.seal(con, parts.GPU_SAMPLES, parts.cutoff(con, parts.GPU_SAMPLES))
        if seal and any(batches):
            assert con.execute("SELECT count(*) FROM gpu_minutes_hot").fetchone() == (0,)
        maintained = _normal(con.execute(MINUTES).fetchall())
        rebuilt = _normal(con.execute(rollups.SELECT_ALL).fetchall())
        series = con.execute("SELECT * FROM job_gpu_series ORDER BY ALL").fetchall()
        grouped = con.execute(
            "SELECT job_id, host, gpu_key, min(minute), max(minute) FROM gpu_minutes GROUP BY ALL ORDER BY ALL"
        ).fetchall()
    assert maintained == rebuilt
    assert series == grouped  # job_gpu_series (revision 0020) kept with the minutes
    assert len(maintained) >= 14  # 4 GPUs x 4 minutes, less the MIG instance's gap


def test_minute_by_minute_equals_one_ingest(
    warehouse: duckdb.DuckDBPyConnection, template: Path, tmp_path: Path
) -> None:
    rows = sorted(_samples(6, jobs=2), key=lambda r: r["ts"])
    by_minute: dict[datetime, list[dict[str, Any]]] = {}
    for r in rows:
        by_minute.setdefault(r["ts"].replace(second=0, microsecond=0), []).append(r)
    for batch in by_minute.values():
        _store(warehouse, batch)
    with db.connection(_copy(template, tmp_path / "once")) as con:
        _store(con, rows)
        once = _normal(con.execute(MINUTES).fetchall())
    assert _normal(warehouse.execute(MINUTES).fetchall()) == once


# --- a case worked out by hand -------------------------------------------------------------------


def _sample(seconds: float, util: float | None, power: float | None, reasons: int | None = None) -> dict[str, Any]:
    return {
        "job_id": "j0", "host": "h", "gpu_index": 3, "gpu_uuid": None, "ts": T0 + timedelta(seconds=seconds),
        "utilization_percent": util, "power_w": power, "clocks_event_reasons": reasons,
    }  # fmt: skip


HAND = (
    "SELECT minute, samples, utilization_percent_n, utilization_percent_sum, utilization_percent_min,"
    " utilization_percent_max, nonfinite, interval_seconds, utilization_seconds, idle_seconds, reasons_seconds,"
    " throttled_seconds, energy_wh FROM gpu_minutes ORDER BY minute"
)


def test_a_small_case_by_hand(warehouse: duckdb.DuckDBPyConnection) -> None:
    _store(warehouse, [_sample(0, 50.0, 100.0, 4), _sample(30, 5.0, 200.0, 1)])
    _store(warehouse, [_sample(70, math.nan, 100.0)])
    m0, m1 = T0, T0 + timedelta(minutes=1)
    # minute 0: intervals 30 s and 40 s (to 00:01:10, the next batch); 5 % is idle; the first
    # sample throttled (4: SW power cap); trapezoids 150 W x 30 s + 150 W x 40 s = 10,500 J
    # minute 1: one NaN sample, the last: no interval
    assert warehouse.execute(HAND).fetchall() == [
        (m0, 2, 2, 55.0, 5.0, 50.0, 0, 70.0, 70.0, 40.0, 70.0, 30.0, 10500 / 3600),
        (m1, 1, 0, None, None, None, 1, None, None, None, None, None, None),
    ]
    # a late sample at 00:00:50 (no reasons read) splits the second interval in two, adds 300 W
    _store(warehouse, [_sample(50, 20.0, 300.0)])
    assert warehouse.execute(HAND).fetchall() == [
        (m0, 3, 3, 75.0, 5.0, 50.0, 0, 70.0, 70.0, 20.0, 50.0, 30.0, (4500 + 5000 + 4000) / 3600),
        (m1, 1, 0, None, None, None, 1, None, None, None, None, None, None),
    ]
    # the job's GPU: 4 samples, mean utilization 75 / 3, idle 20 of 70 s, throttled 30 of the
    # 50 s with reasons read, 13,500 J
    assert warehouse.execute(
        "SELECT samples, average_utilization, energy_wh, idle_share, throttled_share FROM job_gpus"
    ).fetchall() == [(4, 25.0, 13500 / 3600, 20 / 70, 30 / 50)]


def test_a_minute_past_the_raw_window_is_re_ended_from_its_rollup(warehouse: duckdb.DuckDBPyConnection) -> None:
    """A batch after the GPU's last sample recomputes that sample's minute (its interval ends at
    the batch); where the minute lies before the raw window (--keep-raw-days) its samples may be
    gone, and its rollup is re-ended instead (session 17): the same figures."""
    day = 24 * 3600
    _store(warehouse, [_sample(day - 30, 50.0, 100.0), _sample(day - 10, 60.0, 100.0)])
    warehouse.execute(f"CREATE TEMP TABLE {retention.WINDOW} AS SELECT DATE '2026-01-02' AS first_day")
    _store(warehouse, [_sample(day + 10, 70.0, 100.0)])
    assert warehouse.execute(
        "SELECT minute, samples, interval_seconds FROM gpu_minutes ORDER BY minute"
    ).fetchall() == [
        (T0 + timedelta(seconds=day - 60), 2, 40.0),  # 20 s + the last sample's 20 s to the batch
        (T0 + timedelta(seconds=day), 1, None),
    ]
    warehouse.execute(f"DROP TABLE {retention.WINDOW}")
    _store(warehouse, [_sample(day + 20, 70.0, 100.0)])  # within the window: recomputed as always
    assert warehouse.execute("SELECT interval_seconds FROM gpu_minutes ORDER BY minute").fetchall() == [
        (40.0,),
        (10.0,),
    ]
