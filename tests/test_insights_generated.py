"""Insights on generated jobs: each anomaly of shared/spec/insights.md injected into clean jobs is
found with its steps and figures, clean jobs give none, and the warehouse agrees with an
independent reference implementation (tests/insight_generator.py) on random loss, speed and GPU
series, and on the real files of shared/realdata.

Jobs go through the real ingest (progress.json files, the GPU sampler's spool) into a real DuckDB
warehouse; the insights are read from the view ``job_insights`` and from ``insight_results``. On
both engines (``module_ingest_engine``): on PostgreSQL the ingest is ``ingest --db URL`` (the
file its stage), and ``job_insights`` is PostgreSQL's view over the published facts.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runlytics.ingest import postgres as pg_ingest
from runlytics.ingest.pipeline import ingest
from runlytics.ingest.summary import Summary
from runlytics.warehouse import pg_reader
from tests.conftest import DEEP_ONLY, DUCKDB_ENGINE, REALDATA, Engine
from tests.depth import examples
from tests.insight_generator import (
    KINDS,
    LOSS_RULES,
    Generated,
    Insight,
    Job,
    Reading,
    Row,
    clean,
    inject,
    reference_insights,
)

# each example is one ingest run (about 2 s): 2 in an ordinary run, 6 in deep runs (depth.py);
# INSIGHTS_EXAMPLES=200 for a longer hunt
EXAMPLES = int(os.environ.get("INSIGHTS_EXAMPLES", examples(2, 6)))
COLUMNS = "job_id, kind, severity, first_step, last_step, host, gpu_index, value, reference, start_time, end_time"
REL = 1e-9


class Warehouse:
    """One warehouse and jobs root shared by many generated cases (each case's job ids are new)."""

    def __init__(self, tmp: Path, engine: Engine = DUCKDB_ENGINE) -> None:
        # on PostgreSQL, the database ingest publishes to (the file is its stage)
        self.target = engine.empty() if engine.ingests else None
        self.root = tmp / "jobs"
        self.spool = tmp / "spool"
        self.root.mkdir()
        self.spool.mkdir()
        self.db = tmp / "warehouse.duckdb"
        self.ids = itertools.count()

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self.ids)}"

    def write(self, jobs: list[Job]) -> None:
        for job in jobs:
            path = self.root / job.job_id / "progress.json"
            path.parent.mkdir(parents=True)
            path.write_text(json.dumps(job.progress(), allow_nan=True))
            if job.samples:
                lines = "".join(json.dumps(s) + "\n" for s in job.spool())
                (self.spool / f"{job.job_id}.jsonl").write_text(lines)

    def ingest_roots(self, roots: list[Path], spools: list[Path] | None = None) -> Summary:
        if self.target is not None:
            return pg_ingest.ingest(self.target, roots, stage=self.db, spools=spools, wait=10)[0]
        return ingest(self.db, roots, spools=spools, wait=10)

    def ingest(self) -> float:
        """Ingest everything new; the as_of of the run, in ms (to the microsecond: silent_running's
        silence is as_of less a time, so a rounded as_of would be off by up to 0.5 ms)."""
        summary = self.ingest_roots([self.root], [self.spool])
        assert summary.failed == 0
        (started,) = self.query("SELECT max(started_at) FROM ingest_runs")[0]
        return started.replace(tzinfo=UTC).timestamp() * 1000

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Portable SQL, ``$name`` parameters."""
        if self.target is not None:
            cursor = pg_reader.Cursor(pg_reader.connect(self.target))
            try:
                return cursor.execute(sql, params).fetchall()
            finally:
                cursor.close()
        con = duckdb.connect(str(self.db), read_only=True)
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()

    def insights(self, source: str, job_ids: list[str]) -> list[Insight]:
        assert source in ("job_insights", "insight_results")
        if not job_ids:
            return []
        rows = self.query(
            f"SELECT {COLUMNS} FROM {source} WHERE job_id IN (SELECT unnest(CAST($ids AS VARCHAR[])))",
            {"ids": job_ids},
        )
        return [
            Insight(job, kind, sev, first, last, host, gpu, value, ref, _ms(start), _ms(end))
            for job, kind, sev, first, last, host, gpu, value, ref, start, end in rows
        ]


def _ms(ts: datetime | None) -> int | None:
    return None if ts is None else round(ts.replace(tzinfo=UTC).timestamp() * 1000)


# Figures from timestamps (gaps, silences) are differences of epoch seconds as doubles (the
# dialect's seconds_between), exact to well under a microsecond, the timestamps' own resolution.
TIMED = {"stall", "silent_running"}


def _round(ms: float | None) -> int | None:
    return None if ms is None else round(ms)


def _close(a: float | None, b: float | None, abs_tol: float = 1e-12) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or math.isclose(a, b, rel_tol=REL, abs_tol=abs_tol)


def describe(i: Insight) -> str:
    return (f"{i.job_id} {i.kind}/{i.severity} steps {i.first_step}..{i.last_step} gpu {i.host!r}:{i.gpu_index} "
            f"value {i.value!r} reference {i.reference!r} times {i.start_ms}..{i.end_ms}")  # fmt: skip


def compare(expected: list[Insight], got: list[Insight], *, times: bool = True) -> list[str]:
    """The differences, one line each: missing, extra, or the same insight with other figures."""
    problems = []
    want = {i.key(): i for i in expected}
    have = {i.key(): i for i in got}
    assert len(want) == len(expected), "the reference gave two insights with the same key"
    if len(have) != len(got):
        problems.append(f"duplicate insights: {sorted(map(describe, got))}")
    for key in sorted(want.keys() - have.keys(), key=repr):
        problems.append(f"missing: {describe(want[key])}")
    for key in sorted(have.keys() - want.keys(), key=repr):
        problems.append(f"extra:   {describe(have[key])}")
    for key in sorted(want.keys() & have.keys(), key=repr):
        w, h = want[key], have[key]
        tol = 1e-6 if w.kind in TIMED else 1e-12
        same = w.severity == h.severity and _close(w.value, h.value, tol) and _close(w.reference, h.reference, tol)
        if times:
            same = same and (_round(w.start_ms), _round(w.end_ms)) == (h.start_ms, h.end_ms)
        if not same:
            problems.append(f"figures: want {describe(w)}\n         got  {describe(h)}")
    return problems


def check(wh: Warehouse, cases: list[Generated], as_of: float) -> None:
    jobs = [job for case in cases for job in case.jobs]
    ids = [job.job_id for job in jobs]
    expected = reference_insights(jobs, as_of)
    # the generator's promise, checked by the reference itself: clean jobs give nothing, an
    # injected job gives its kind (and only that)
    for case in cases:
        kinds = {(i.job_id, i.kind) for i in expected if i.job_id in {j.job_id for j in case.jobs}}
        assert kinds == ({(case.jobs[0].job_id, case.kind)} if case.kind else set()), kinds
    for source in ("job_insights", "insight_results"):
        problems = compare(expected, wh.insights(source, ids))
        assert not problems, f"{source}:\n" + "\n".join(problems)


# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory, module_ingest_engine: Engine) -> Warehouse:
    return Warehouse(tmp_path_factory.mktemp("insights"), module_ingest_engine)


def test_every_kind_injected_is_found_and_clean_jobs_give_none(warehouse: Warehouse) -> None:
    now = int(time.time() * 1000)
    cases = []
    for seed in range(2):
        for kind in KINDS:
            rng = random.Random(f"{seed}-{kind}")
            cases.append(inject(rng, kind, warehouse.new_id(kind), now))
    for seed in range(8):
        cases.append(clean(random.Random(seed), warehouse.new_id("clean"), now))
    warehouse.write([job for case in cases for job in case.jobs])
    as_of = warehouse.ingest()
    check(warehouse, cases, as_of)


@DEEP_ONLY  # every run: test_every_kind_injected_is_found_and_clean_jobs_give_none (each kind, fixed seeds)
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**32 - 1),
    kinds=st.lists(st.sampled_from([*KINDS, None]), min_size=1, max_size=4),
)
def test_any_seed_recall_is_complete_and_nothing_extra(
    warehouse: Warehouse, seed: int, kinds: list[str | None]
) -> None:
    now = int(time.time() * 1000)
    rng = random.Random(seed)
    cases = [
        inject(rng, kind, warehouse.new_id(kind), now) if kind else clean(rng, warehouse.new_id("clean"), now)
        for kind in kinds
    ]
    warehouse.write([job for case in cases for job in case.jobs])
    as_of = warehouse.ingest()
    check(warehouse, cases, as_of)


# --- the rules on random series: where the edges are ----------------------------------------------

LOSSES = st.one_of(
    st.sampled_from([0.0, 1.0, 2.0, -1.0, 0.5, math.nan, math.inf, -math.inf]),  # ties and non-finite
    st.floats(-10, 10, allow_nan=False, allow_infinity=False),
    st.none(),  # a row without a loss
)


@st.composite
def series(draw: st.DrawFn) -> list[tuple[float | None, float | None]]:
    n = draw(st.integers(0, 60))
    shape = draw(st.sampled_from(["free", "falling", "rising", "spiky", "spiky"]))
    out = []
    for i in range(n):
        loss = draw(LOSSES)
        if shape == "spiky" and loss is not None and math.isfinite(loss):
            # flat, now and then 1.5 to 4 times higher, sometimes for two rows
            loss = 1.0 + loss * 0.01 if draw(st.integers(0, 7)) else draw(st.sampled_from([1.5, 2.0, 4.0]))
        elif shape != "free" and loss is not None and math.isfinite(loss):
            loss = (3.0 - i * 0.05 if shape == "falling" else 0.5 * 1.08**i) + loss * 0.01
        ev = draw(st.one_of(st.none(), st.sampled_from([1.0, 1.05, 0.9, 2.0]), st.floats(0, 5)))
        out.append((loss, ev))
    return out


def loss_job(job_id: str, values: list[tuple[float | None, float | None]]) -> Job:
    rows = [
        Row((i + 1) * 10, 1_790_000_000_000 + i * 10_000, loss=loss, eval_loss=ev)
        for i, (loss, ev) in enumerate(values)
    ]
    return Job(job_id, "completed", {}, rows)


# --- the speed rules on random series: unknown rows, zero seconds, equal and missing times -------

SPEED_KINDS = {"throughput_drop", "stall"}


@st.composite
def speed_job(draw: st.DrawFn) -> tuple[dict[str, Any], list[Row]]:
    """Runs of normal and slow rows (throughput 1/2, 4/5 or 1/3 of normal), some rows without a
    speed or a time, steps of uneven size, gaps of 0 s up to hours."""
    config: dict[str, Any] = draw(st.sampled_from([{}, {"batch_size": 8}]))
    rows: list[Row] = []
    step, ts = 0, 1_790_000_000_000
    for _ in range(draw(st.integers(0, 6))):
        slow = draw(st.sampled_from([1.0, 2.0, 1.25, 3.0]))
        for _ in range(draw(st.integers(1, 14))):
            delta = draw(st.sampled_from([1, 10, 10, 7]))
            step += delta
            ts += draw(st.sampled_from([0, 10_000, 10_000, 12_000, 9_000, 700_000, 30_000, -5_000]))
            timed = draw(st.integers(0, 9)) > 0
            speed = draw(st.sampled_from(["iteration_time", "iteration_time", "sps", "samples", "none", "zero"]))
            row = Row(step, ts if timed else None)
            if speed == "iteration_time":
                row.iteration_time = slow
                row.samples_per_second = 8 / slow if not config else None
            elif speed == "sps":
                row.samples_per_second = 8 / slow
            elif speed == "samples":
                row.samples = 8 * delta
                row.iteration_time = slow
            elif speed == "zero":  # no seconds: the row's samples_per_second stands
                row.iteration_time = 0.0
                row.samples_per_second = 8 / slow
            rows.append(row)
    return config, rows


# --- the GPU rules on random samples: unknown utilization, idle edges, partial throttle reasons ----

GPU_RULE_KINDS = {"gpu_idle", "gpu_straggler", "gpu_throttled", "low_gpu_utilization", "memory_headroom"}


@st.composite
def gpu_job(draw: st.DrawFn) -> tuple[list[Row], list[Reading]]:
    """A job of 1000 training seconds whose GPUs (1 to 4, on one or two hosts) are sampled at
    uneven times with utilizations around the thresholds, some unknown."""
    rows = [Row(100 * (i + 1), 1_790_000_000_000 + 100_000 * (i + 1), loss=1.0, iteration_time=1.0) for i in range(10)]
    samples = []
    for k in range(draw(st.integers(1, 4))):
        host = draw(st.sampled_from(["node-01", "node-02"]))
        level = draw(st.sampled_from([2.0, 30.0, 60.0, 95.0]))
        ts = 1_790_000_000
        for _ in range(draw(st.integers(1, 12))):
            ts += draw(st.sampled_from([1, 5, 5, 30]))
            util = draw(st.one_of(st.just(level), st.sampled_from([0.0, 9.99, 10.0, 50.0, math.nan])))
            mem = draw(st.sampled_from([10_000.0, 30_000.0, 60_000.0]))
            total = draw(st.sampled_from([81_559.0, 81_559.0, 40_000.0, None]))
            reasons = draw(st.sampled_from([None, 0, 0x1, 0x4, 0x40, 0x41]))
            samples.append(Reading(k, util, mem, total, reasons=reasons, ts=ts, host=host))
    if draw(st.booleans()):  # logged with the steps instead: the k-th reading of each GPU in row k
        for g in samples:
            readings = [x for x in samples if (x.host, x.gpu_index) == (g.host, g.gpu_index)]
            row = rows[readings.index(g) % len(rows)]
            if all(x.gpu_index != g.gpu_index for x in row.gpus):
                row.gpus.append(Reading(g.gpu_index, g.util, g.mem, g.total))
        samples = []
    return rows, samples


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    losses=st.lists(series(), max_size=8),
    speeds=st.lists(speed_job(), max_size=8),
    gpus=st.lists(gpu_job(), max_size=6),
)
def test_the_rules_agree_with_the_reference_on_random_series(
    warehouse: Warehouse,
    losses: list[list[tuple[float | None, float | None]]],
    speeds: list[tuple[dict[str, Any], list[Row]]],
    gpus: list[tuple[list[Row], list[Reading]]],
) -> None:
    """Random loss series (NaN, infinities, rows without a loss, ties), speed series and GPU
    samples, one ingest run for all: each family's kinds as the reference finds them."""
    families = [
        ([loss_job(warehouse.new_id("losses"), values) for values in losses], set(LOSS_RULES)),
        ([Job(warehouse.new_id("speed"), "completed", config, rows) for config, rows in speeds], SPEED_KINDS),
        ([Job(warehouse.new_id("gpus"), "completed", {}, r, samples=s) for r, s in gpus], GPU_RULE_KINDS),
    ]
    warehouse.write([job for jobs, _ in families for job in jobs])
    as_of = warehouse.ingest()
    problems = []
    for jobs, kinds in families:
        expected = [i for i in reference_insights(jobs, as_of) if i.kind in kinds]
        # insight_results: what ingest stored (test_every_kind... checks that it equals the view)
        stored = warehouse.insights("insight_results", [j.job_id for j in jobs])
        problems += compare(expected, [i for i in stored if i.kind in kinds])
    if problems:
        cases = {j.job_id: j for jobs, _ in families for j in jobs}
        bad = {job for line in problems for job in cases if f" {job} " in f" {line} "}
        pytest.fail("\n".join(problems) + "\n" + "\n".join(f"{b}: {cases[b]}" for b in sorted(bad)))


