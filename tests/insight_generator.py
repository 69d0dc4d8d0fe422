"""Generated jobs for the insights tests: clean jobs, each anomaly of insights.md injected on demand,
and an independent reference implementation of insights.md's rules in plain Python.

The reference is written from the contract (shared/spec/insights.md, analytics.md), not from the
warehouse's SQL: the tests compare the two. A generated job is a small model (rows, GPU readings,
checkpoints, status); ``Job.progress()`` writes it as a progress.json and ``Job.spool()`` as the
GPU sampler's JSON lines, and ``reference_insights`` reads the same model.

Times are whole milliseconds (steps) and whole seconds (GPU samples), so that the warehouse's
microsecond timestamps hold them exactly and gaps compare to 1e-9.
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

KINDS = (
    "nonfinite_loss",
    "loss_spike",
    "loss_divergence",
    "overfitting",
    "throughput_drop",
    "stall",
    "slow_vs_peers",
    "gpu_idle",
    "gpu_straggler",
    "gpu_throttled",
    "low_gpu_utilization",
    "memory_headroom",
    "work_at_risk",
    "silent_running",
)

SEVERITY = {
    "nonfinite_loss": "critical",
    "loss_spike": "warning",
    "loss_divergence": "critical",
    "overfitting": "warning",
    "throughput_drop": "warning",
    "stall": "warning",
    "slow_vs_peers": "warning",
    "gpu_idle": "warning",
    "gpu_straggler": "warning",
    "gpu_throttled": "warning",
    "low_gpu_utilization": "warning",
    "memory_headroom": "info",
    "work_at_risk": "warning",
    "silent_running": "warning",
}

ROW_KINDS = {"nonfinite_loss", "loss_spike", "loss_divergence", "overfitting", "throughput_drop", "stall"}
GPU_KINDS = {"gpu_idle", "gpu_straggler", "gpu_throttled"}

# the default thresholds of insights.md
THROTTLE_MASK = 0xEC  # SW power cap, HW slowdown, SW/HW thermal, HW power brake (the GPU views)
TOTAL_MB = 81559.0


@dataclass
class Reading:
    """A GPU reading: a step's (``ts`` None: the row's) or a sample (``ts`` in whole seconds)."""

    gpu_index: int
    util: float
    mem: float
    total: float | None = TOTAL_MB
    temp: float = 65.0
    reasons: int | None = None
    ts: int | None = None
    host: str = ""


@dataclass
class Row:
    step: int
    ts_ms: int | None
    loss: float | None = None
    eval_loss: float | None = None
    iteration_time: float | None = None
    samples_per_second: float | None = None
    samples: int | None = None
    gpus: list[Reading] = field(default_factory=list)


@dataclass
class Job:
    job_id: str
    status: str = "completed"
    config: dict[str, Any] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    checkpoints: list[int] = field(default_factory=list)
    started_ms: int | None = None
    ended_ms: int | None = None
    updated_ms: int | None = None
    samples: list[Reading] = field(default_factory=list)

    def progress(self) -> dict[str, Any]:
        history = []
        for r in self.rows:
            entry: dict[str, Any] = {"step": r.step}
            if r.ts_ms is not None:
                entry["timestamp"] = iso(r.ts_ms)
            for key in ("loss", "eval_loss", "iteration_time", "samples_per_second", "samples"):
                value = getattr(r, key)
                if value is not None:
                    entry[key] = value
            if r.gpus:
                entry["gpus"] = [
                    {"index": g.gpu_index, "utilization_percent": g.util, "memory_used_mb": g.mem,
                     "temperature_c": g.temp, **({"memory_total_mb": g.total} if g.total is not None else {})}
                    for g in r.gpus
                ]  # fmt: skip
            history.append(entry)
        doc: dict[str, Any] = {"job_id": self.job_id, "status": self.status, "config": self.config,
                               "history": history}  # fmt: skip
        if self.started_ms is not None:
            doc["started_at"] = iso(self.started_ms)
        if self.ended_ms is not None:
            doc["ended_at"] = iso(self.ended_ms)
        if self.updated_ms is not None:
            doc["updated_at"] = iso(self.updated_ms)
        if self.checkpoints:
            doc["checkpoints"] = [{"step": s, "path": f"checkpoint-{s}"} for s in self.checkpoints]
        return doc

    def spool(self) -> list[dict[str, Any]]:
        out = []
        for s in self.samples:
            line: dict[str, Any] = {"ts": s.ts, "host": s.host, "job_id": self.job_id, "gpu_index": s.gpu_index,
                                    "utilization_percent": s.util, "memory_used_mb": s.mem,
                                    "temperature_c": s.temp}  # fmt: skip
            if s.total is not None:
                line["memory_total_mb"] = s.total
            if s.reasons is not None:
                line["clocks_event_reasons"] = s.reasons
            out.append(line)
        return out


@dataclass(frozen=True)
class Insight:
    job_id: str
    kind: str
    severity: str
    first_step: int | None
    last_step: int | None
    host: str | None
    gpu_index: int | None
    value: float
    reference: float | None
    start_ms: int | None = None
    end_ms: int | None = None

    def key(self) -> tuple[Any, ...]:
        """What identifies an insight in a comparison: all but the figures."""
        return (self.job_id, self.kind, self.first_step, self.last_step, self.host or None, self.gpu_index)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


# ---------------------------------------------------------------------------------------------
# The reference implementation (insights.md, analytics.md), one function per rule.
# ---------------------------------------------------------------------------------------------


def finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def _ordered(job: Job) -> list[Row]:
    return sorted(job.rows, key=lambda r: r.step)


def row_metrics(job: Job) -> list[tuple[Row, float | None, float | None]]:
    """(row, seconds, samples) per row, as analytics.md derives them."""
    out = []
    prev_step, prev_ts = 0, None
    batch = job.config.get("batch_size")
    for i, r in enumerate(_ordered(job)):
        delta = r.step - prev_step
        seconds: float | None = None
        if finite(r.iteration_time):
            seconds = r.iteration_time * delta  # type: ignore[operator]
        elif i > 0 and r.ts_ms is not None and prev_ts is not None and r.ts_ms >= prev_ts:
            seconds = (r.ts_ms - prev_ts) / 1000
        samples: float | None = None
        if r.samples is not None:
            samples = float(r.samples)
        elif batch is not None:
            samples = batch * delta
        elif finite(r.samples_per_second) and seconds is not None:
            samples = r.samples_per_second * seconds  # type: ignore[operator]
        out.append((r, seconds, samples))
        prev_step, prev_ts = r.step, r.ts_ms
    return out


def row_throughput(seconds: float | None, samples: float | None, sps: float | None) -> float | None:
    if seconds is not None and samples is not None and seconds != 0:
        return samples / seconds
    return sps if finite(sps) else None


def average_samples_per_second(job: Job) -> float | None:
    both = [(sec, smp) for _, sec, smp in row_metrics(job) if sec is not None and smp is not None]
    total = sum(sec for sec, _ in both)
    if total > 0:
        return sum(smp for _, smp in both) / total
    rates = [r.samples_per_second for r in job.rows if finite(r.samples_per_second)]
    return sum(rates) / len(rates) if rates else None  # type: ignore[arg-type]


def training_seconds(job: Job) -> float:
    return sum(sec for _, sec, _ in row_metrics(job) if sec is not None)


def positive_gap_median(job: Job) -> float | None:
    rows = _ordered(job)
    gaps = [
        (b.ts_ms - a.ts_ms) / 1000
        for a, b in zip(rows, rows[1:], strict=False)
        if a.ts_ms is not None and b.ts_ms is not None and b.ts_ms > a.ts_ms
    ]
    return median(gaps) if gaps else None


def _insight(job: Job, kind: str, value: float, reference: float | None, first: Row | None = None,
             last: Row | None = None, host: str | None = None, gpu: int | None = None) -> Insight:  # fmt: skip
    return Insight(
        job.job_id, kind, SEVERITY[kind],
        first.step if first else None, last.step if last else None, host, gpu, value, reference,
        first.ts_ms if first else None, last.ts_ms if last else None,
    )  # fmt: skip


def nonfinite_loss(job: Job) -> list[Insight]:
    rows = _ordered(job)
    bad = [i for i, r in enumerate(rows) if r.loss is not None and not math.isfinite(r.loss)]
    if not bad:
        return []
    before = [r.loss for r in rows[: bad[0]] if finite(r.loss)]
    return [_insight(job, "nonfinite_loss", float(len(bad)), before[-1] if before else None,
                     rows[bad[0]], rows[bad[-1]])]  # fmt: skip


def loss_spike(job: Job) -> list[Insight]:
    rows = _ordered(job)
    spikes: dict[int, float] = {}  # row index -> m
    seen: list[float] = []
    for i, r in enumerate(rows):
        if not finite(r.loss):
            continue
        if len(seen) >= 20:
            window = seen[-20:]
            m = median(window)
            d = median([abs(x - m) for x in window])
            if r.loss > m + max(6 * d, 0.5 * abs(m)):  # type: ignore[operator]
                spikes[i] = m
        seen.append(r.loss)  # type: ignore[arg-type]
    out, group = [], []
    for i in sorted(spikes):
        if group and i != group[-1] + 1:
            out.append(group)
            group = []
        group.append(i)
    if group:
        out.append(group)
    return [
        _insight(job, "loss_spike", max(rows[i].loss for i in g), spikes[g[0]], rows[g[0]], rows[g[-1]])  # type: ignore[type-var]
        for g in out
    ]


def rolling_medians(rows: list[Row]) -> list[float | None]:
    """r_i: the median of the finite losses of rows i-9 .. i, from the row of the 10th finite loss on."""
    out: list[float | None] = []
    count = 0
    for i, r in enumerate(rows):
        if finite(r.loss):
            count += 1
        window = [x.loss for x in rows[max(0, i - 9) : i + 1] if finite(x.loss)]
        out.append(median(window) if count >= 10 and window else None)  # type: ignore[arg-type]
    return out


def loss_divergence(job: Job) -> list[Insight]:
    rows = _ordered(job)
    rs = rolling_medians(rows)
    r10 = next((r for r in rs if r is not None), None)
    if r10 is None:
        return []
    b = math.inf
    for k, rk in enumerate(rs):
        if rk is None:
            continue
        b = min(b, rk)
        if b > 0 and rk >= 2 * b and rk - b >= 0.1 * (r10 - b):
            last = next(r for r in reversed(rs) if r is not None)
            return [_insight(job, "loss_divergence", last, b, rows[k], rows[-1])]
    return []


def overfitting(job: Job) -> list[Insight]:
    rows = _ordered(job)
    evals = [r for r in rows if finite(r.eval_loss)]
    if not evals:
        return []
    best = min(evals, key=lambda r: r.eval_loss)  # type: ignore[arg-type,return-value]  # first on ties
    after = [r for r in evals if r.step > best.step]
    if len(after) < 3 or not after[-1].eval_loss >= 1.05 * best.eval_loss:  # type: ignore[operator]
        return []

    def tail(step: int) -> float | None:
        losses = [r.loss for r in rows if r.step <= step and finite(r.loss)]
        return median(losses[-10:]) if losses else None  # type: ignore[arg-type]

    now, then = tail(after[-1].step), tail(best.step)
    if now is None or then is None or not now < then:
        return []
    return [_insight(job, "overfitting", after[-1].eval_loss, best.eval_loss, after[0], after[-1])]  # type: ignore[arg-type]


def throughput_drop(job: Job) -> list[Insight]:
    known = [(r, sec, smp, row_throughput(sec, smp, r.samples_per_second)) for r, sec, smp in row_metrics(job)]
    known = [k for k in known if k[3] is not None]
    if not known:
        return []
    t = median([k[3] for k in known])  # type: ignore[misc]
    runs, run = [], []
    for k in known:
        if k[3] < 0.7 * t:  # type: ignore[operator]
            run.append(k)
        else:
            runs.append(run)
            run = []
    runs.append(run)
    out = []
    for run in runs:
        if len(run) < 10:
            continue
        both = [(sec, smp) for _, sec, smp, _ in run if sec is not None and smp is not None]
        secs = sum(sec for sec, _ in both)
        value = sum(s for _, s in both) / secs if both and secs else sum(k[3] for k in run) / len(run)
        out.append(_insight(job, "throughput_drop", value, t, run[0][0], run[-1][0]))
    return out


def stall(job: Job) -> list[Insight]:
    rows = _ordered(job)
    g = positive_gap_median(job)
    if g is None:
        return []
    out = []
    for a, b in zip(rows, rows[1:], strict=False):
        if a.ts_ms is not None and b.ts_ms is not None:
            gap = (b.ts_ms - a.ts_ms) / 1000
            if gap > max(10 * g, 60):
                out.append(_insight(job, "stall", gap, g, a, b))
    return out


def gpu_count(job: Job) -> int:
    if job.config.get("gpu_count") is not None:
        return int(job.config["gpu_count"])
    return len({(g.host, g.gpu_index) for g in _readings(job)})


def slow_vs_peers(job: Job, jobs: list[Job]) -> list[Insight]:
    mine = average_samples_per_second(job)
    if job.status != "completed" or mine is None:
        return []
    peers = [
        p for p in jobs
        if p is not job and p.status == "completed" and p.config.get("model_name") is not None
        and p.config.get("model_name") == job.config.get("model_name") and gpu_count(p) == gpu_count(job)
    ]  # fmt: skip
    figures = [x for x in (average_samples_per_second(p) for p in peers) if x is not None]
    if len(figures) < 3:
        return []
    ref = median(figures)
    return [_insight(job, "slow_vs_peers", mine, ref)] if mine < 0.7 * ref else []


def _readings(job: Job) -> list[Reading]:
    """The job's GPU readings: its samples when it has any, else its steps' readings (timed by the row)."""
    if job.samples:
        return job.samples
    out = []
    for r in _ordered(job):
        for g in r.gpus:
            ts = r.ts_ms / 1000 if r.ts_ms is not None else None
            out.append(replace(g, ts=ts))  # type: ignore[arg-type]
    return out


def per_gpu(job: Job) -> dict[tuple[str, int], dict[str, float | None]]:
    groups: dict[tuple[str, int], list[Reading]] = {}
    for g in _readings(job):
        groups.setdefault((g.host, g.gpu_index), []).append(g)
    out = {}
    for key, readings in groups.items():
        readings = sorted(readings, key=lambda g: g.ts if g.ts is not None else -1)
        utils = [g.util for g in readings if finite(g.util)]
        util_s = idle_s = reason_s = throttled_s = 0.0
        if not job.samples:
            # step readings (docs/insights.md: they need not have times): each counts once
            util_s = float(sum(1 for g in readings if finite(g.util)))
            idle_s = float(sum(1 for g in readings if g.util < 10))
        for a, b in zip(readings if job.samples else [], readings[1:], strict=False):
            if a.ts is None or b.ts is None:
                continue
            dt = b.ts - a.ts
            if finite(a.util):
                util_s += dt
                idle_s += dt if a.util < 10 else 0
            if a.reasons is not None:
                reason_s += dt
                throttled_s += dt if a.reasons & THROTTLE_MASK else 0
        out[key] = {
            "mean": sum(utils) / len(utils) if utils else None,
            "idle_share": idle_s / util_s if util_s > 0 else None,
            "throttled_share": throttled_s / reason_s if reason_s > 0 else None,
        }
    return out


def gpu_rules(job: Job) -> list[Insight]:
    gpus = per_gpu(job)
    out = []
    means = [g["mean"] for g in gpus.values() if g["mean"] is not None]
    med = median(means) if len(means) >= 2 else None  # type: ignore[arg-type]
    for (host, index), g in sorted(gpus.items()):
        idle = g["idle_share"] is not None and g["idle_share"] > 0.5  # type: ignore[operator]
        if idle:
            out.append(_insight(job, "gpu_idle", g["idle_share"], 0.5, host=host, gpu=index))  # type: ignore[arg-type]
        if med is not None and not idle and g["mean"] is not None and g["mean"] < med - 20:
            out.append(_insight(job, "gpu_straggler", g["mean"], med, host=host, gpu=index))
        if g["throttled_share"] is not None and g["throttled_share"] > 0.10:
            out.append(_insight(job, "gpu_throttled", g["throttled_share"], 0.10, host=host, gpu=index))
    readings = _readings(job)
    if training_seconds(job) >= 600:
        utils = [g.util for g in readings if finite(g.util)]
        if utils and sum(utils) / len(utils) < 50:
            out.append(_insight(job, "low_gpu_utilization", sum(utils) / len(utils), 50.0))
        mems = [g.mem for g in readings if finite(g.mem)]
        totals = [g.total for g in readings if finite(g.total)]
        if mems and totals and max(mems) / max(totals) < 0.4:  # type: ignore[type-var]
            out.append(_insight(job, "memory_headroom", max(mems) / max(totals), 0.4))  # type: ignore[type-var]
    return out


def checkpoint_frequency(job: Job) -> float | None:
    if job.config.get("save_steps") is not None:
        return float(job.config["save_steps"])
    steps = sorted(set(job.checkpoints))
    gaps = [b - a for a, b in zip([0, *steps], steps, strict=False)]
    return median(gaps) if gaps else None  # type: ignore[arg-type]


def work_at_risk(job: Job) -> list[Insight]:
    freq = checkpoint_frequency(job)
    if job.status not in ("failed", "cancelled") or freq is None or not job.rows:
        return []
    last = max(r.step for r in job.rows)
    since = last - max(job.checkpoints, default=0)
    return [_insight(job, "work_at_risk", float(since), freq)] if since > 2 * freq else []


def silent_running(job: Job, as_of_ms: float) -> list[Insight]:
    if job.status != "running":
        return []
    rows = _ordered(job)
    known = [x for x in (rows[-1].ts_ms if rows else None, job.updated_ms) if x is not None]
    if not known:
        return []
    g = positive_gap_median(job)
    limit = max(1800.0, 20 * g) if g is not None else 1800.0
    silence = (as_of_ms - max(known)) / 1000
    return [_insight(job, "silent_running", silence, limit)] if silence > limit else []


def reference_insights(jobs: list[Job], as_of_ms: float) -> list[Insight]:
    out: list[Insight] = []
    for job in jobs:
        out += nonfinite_loss(job) + loss_spike(job) + loss_divergence(job) + overfitting(job)
        out += throughput_drop(job) + stall(job) + slow_vs_peers(job, jobs) + gpu_rules(job)
        out += work_at_risk(job) + silent_running(job, as_of_ms)
    return out


LOSS_RULES = {
    "nonfinite_loss": nonfinite_loss,
    "loss_spike": loss_spike,
    "loss_divergence": loss_divergence,
    "overfitting": overfitting,
}


# ---------------------------------------------------------------------------------------------
# The generator
# ---------------------------------------------------------------------------------------------


@dataclass
class Generated:
    """The jobs one injection needs (a slow job comes with its peers) and the kind injected."""

    jobs: list[Job]
    kind: str | None


def clean_job(rng: random.Random, job_id: str, now_ms: int, *, gpus_as_samples: bool | None = None) -> Job:
    """A job no rule fires on: a smooth, noisy, falling loss, steady speed and timestamps, busy GPUs
    with memory to spare over 40 %, completed with its checkpoints."""
    n = rng.randint(60, 140)
    delta = rng.choice([5, 10, 20])
    it = rng.uniform(700 / (n * delta), 3.0) if 700 / (n * delta) < 3.0 else 3.0  # training_seconds >= 700
    it = max(it, 0.2)
    batch = rng.choice([8, 16, 32])
    with_batch = rng.random() < 0.6
    start_ms = now_ms - rng.randint(3, 20) * 86_400_000
    a, c, tau = rng.uniform(1.0, 3.0), rng.uniform(0.3, 1.0), rng.uniform(n / 6, n / 2)
    ea, ec = a * 0.8, c * 1.1
    eval_every = rng.choice([5, 10, 15])
    n_gpus = rng.randint(1, 4)
    as_samples = rng.random() < 0.5 if gpus_as_samples is None else gpus_as_samples
    host = f"node-{rng.randint(1, 9):02d}"
    rows = []
    ts = start_ms
    for i in range(n):
        step = (i + 1) * delta
        row_it = it * rng.uniform(0.95, 1.05)
        ts += round(row_it * delta * 1000) + rng.randint(0, 300)
        # still falling at the end (by a fifth of c over the run): the overfitting rule reads that
        loss = c * (1 - 0.2 * i / n) + a * math.exp(-i / tau) * (1 + rng.gauss(0, 0.01)) + rng.gauss(0, 0.002)
        row = Row(step, ts, loss=loss, iteration_time=row_it)
        if with_batch:
            pass
        else:
            row.samples_per_second = batch / row_it
        if (i + 1) % eval_every == 0:
            row.eval_loss = ec + ea * math.exp(-i / tau)  # strictly falling: no overfitting
        if not as_samples:
            row.gpus = [
                Reading(k, rng.uniform(85, 99), TOTAL_MB * rng.uniform(0.5, 0.85), temp=rng.uniform(55, 75))
                for k in range(n_gpus)
            ]
        rows.append(row)
    config: dict[str, Any] = {"model_name": f"model-{job_id}"}
    if with_batch:
        config["batch_size"] = batch
    if rng.random() < 0.5:
        config["gpu_count"] = n_gpus
    freq = delta * rng.choice([5, 10, 20])
    if rng.random() < 0.6:
        config["save_steps"] = freq
    last_step = rows[-1].step
    job = Job(job_id, "completed", config, rows, list(range(freq, last_step + 1, freq)),
              started_ms=start_ms, ended_ms=ts + rng.randint(1000, 30_000))  # fmt: skip
    if as_samples:
        job.samples = gpu_samples(rng, job, n_gpus, host)
    return job


def gpu_samples(rng: random.Random, job: Job, n_gpus: int, host: str) -> list[Reading]:
    """Busy GPUs sampled every 5 s (whole seconds) from the first row to the last."""
    first = (job.rows[0].ts_ms or 0) // 1000
    last = (job.rows[-1].ts_ms or 0) // 1000
    out = []
    for k in range(n_gpus):
        reasons_kind = rng.choice([None, 0, "benign"])
        for t in range(first, last + 1, 5):
            reasons = (
                None if reasons_kind is None else (0 if reasons_kind == 0 else rng.choice([0, 0x1, 0x2, 0x10, 0x100]))
            )
            out.append(Reading(k, rng.uniform(85, 99), TOTAL_MB * rng.uniform(0.5, 0.85),
                               temp=rng.uniform(55, 75), reasons=reasons, ts=t, host=host))  # fmt: skip
    return out


def _gpu_job(rng: random.Random, job_id: str, now_ms: int, min_gpus: int, as_samples: bool) -> Job:
    job = clean_job(rng, job_id, now_ms, gpus_as_samples=as_samples)
    n = max(min_gpus, len({g.gpu_index for g in _all_readings(job)}))
    if as_samples:
        job.samples = gpu_samples(rng, job, n, job.samples[0].host)
    else:
        for r in job.rows:
            r.gpus = [
                Reading(k, rng.uniform(85, 99), TOTAL_MB * rng.uniform(0.5, 0.85), temp=rng.uniform(55, 75))
                for k in range(n)
            ]
    job.config.pop("gpu_count", None)
    return job


def _all_readings(job: Job) -> list[Reading]:
    """The job's GPU readings themselves (samples, else the rows'), in time order: to change them."""
    return job.samples or [g for r in job.rows for g in r.gpus]


def _by_gpu(job: Job, index: int) -> list[Reading]:
    return [g for g in _all_readings(job) if g.gpu_index == index]


def inject(rng: random.Random, kind: str, job_id: str, now_ms: int) -> Generated:
    """Jobs carrying one anomaly of ``kind`` (on the job named ``job_id``) and nothing else."""
    if kind in GPU_KINDS or kind in ("low_gpu_utilization", "memory_headroom"):
        # throttling is read from samples only; the others from either source
        as_samples = kind == "gpu_throttled" or rng.random() < 0.6
        job = _gpu_job(rng, job_id, now_ms, 3 if kind in ("gpu_straggler", "gpu_idle") else 1, as_samples)
    else:
        job = clean_job(rng, job_id, now_ms)
    rows = job.rows
    n = len(rows)
    jobs = [job]
    if kind == "nonfinite_loss":
        first = rng.choice([0, rng.randint(1, n - 1)])
        for i in {first, *rng.sample(range(first, n), min(n - first, rng.randint(0, 2)))}:
            rows[i].loss = rng.choice([math.nan, math.inf, -math.inf])
    elif kind == "loss_spike":
        # groups 15 rows apart or more: two close groups would lift the rolling median (a divergence)
        starts = sorted(rng.sample(range(25, n - 4, 15), min(len(range(25, n - 4, 15)), rng.randint(1, 2))))
        for s in starts:
            for i in range(s, s + rng.randint(1, 3)):
                rows[i].loss = rows[i].loss * rng.uniform(2.2, 5.0)  # type: ignore[operator]
    elif kind == "loss_divergence":
        k0 = rng.randint(25, max(25, n - 55))
        growth = rng.uniform(0.02, 0.033)
        base = rows[k0].loss
        for i in range(k0 + 1, n):
            rows[i].loss = base * (1 + growth) ** (i - k0) * (1 + rng.gauss(0, 0.003))  # type: ignore[operator]
        if n - k0 < 50:  # long enough to reach twice the best
            for _ in range(50 - (n - k0)):
                extend(rng, job, rows[-1].loss * (1 + growth))  # type: ignore[operator]
    elif kind == "overfitting":
        every = rng.choice([3, 4, 5])
        evals = [r for i, r in enumerate(rows) if (i + 1) % every == 0]
        for r in rows:
            r.eval_loss = None
        # the best eval late enough for 10 training losses before it (fewer: the rule reads less)
        j = rng.randint(10 // every + 1, len(evals) - 4)
        e0, rise = rows[0].loss * 0.9, rng.uniform(0.02, 0.08)  # type: ignore[operator]
        for t, r in enumerate(evals):
            r.eval_loss = e0 * 0.97**t if t <= j else e0 * 0.97**j * (1 + rise * (t - j))
    elif kind == "throughput_drop":
        length = rng.randint(10, min(20, n // 3))
        s = rng.randint(1, n - length)
        factor = rng.uniform(1.6, 2.5)
        shift = 0
        for i, r in enumerate(rows):
            if s <= i < s + length:
                extra = r.iteration_time * (factor - 1)  # type: ignore[operator]
                r.iteration_time *= factor  # type: ignore[operator]
                if r.samples_per_second is not None:
                    r.samples_per_second /= factor
                shift += round(extra * (r.step - (rows[i - 1].step if i else 0)) * 1000)
            r.ts_ms += shift  # type: ignore[operator]
        job.ended_ms += shift  # type: ignore[operator]
    elif kind == "stall":
        i = rng.randint(1, n - 1)
        g = positive_gap_median(job) or 1.0
        gap_ms = round(max(10 * g, 60) * rng.uniform(1.5, 6) * 1000)
        for r in rows[i:]:
            r.ts_ms += gap_ms  # type: ignore[operator]
        job.ended_ms += gap_ms  # type: ignore[operator]
    elif kind == "slow_vs_peers":
        model, n_gpus = f"group-{job_id}", rng.randint(1, 4)
        jobs = []
        for p in range(4):
            peer = clean_job(rng, job_id if p == 0 else f"{job_id}-peer{p}", now_ms)
            peer.config["model_name"] = model
            peer.config["gpu_count"] = n_gpus
            jobs.append(peer)
        # the same speed for all (batch / iteration time), the first one slower by a factor
        speed = rng.uniform(20, 60)
        for p, peer in enumerate(jobs):
            factor = rng.uniform(1.7, 3.0) if p == 0 else rng.uniform(0.97, 1.03)
            batch = peer.config.get("batch_size") or 16
            for r in peer.rows:
                r.iteration_time = batch / speed * factor * rng.uniform(0.98, 1.02)
                if r.samples_per_second is not None:
                    r.samples_per_second = batch / r.iteration_time
            retime(peer)
            if peer.samples:
                peer.samples = gpu_samples(rng, peer, len({g.gpu_index for g in peer.samples}), peer.samples[0].host)
    elif kind == "gpu_idle":
        index = rng.randrange(len({s.gpu_index for s in _all_readings(job)}))
        mine = _by_gpu(job, index)
        cut = round(len(mine) * rng.uniform(0.6, 0.9))
        for s in mine[:cut]:
            s.util = rng.uniform(0, 5)
    elif kind == "gpu_straggler":
        index = rng.randrange(len({s.gpu_index for s in _all_readings(job)}))
        level = rng.uniform(35, 60)
        for s in _by_gpu(job, index):
            s.util = level + rng.uniform(-8, 8)
    elif kind == "gpu_throttled":
        index = rng.randrange(len({s.gpu_index for s in job.samples}))
        mine = _by_gpu(job, index)
        s0 = rng.randrange(len(mine) // 2)
        for s in mine[s0 : s0 + round(len(mine) * rng.uniform(0.2, 0.45))]:
            s.reasons = rng.choice([0x4, 0x8, 0x20, 0x40, 0x80, 0x4 | 0x1, 0x44])
        for s in mine:
            if s.reasons is None:
                s.reasons = 0
    elif kind == "low_gpu_utilization":
        level = rng.uniform(20, 42)
        for s in _all_readings(job):
            s.util = level + rng.uniform(-6, 6)
    elif kind == "memory_headroom":
        for s in _all_readings(job):
            s.mem = TOTAL_MB * rng.uniform(0.1, 0.37)
    elif kind == "work_at_risk":
        job.status = rng.choice(["failed", "cancelled"])
        freq = job.config.get("save_steps") or (job.checkpoints[0] if job.checkpoints else 100)
        last = rows[-1].step
        keep_until = rng.choice([0, max(0, last - 2 * freq - rng.randint(1, 3 * freq))])
        job.checkpoints = [c for c in job.checkpoints if c <= keep_until]
        if not job.checkpoints and "save_steps" not in job.config:
            job.config["save_steps"] = freq
    elif kind == "silent_running":
        job.status = "running"
        job.ended_ms = None
        if rng.random() < 0.5:
            slow_logging(rng, job)  # 20 g, not 30 min, is the limit
        job.updated_ms = (rows[-1].ts_ms or 0) + rng.randint(0, 20_000)
    elif kind is not None:
        raise ValueError(kind)
    return Generated(jobs, kind)


def retime(job: Job) -> None:
    """Timestamps again from the iteration times (after a change of speed)."""
    ts = job.started_ms or 0
    prev = 0
    for r in job.rows:
        ts += round(r.iteration_time * (r.step - prev) * 1000) + 100  # type: ignore[operator]
        r.ts_ms, prev = ts, r.step
    if job.ended_ms is not None:
        job.ended_ms = ts + 5000


def extend(rng: random.Random, job: Job, loss: float) -> None:
    """One more row like the last, with ``loss``."""
    last = job.rows[-1]
    prev = job.rows[-2]
    row = replace(last, step=2 * last.step - prev.step, ts_ms=2 * last.ts_ms - prev.ts_ms, loss=loss,  # type: ignore[operator]
                  eval_loss=None, gpus=[replace(g) for g in last.gpus])  # fmt: skip
    job.rows.append(row)
    if job.ended_ms is not None:
        job.ended_ms = row.ts_ms + 5000  # type: ignore[operator]
    if job.checkpoints and "save_steps" in job.config:
        f = job.config["save_steps"]
        job.checkpoints = list(range(f, row.step + 1, f))
    elif job.checkpoints:
        gap = job.checkpoints[0]
        job.checkpoints = list(range(gap, row.step + 1, gap))


def clean(rng: random.Random, job_id: str, now_ms: int) -> Generated:
    """A clean job in one of its forms: completed, failed with a recent checkpoint, still running."""
    job = clean_job(rng, job_id, now_ms)
    form = rng.choice(["completed", "completed", "failed", "running"])
    if form == "failed":
        job.status = rng.choice(["failed", "cancelled"])
    elif form == "running":
        job.status = "running"
        job.ended_ms = None
        quiet = 60_000  # its last row a minute ago
        if rng.random() < 0.5:  # or 40 minutes ago, in a job that logs every 2.5 minutes
            slow_logging(rng, job)
            quiet = 2_400_000
        shift = now_ms - quiet - (job.rows[-1].ts_ms or 0)
        for r in job.rows:
            r.ts_ms += shift  # type: ignore[operator]
        job.started_ms += shift  # type: ignore[operator]
        job.updated_ms = (job.rows[-1].ts_ms or 0) + 10_000
        for s in job.samples:
            s.ts += shift // 1000  # type: ignore[operator]
    return Generated([job], None)


def slow_logging(rng: random.Random, job: Job) -> None:
    """A row every 150 s or so (g = 150 s: 20 g is 50 minutes), GPU readings with the steps."""
    prev = 0
    for r in job.rows:
        r.iteration_time = 150 / (r.step - prev) * rng.uniform(0.97, 1.03)
        if r.samples_per_second is not None:
            r.samples_per_second = (job.config.get("batch_size") or 16) / r.iteration_time
        r.gpus = [Reading(k, rng.uniform(85, 99), TOTAL_MB * rng.uniform(0.5, 0.85)) for k in range(2)]
        prev = r.step
    job.samples = []
    retime(job)
