"""Ingesting is idempotent and its result does not depend on how the files are split into runs.

The replacement rules (spec/inputs.md section 1): facts are keyed by (job, step); a step seen again
replaces the stored row when its timestamp is later; without timestamps the later ingest wins.
From these rules follow the invariants tested here:

- re-ingesting what was ingested changes nothing, and an unchanged file is not even read again;
- jobs of different folders don't interact: root order and file order don't matter;
- when every entry of a step has a timestamp, the entry with the latest one wins, whatever the
  order of the snapshots and however they are split into runs;
- when no entry of a step has one, the last one ingested wins (run order, then file order);
- every step of every snapshot is kept, once, with the values of one of its entries.

For a step logged both with and without timestamps the result depends on the entries' order
(the pairwise rule is not associative), though not on how one order is split into runs (see
``test_mixed_timestamps_do_not_depend_on_run_boundaries``), so only the general invariants are
checked for such steps.

On both engines (``ingest_engine``): on PostgreSQL every lab ingests with ``ingest --db URL`` (its
file the stage) and the facts, the ledger and the rows checked are PostgreSQL's.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any, Literal

import pytest
from conftest import REPO, Engine, Lab
from depth import DEEP, examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runlytics.ingest.formats import progress as progress_format
from runlytics.warehouse import migrate

SAMPLES = REPO / "samples" / "jobs"
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def blank_warehouse_at(path: Path) -> Path:
    migrate.upgrade(path)
    assert not path.with_name(path.name + ".wal").exists()
    return path


@pytest.fixture(scope="module")
def blank_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A warehouse at the newest schema, built once: copying it spares each test the migrations."""
    return blank_warehouse_at(tmp_path_factory.mktemp("blank") / "warehouse.duckdb")


def new_lab(folder: Path, blank: Path, engine: Engine) -> Lab:
    folder.mkdir(parents=True)
    lab = Lab(folder, engine)
    shutil.copyfile(blank, lab.db)
    return lab


@pytest.fixture
def lab(tmp_path: Path, blank_warehouse: Path, ingest_engine: Engine) -> Lab:
    return new_lab(tmp_path / "lab", blank_warehouse, ingest_engine)


def age(path: Path, seconds: float = 3600) -> None:
    """Date the file's last change ``seconds`` back: older than the ledger's 2 s freshness window."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def touch(path: Path) -> None:
    """Date the file's last change now: the next run must read it again."""
    os.utime(path, None)


def progress_files(root: Path) -> list[Path]:
    return sorted(root.rglob("progress.json"))


def ledger(lab: Lab) -> dict[str, tuple[Any, ...]]:
    rows = lab.query("SELECT path, outcome, fingerprint, rows, warning_count, last_read_at FROM ingest_files")
    return {r[0]: r[1:] for r in rows}


def sample_doc(job_id: str, n: int, *, minute: int = 0) -> dict[str, Any]:
    """A job with timestamps everywhere, ``n`` steps, two GPUs and a checkpoint."""
    start = T0 + timedelta(minutes=minute)
    return {
        "job_id": job_id,
        "status": "running",
        "updated_at": (start + timedelta(seconds=n)).isoformat(),
        "current_step": n,
        "config": {"model_name": "m", "batch_size": 8},
        "history": [
            {
                "step": s,
                "timestamp": (start + timedelta(seconds=s)).isoformat(),
                "loss": 1.0 / s,
                "samples": 8,
                "gpus": [{"index": g, "utilization_percent": 50.0 + s + g} for g in range(2)],
            }
            for s in range(1, n + 1)
        ],
        "checkpoints": [{"step": n, "path": f"checkpoint-{n}"}],
    }


# --- re-ingest ----------------------------------------------------------------------------------