def test_a_gpu_sampled_once_at_zero_is_a_straggler(warehouse: Warehouse) -> None:
    """One sample covers no time: the GPU views cannot call that GPU idle, so it is "not idle", and
    its mean of 0 is more than 20 points below the median of 95 and 0 (found by the test above)."""
    rows = [Row(100 * (i + 1), 1_790_000_000_000 + 100_000 * (i + 1), loss=1.0, iteration_time=1.0) for i in range(10)]
    t = 1_790_000_000
    samples = [Reading(0, 95.0, 60_000.0, ts=t, host="n"), Reading(0, 95.0, 60_000.0, ts=t + 5, host="n"),
               Reading(1, 0.0, 60_000.0, ts=t, host="n")]  # fmt: skip
    job = Job(warehouse.new_id("once"), "completed", {}, rows, samples=samples)
    warehouse.write([job])
    warehouse.ingest()
    got = [
        (i.kind, i.host, i.gpu_index, i.value, i.reference) for i in warehouse.insights("job_insights", [job.job_id])
    ]
    assert got == [("gpu_straggler", "n", 1, 0.0, 47.5)]


@DEEP_ONLY  # every run: test_insights.py's refreshes (peers of a changed job, the tables follow every ingest)
def test_stored_insights_follow_changes_of_the_job_and_of_its_peers(warehouse: Warehouse) -> None:
    """insight_results is refreshed when a job's facts change, and a slow job's verdict when a peer
    arrives (its own facts unchanged): after each run it equals the view and the reference."""
    now = int(time.time() * 1000)
    group = inject(random.Random(7), "slow_vs_peers", warehouse.new_id("slow_vs_peers"), now)
    slow, *peers = group.jobs
    warehouse.write([slow, *peers[:2]])  # two peers: too few to compare with
    as_of = warehouse.ingest()
    assert reference_insights(group.jobs[:3], as_of) == []
    assert warehouse.insights("insight_results", [j.job_id for j in group.jobs]) == []
    warehouse.write(peers[2:])  # the third peer: the slow job is slow now
    check(warehouse, [group], warehouse.ingest())

    later = clean(random.Random(8), warehouse.new_id("changed"), now)
    warehouse.write(later.jobs)
    check(warehouse, [later], warehouse.ingest())
    changed = inject(random.Random(8), "nonfinite_loss", later.jobs[0].job_id, now)  # the same job, a NaN now
    path = warehouse.root / later.jobs[0].job_id / "progress.json"
    path.write_text(json.dumps(changed.jobs[0].progress(), allow_nan=True))
    check(warehouse, [changed], warehouse.ingest())


# --- the real files ------------------------------------------------------------------------------


def _exact_ms(ts: datetime | None) -> float | None:
    """Milliseconds since the epoch, to the microsecond (real files' times have microseconds)."""
    return None if ts is None else (ts - datetime(1970, 1, 1)) / timedelta(microseconds=1) / 1000


def job_from_facts(wh: Warehouse, job_id: str) -> Job:
    """A job as the warehouse stored its facts (step rows of both sources, settings, checkpoints),
    for the reference to read: the real files' insights checked against the same rules."""
    ((status, model, gpus, updated, batch, save),) = wh.query(
        "SELECT j.status, j.model_name, j.gpu_count, j.updated_at, s.batch_size, s.save_steps "
        "FROM jobs j JOIN job_settings s USING (job_id) WHERE job_id = $job",
        {"job": job_id},
    )
    config = {k: v for k, v in {"model_name": model, "gpu_count": gpus, "batch_size": batch,
                                "save_steps": save}.items() if v is not None}  # fmt: skip
    rows = [
        Row(step, _exact_ms(ts), loss=loss, eval_loss=ev, iteration_time=it, samples_per_second=sps, samples=samples)
        for step, ts, loss, ev, it, sps, samples in wh.query(
            "SELECT step, ts, loss, eval_loss, iteration_time, samples_per_second, samples "
            "FROM step_facts WHERE job_id = $job ORDER BY step",
            {"job": job_id},
        )
    ]
    checkpoints = [
        s for (s,) in wh.query("SELECT step FROM checkpoints WHERE job_id = $job ORDER BY step", {"job": job_id})
    ]
    return Job(job_id, status, config, rows, checkpoints, updated_ms=_ms(updated))