def test_reingest_changes_nothing(lab: Lab) -> None:
    shutil.copytree(SAMPLES, lab.root, dirs_exist_ok=True)
    lab.write_job("nan-job", None, raw='{"job_id": "nan-job", "status": "paused", "step": 3, "loss": NaN}')
    lab.write_job("warned", {"job_id": "warned", "history": [{"step": 1, "loss": "x"}, {"loss": 2}]})
    first = lab.ingest()
    assert (first.files_seen, first.ingested, first.failed, first.pending) == (5, 5, 0, 0)
    facts = lab.facts()
    assert {r[0] for r in facts["jobs"]} == {
        "llama-sft-001",
        "mistral-lora-002",
        "legacy-gpt2-003",
        "nan-job",
        "warned",
    }
    assert (len(facts["steps"]), first.rows) == (8, 8)  # one sample logs a step twice: one row

    for _ in range(2):
        for path in progress_files(lab.root):
            touch(path)  # fresh files are read again: a real re-ingest
        again = lab.ingest()
        assert (again.ingested, again.unchanged, again.rows, again.warnings) == (5, 0, first.rows, first.warnings)
        assert lab.facts() == facts


def test_unchanged_file_is_not_read_again(lab: Lab) -> None:
    paths = [lab.write_job(f"job-{i}", sample_doc(f"job-{i}", 3 + i)) for i in range(3)]
    for path in paths:
        age(path)
    first = lab.ingest()
    assert (first.ingested, first.unchanged, first.rows) == (3, 0, 3 + 4 + 5)
    facts, read = lab.facts(), ledger(lab)
    assert all(fingerprint is not None for _, fingerprint, *_ in read.values())

    second = lab.ingest()
    assert (second.files_seen, second.ingested, second.unchanged, second.rows) == (3, 0, 3, 0)
    assert lab.facts() == facts
    assert ledger(lab) == read  # last_read_at included: not read again

    # Proof that it is the fingerprint (size and mtime) that is trusted, not the content: the same
    # number of bytes, the same mtime, another value. Not read, so not seen.
    path = paths[0]
    stat = path.stat()
    text = path.read_text()
    assert '"loss": 0.5,' in text
    path.write_text(text.replace('"loss": 0.5,', '"loss": 0.7,'))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert lab.ingest().unchanged == 3
    assert lab.facts() == facts

    # a change of mtime alone makes it read again
    age(path, 1800)
    third = lab.ingest()
    assert (third.ingested, third.unchanged) == (1, 2)
    assert lab.query("SELECT loss FROM steps WHERE job_id = 'job-0' AND step = 2") == [(0.7,)]


def test_file_changed_within_two_seconds_is_read_again(lab: Lab) -> None:
    path = lab.write_job("fresh", sample_doc("fresh", 2))
    touch(path)
    assert lab.ingest().ingested == 1
    assert lab.query("SELECT fingerprint FROM ingest_files") == [(None,)]  # too fresh to trust
    touch(path)
    summary = lab.ingest()
    assert (summary.ingested, summary.unchanged) == (1, 0)
    age(path)
    assert lab.ingest().ingested == 1  # read once more, now with a fingerprint
    assert lab.ingest().unchanged == 1


# --- order --------------------------------------------------------------------------------------


def write_roots(base: Path) -> tuple[Path, Path]:
    """Two roots with different jobs, checkpoint folders and a legacy snapshot."""
    a, b = base / "root-a", base / "root-b"
    for root, prefix in ((a, "a"), (b, "b")):
        for i in range(3):
            folder = root / f"{prefix}-job-{i}"
            folder.mkdir(parents=True)
            doc = sample_doc(f"{prefix}-{i}", 4 + i, minute=i)
            (folder / "progress.json").write_text(json_dump(doc))
            (folder / f"checkpoint-{i + 1}").mkdir()
    (a / "legacy").mkdir()
    (a / "legacy" / "progress.json").write_text('{"status": "failed", "step": 7, "loss": 1.5, "gpu_utilization": 80}')
    return a, b


def json_dump(doc: Any) -> str:
    return json.dumps(doc, allow_nan=True)


def test_root_order_does_not_matter(tmp_path: Path, blank_warehouse: Path, ingest_engine: Engine) -> None:
    a, b = write_roots(tmp_path / "data")
    results = []
    for name, runs in [
        ("a+b", [[a, b]]),
        ("b+a", [[b, a]]),
        ("a then b", [[a], [b]]),
        ("b then a", [[b], [a]]),
    ]:
        lab = new_lab(tmp_path / name, blank_warehouse, ingest_engine)
        for roots in runs:
            lab.ingest(*roots)
        results.append((name, lab.facts()))
    name0, facts0 = results[0]
    assert len(facts0["jobs"]) == 7
    assert len(facts0["steps"]) == 2 * (4 + 5 + 6) + 1
    assert len(facts0["checkpoints"]) == 2 * 3 + 2 * 3  # listed and folder checkpoints
    for name, facts in results[1:]:
        assert facts == facts0, f"{name} differs from {name0}"