# What the real files give (docs/insights.md, "What the real files give"): job, kind, first and
# last step, value and reference rounded to 4 significant digits.
REAL_INSIGHTS = {
    # the log rounds losses to 4 decimals: 0.0002 after twenty rows of mostly 0.0001 is a "spike"
    ("whisper-ja-last-checkpoint", "loss_spike", 5000, 5000, "0.0002", "0.0001"),
    # eval loss 0.321 at step 1000, then 0.358, 0.394, 0.412, 0.420 while the training loss falls
    ("whisper-ja-last-checkpoint", "overfitting", 2000, 5000, "0.42", "0.321"),
}


@pytest.fixture(scope="module")
def real(warehouse: Warehouse) -> Warehouse:
    """The real trainer states, in the generated jobs' warehouse (their ids are apart; building a
    second warehouse costs more than the rest of a test)."""
    summary = warehouse.ingest_roots([REALDATA / "hf_trainer_state"])
    assert summary.failed == 1  # the Git LFS pointer
    return warehouse


def real_ids(wh: Warehouse) -> list[str]:
    return [job for (job,) in wh.query("SELECT job_id FROM jobs WHERE source_dir LIKE '%/hf_trainer_state/%'")]


def _sig(x: float | None) -> str:
    return "null" if x is None else f"{x:.4g}"


def test_the_real_files_give_the_insights_the_docs_list(real: Warehouse) -> None:
    got = real.insights("job_insights", real_ids(real))
    assert {
        (i.job_id, i.kind, i.first_step, i.last_step, _sig(i.value), _sig(i.reference)) for i in got
    } == REAL_INSIGHTS


def test_the_real_files_agree_with_the_reference(real: Warehouse) -> None:
    jobs = [job_from_facts(real, job) for job in real_ids(real)]
    assert len(jobs) == 8  # hf_trainer_state's folders but the LFS pointer: an empty PostgreSQL gives []
    (as_of,) = real.query("SELECT max(started_at) FROM ingest_runs")[0]
    expected = reference_insights(jobs, _ms(as_of))  # type: ignore[arg-type]
    got = real.insights("job_insights", [j.job_id for j in jobs])
    problems = compare(expected, got)
    assert not problems, "\n".join(problems)