def test_file_order_and_batching_do_not_matter(
    tmp_path: Path, blank_warehouse: Path, monkeypatch: pytest.MonkeyPatch, ingest_engine: Engine
) -> None:
    """Jobs in separate files (all entries timed). One job id in several folders is a conflict
    (test_hostile_input.py), so each folder here holds a job of its own."""
    root = tmp_path / "jobs"
    docs: dict[str, dict[str, Any]] = {f"job-{i}": sample_doc(f"job-{i}", 3 + i, minute=i) for i in range(2)}
    for i, (steps, minute) in enumerate([(4, 0), (6, 10), (3, 5)]):
        doc = sample_doc(f"more-{i}", steps, minute=minute)
        doc["updated_at"] = (T0 + timedelta(hours=i)).isoformat()
        docs[f"more-{i}"] = doc
    for folder, doc in docs.items():
        (root / folder).mkdir(parents=True)
        (root / folder / "progress.json").write_text(json_dump(doc))
    files = progress_files(root)

    def ingest_one_by_one(lab: Lab, order: list[int]) -> None:
        for i in order:
            lab.ingest(files[i].parent)

    results: dict[str, dict[str, Any]] = {}
    lab = new_lab(tmp_path / "one run", blank_warehouse, ingest_engine)
    lab.ingest(root)
    results["one run"] = lab.facts()
    assert len(files) == 5
    # a shuffled order too in deep runs: every run ingests the files reversed, and in batches of 2
    orders = [("reversed", [4, 3, 2, 1, 0])] + ([("shuffled", [3, 0, 4, 2, 1])] if DEEP else [])
    for name, order in orders:
        lab = new_lab(tmp_path / name, blank_warehouse, ingest_engine)
        ingest_one_by_one(lab, order)
        results[name] = lab.facts()
    monkeypatch.setattr(progress_format, "BATCH_FILES", 2)
    lab = new_lab(tmp_path / "batches of 2", blank_warehouse, ingest_engine)
    lab.ingest(root)
    results["batches of 2"] = lab.facts()

    expected = results["one run"]
    steps = {(r[0], r[1]): r for r in expected["steps"]}
    assert len(steps) == 3 + 4 + 4 + 6 + 3
    assert {k[1]: r[2] for k, r in steps.items() if k[0] == "more-1"} == {
        s: (T0 + timedelta(minutes=10, seconds=s)).replace(tzinfo=None) for s in range(1, 7)
    }
    assert sorted(r[0] for r in expected["jobs"]) == ["job-0", "job-1", "more-0", "more-1", "more-2"]
    for name, facts in results.items():
        assert facts == expected, f"{name} differs from one run"


def test_mixed_timestamps_do_not_depend_on_run_boundaries(
    tmp_path: Path, blank_warehouse: Path, ingest_engine: Engine
) -> None:
    """One step logged as e1 (no timestamp), e2 (10:05), e3 (10:01): split over runs, e2 wins (e1 <
    e2 by ingest, e2 > e3 by time), and one file keeps the same (ingest/merge.py ranks a batch's
    entries as one ingest each would; before session 12 the untimed entry made the later position
    win in one file: e3, audit F12 k)."""

    def entry(loss: float, minute: int | None) -> dict[str, Any]:
        e: dict[str, Any] = {"step": 1, "loss": loss}
        if minute is not None:
            e["timestamp"] = (T0 + timedelta(minutes=minute)).isoformat()
        return e

    e1, e2, e3 = entry(1.0, None), entry(2.0, 5), entry(3.0, 1)
    together = new_lab(tmp_path / "together", blank_warehouse, ingest_engine)
    together.write_job("j", {"job_id": "j", "history": [e1, e2, e3]})
    together.ingest()
    apart = new_lab(tmp_path / "apart", blank_warehouse, ingest_engine)
    for e in (e1, e2, e3):
        apart.write_job("j", {"job_id": "j", "history": [e]})
        apart.ingest()
    assert together.query("SELECT loss FROM steps") == [(2.0,)]
    assert apart.query("SELECT loss FROM steps") == [(2.0,)]


# --- random jobs --------------------------------------------------------------------------------

Mode = Literal["timed", "untimed", "mixed"]


@dataclass(frozen=True)
class Entry:
    """One logged step. ``uid`` identifies it in the warehouse: loss = uid + 0.5, samples = uid."""

    uid: int
    step: int
    ts: int | None  # seconds after T0
    ts_form: int  # how the timestamp is written (all forms mean the same instant)

    def as_json(self) -> dict[str, Any]:
        e: dict[str, Any] = {
            "step": self.step,
            "loss": self.uid + 0.5,
            "samples": self.uid,
            "gpus": [{"index": 0, "memory_used_mb": float(self.uid)}],
        }
        if self.ts is not None:
            when = T0 + timedelta(seconds=self.ts)
            e["timestamp"] = [
                when.replace(tzinfo=None).isoformat(),
                when.isoformat().replace("+00:00", "Z"),
                when.astimezone(UTC).replace(tzinfo=None).isoformat() + "+00:00",
                (when + timedelta(hours=5, minutes=30)).replace(tzinfo=None).isoformat() + "+05:30",
                when.timestamp(),
            ][self.ts_form]
        return e

    def row(self) -> tuple[Any, ...]:
        """(ts, loss, samples, gpu memory) as the warehouse stores them."""
        ts = None if self.ts is None else (T0 + timedelta(seconds=self.ts)).replace(tzinfo=None)
        return ts, self.uid + 0.5, self.uid, float(self.uid)


@dataclass(frozen=True)
class Job:
    job_id: str
    mode: Mode
    snapshots: tuple[tuple[Entry, ...], ...]  # the history window each run finds

    def doc(self, r: int) -> dict[str, Any]:
        window = self.snapshots[r]
        doc: dict[str, Any] = {
            "job_id": self.job_id,
            "status": "running",
            "current_step": max((e.step for e in window), default=0) + 1000 * r,
            "history": [e.as_json() for e in window],
        }
        if self.mode == "timed":
            doc["updated_at"] = (T0 + timedelta(days=1, minutes=r)).isoformat()
        return doc


UIDS = count(1)


@st.composite
def jobs(draw: st.DrawFn, job_id: str) -> Job:
    runs = draw(st.integers(1, 3))  # how many runs find the job (its folder rewritten before each)
    mode: Mode = draw(st.sampled_from(["timed", "untimed", "mixed"]))
    steps = draw(st.lists(st.integers(0, 5), min_size=1, max_size=9))  # repeats are likely
    n = len(steps)
    if mode == "timed":  # distinct timestamps, in any order: a resumed run may log older ones
        times: list[int | None] = list(draw(st.lists(st.integers(0, 500), min_size=n, max_size=n, unique=True)))
    elif mode == "untimed":
        times = [None] * n
    else:
        times = draw(st.lists(st.none() | st.integers(0, 500), min_size=n, max_size=n))
    forms = draw(st.lists(st.integers(0, 4), min_size=n, max_size=n))
    log = [Entry(next(UIDS), s, t, f) for s, t, f in zip(steps, times, forms, strict=True)]
    # run r finds the latest entries logged by then: a window ending at ends[r], overlapping the last
    ends = sorted(draw(st.lists(st.integers(0, n), min_size=runs - 1, max_size=runs - 1))) + [n]
    windows = draw(st.lists(st.integers(1, n), min_size=runs, max_size=runs))
    snapshots = tuple(tuple(log[max(0, end - size) : end]) for end, size in zip(ends, windows, strict=True))
    return Job(job_id, mode, snapshots)


@st.composite
def scenarios(draw: st.DrawFn) -> list[Job]:
    """1 to 6 independent jobs, each with its own number of runs (1 to 3)."""
    return [draw(jobs(f"job-{i}")) for i in range(draw(st.integers(1, 6)))]


def expected_winners(job: Job, order: list[int]) -> dict[int, Entry]:
    """The winning entry per step when the snapshots are ingested in ``order`` (timed or untimed jobs)."""
    winners: dict[int, Entry] = {}
    for r in order:
        for e in job.snapshots[r]:
            held = winners.get(e.step)
            if job.mode == "untimed" or held is None or (e.ts is not None and held.ts is not None and e.ts > held.ts):
                winners[e.step] = e
    return winners


def stored(lab: Lab) -> dict[str, dict[int, tuple[Any, ...]]]:
    """job -> step -> (ts, loss, samples, gpu memory); each (job, step) at most once."""
    rows = lab.query(
        "SELECT s.job_id, s.step, s.ts, s.loss, s.samples, g.memory_used_mb FROM steps s "
        "LEFT JOIN step_gpus g ON g.job_id = s.job_id AND g.step = s.step"
    )
    out: dict[str, dict[int, tuple[Any, ...]]] = {}
    for job_id, step, *values in rows:
        assert step not in out.get(job_id, {}), f"({job_id}, {step}) stored twice"
        out.setdefault(job_id, {})[step] = tuple(values)
    assert lab.query("SELECT count(*) FROM step_gpus") == [(len(rows),)]  # one GPU per entry
    return out


def check_general(job: Job, got: dict[int, tuple[Any, ...]]) -> None:
    """Every step of every snapshot is kept, with the values of one of its entries."""
    entries = [e for snapshot in job.snapshots for e in snapshot]
    assert set(got) == {e.step for e in entries}, job
    for step, row in got.items():
        assert row in {e.row() for e in entries if e.step == step}, (job, step, row)


EXAMPLES = count()


@settings(
    max_examples=examples(1, 6),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=scenarios())
def test_random_jobs_in_snapshot_windows(
    tmp_path_factory: pytest.TempPathFactory, blank_warehouse: Path, ingest_engine: Engine, scenario: list[Job]
) -> None:
    base = tmp_path_factory.mktemp(f"scenario{next(EXAMPLES)}")
    runs = {job.job_id: len(job.snapshots) for job in scenario}

    # 1. one folder per job, rewritten before each of its runs (a job with fewer runs than another
    #    is left as it is in the later runs: unchanged, not read again)
    seq = new_lab(base / "in order", blank_warehouse, ingest_engine)
    for r in range(max(runs.values())):
        found = [job for job in scenario if r < runs[job.job_id]]
        for job in found:
            path = seq.write_job(job.job_id, job.doc(r))
            if r == runs[job.job_id] - 1:  # its last: settled, or the later runs would read it again
                age(path)
        summary = seq.ingest()
        assert (summary.ingested, summary.failed, summary.pending) == (len(found), 0, 0)
        assert summary.unchanged == len(scenario) - len(found)
    got = stored(seq)
    for job in scenario:
        check_general(job, got.get(job.job_id, {}))
        if job.mode != "mixed":
            expected = {step: e.row() for step, e in expected_winners(job, list(range(runs[job.job_id]))).items()}
            assert got.get(job.job_id, {}) == expected, job
    jobs_rows = dict(seq.query("SELECT job_id, current_step FROM jobs"))
    assert jobs_rows == {job.job_id: job.doc(runs[job.job_id] - 1)["current_step"] for job in scenario}

    # 2. re-ingesting the files as they are now changes nothing
    facts = seq.facts()
    for job in scenario:
        touch(seq.root / job.job_id / "progress.json")
    summary = seq.ingest()
    assert (summary.ingested, summary.unchanged) == (len(scenario), 0)
    assert seq.facts() == facts

    # 3. every snapshot in its own folder, all in one run, the last snapshot's folder first: one
    #    folder per job id, so the first folder in path order keeps it and the others are conflicts
    #    that change nothing (tests/test_hostile_input.py)
    together = new_lab(base / "together", blank_warehouse, ingest_engine)
    for job in scenario:
        last = runs[job.job_id] - 1
        for r in range(last + 1):
            together.write_job(f"{last - r}/{job.job_id}", job.doc(r))
    summary = together.ingest()
    conflicts = sum(n - 1 for n in runs.values())
    assert (summary.ingested, summary.failed, summary.pending) == (len(scenario), conflicts, 0)
    assert all("a second folder can't claim it" in p["reason"] for p in summary.problems)
    got_together = stored(together)
    for job in scenario:
        last = runs[job.job_id] - 1
        assert set(got_together.get(job.job_id, {})) == {e.step for e in job.snapshots[last]}, job
        if job.mode != "mixed":
            expected = {step: e.row() for step, e in expected_winners(job, [last]).items()}
            assert got_together.get(job.job_id, {}) == expected, job
