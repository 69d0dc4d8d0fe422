"""Hypothesis-generated progress.json files: the ingester never raises, and says what became of every file.

Each example writes a few files (documents of the right shape with junk in any field, any JSON value,
deep nesting, raw bytes, cut-short texts) under a new root and ingests it into one warehouse shared by
all examples, so later examples also merge into what earlier ones stored. A sentinel job ingested
first must come through every example untouched.
"""

from __future__ import annotations

import json
import math
from itertools import count
from typing import Any

import pytest
from conftest import Engine, Lab
from depth import examples
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

SENTINEL = "sentinel-job"
NUL = "\x00"
OUTCOMES = {"ingested", "pending", "failed"}

# --- values -------------------------------------------------------------------------------------

INTERESTING_STRINGS = st.sampled_from(
    [
        "",
        "1.5",
        "-3",
        "NaN",
        "Infinity",
        "abc",
        "2026-03-01T12:00:00Z",
        "2026-03-01T12:00:00+05:30",
        "2026-13-45",
        "RUNNING",
        "completed",
        "unknown",
        "\u0000",
        "\\",
        '"',
        "💥",
        "Ünïcødé ✓ 漢字",
        "\ud800",  # a lone surrogate
        SENTINEL + "-not",
    ]
)
NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 100, 100.0001, 1e308, -1e308, 5e-324, 10**30, 1.7e19]),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=10), INTERESTING_STRINGS)
ANY_JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=10,
)


def field(plausible: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field's value: usually plausible, sometimes anything at all."""
    return st.one_of(plausible, plausible, ANY_JSON)


TIMESTAMPS = field(st.one_of(st.integers(0, 4_000_000_000), st.floats(-1e12, 1e12), INTERESTING_STRINGS))
STEPS = field(st.one_of(st.integers(-5, 50), st.integers(-(2**64), 2**64)))

GPU = st.fixed_dictionaries(
    {},
    optional={
        "index": field(st.integers(-2, 8)),
        "uuid": field(st.text(max_size=8)),
        "utilization_percent": field(NUMBERS),
        "memory_used_mb": field(NUMBERS),
        "memory_total_mb": field(NUMBERS),
        "temperature_c": field(NUMBERS),
        "power_w": field(NUMBERS),
    },
)
ENTRY_FIELDS = {
    "step": STEPS,
    "timestamp": TIMESTAMPS,
    "loss": field(NUMBERS),
    "eval_loss": field(NUMBERS),
    "learning_rate": field(NUMBERS),
    "samples_per_second": field(NUMBERS),
    "iteration_time": field(NUMBERS),
    "samples": field(NUMBERS),
}
ENTRY = st.fixed_dictionaries({}, optional={**ENTRY_FIELDS, "gpus": field(st.lists(field(GPU), max_size=3))})
CHECKPOINT = st.fixed_dictionaries(
    {}, optional={"step": STEPS, "path": field(st.text(max_size=8)), "saved_at": TIMESTAMPS, "eval_loss": NUMBERS}
)
CONFIG = st.fixed_dictionaries(
    {},
    optional={
        "model_name": field(st.text(max_size=8)),
        "batch_size": field(NUMBERS),
        "max_steps": STEPS,
        "save_steps": STEPS,
        "target_samples_per_second": field(NUMBERS),
        "gpu_count": field(st.integers(-1, 16)),
        "extra": ANY_JSON,
    },
)
DOC = st.fixed_dictionaries(
    {},
    optional={
        "job_id": field(st.text(min_size=1, max_size=8).filter(lambda s: s != SENTINEL)),
        "status": field(INTERESTING_STRINGS),
        "created_at": TIMESTAMPS,
        "started_at": TIMESTAMPS,
        "ended_at": TIMESTAMPS,
        "updated_at": TIMESTAMPS,
        "config": field(CONFIG),
        "current_step": STEPS,
        "total_steps": STEPS,
        "max_steps": STEPS,
        "history": field(st.lists(field(ENTRY), max_size=5)),
        "latest": field(ENTRY),
        "checkpoints": field(st.lists(field(CHECKPOINT), max_size=3)),
        # the legacy flat snapshot
        **ENTRY_FIELDS,
        "gpu_utilization": field(NUMBERS),
        "gpu_memory_mb": field(NUMBERS),
        "gpu_temperature": field(NUMBERS),
        "unexpected": ANY_JSON,
    },
)


def dump(value: Any, ascii_only: bool) -> bytes:
    text = json.dumps(value, allow_nan=True, ensure_ascii=ascii_only)
    return text.encode("utf-8", errors="surrogatepass")  # a lone surrogate becomes invalid UTF-8


DOC_FILE = st.builds(dump, DOC, st.booleans())
ANY_FILE = st.builds(dump, ANY_JSON, st.booleans())  # mostly not an object
DEEP_FILE = st.builds(
    lambda depth, inside, key: (
        f'{{"{key}": ' + "[" * depth + "]" * depth + "}" if inside else "[" * depth + "]" * depth
    ).encode(),
    st.integers(1, 5000),
    st.booleans(),
    st.sampled_from(["history", "latest", "config", "checkpoints", "step", "job_id"]),
)
CUT_FILE = st.builds(lambda data, cut: data[: len(data) * cut // 100], DOC_FILE, st.integers(0, 99))
RAW_FILE = st.one_of(
    st.binary(max_size=64),
    st.sampled_from(
        [
            b"\xef\xbb\xbf{}",
            b'{"step": 1, "step": 2}',
            b'{"history": [{"step": 1}]}{"history": [{"step": 2}]}',
            b"version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n",
            b'{"history": [{"step": 1, "loss": NaN}]}\x00',
            b'{"job_id": "\xff\xfe", "step": 1}',
        ]
    ),
)
FILE = st.one_of(DOC_FILE, DOC_FILE, DOC_FILE, ANY_FILE, DEEP_FILE, CUT_FILE, RAW_FILE)


# --- the test -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_lab(tmp_path_factory: pytest.TempPathFactory, module_ingest_engine: Engine) -> Lab:
    """One warehouse for every example; on PostgreSQL one database, published to by ``ingest --db``."""
    lab = Lab(tmp_path_factory.mktemp("fuzz"), module_ingest_engine)
    lab.write_job(SENTINEL, {"job_id": SENTINEL, "status": "running", "history": [{"step": 1, "loss": 0.5}]})
    assert lab.ingest().ingested == 1
    return lab


def sentinel_facts(lab: Lab) -> list[Any]:
    return [
        lab.query("SELECT status FROM jobs WHERE job_id = $j", {"j": SENTINEL}),
        lab.query("SELECT step, loss FROM steps WHERE job_id = $j ORDER BY step", {"j": SENTINEL}),
    ]


EXAMPLE = count()


HEALTH = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]
# found by the suite: an empty file (pending) beside one of two JSON values (failed) left nothing
# staged, and the batch failed on the missing staging table
EMPTY_BESIDE_TWO_VALUES = [b"", b'{"":[{"":0}]}{"":[{"":0}]}']
# found on PostgreSQL, whose text holds no NUL character (a job id, a config value): the publish failed
NUL_STRINGS = [dump({"job_id": "nul\u0000", "config": {"model_name": "m\u0000"}, "step": 1, "loss": 0.5}, True)]


# One to three groups of one to four files (the batch one example ingested before) in one run: an
# ingest's fixed cost is most of an example's, so half the examples read about as many files, and a
# lone group is still drawn (docs/testing.md, "Deep runs": 40 and 12 examples under the deep profile)
GROUP = st.lists(FILE, min_size=1, max_size=4)
GROUPS = st.tuples(GROUP, st.lists(GROUP, max_size=2)).map(lambda parts: parts[0] + sum(parts[1], []))


@pytest.mark.parametrize("module_ingest_engine", ["duckdb"], indirect=True)
@settings(max_examples=examples(3, 40), deadline=None, suppress_health_check=HEALTH)
@given(files=GROUPS)
@example(files=EMPTY_BESIDE_TWO_VALUES)
@example(files=NUL_STRINGS)
def test_any_progress_file_is_ingested_left_pending_or_failed(shared_lab: Lab, files: list[bytes]) -> None:
    check_any_files(shared_lab, files)


# the same on PostgreSQL (``ingest --db``: the stage's ingest, then a publish of whatever it stored), with
# fewer examples: a publish per example, in the module's one database
@pytest.mark.parametrize("module_ingest_engine", ["postgresql"], indirect=True)
@settings(max_examples=examples(2, 12), deadline=None, suppress_health_check=HEALTH)
@given(files=GROUPS)
@example(files=EMPTY_BESIDE_TWO_VALUES)
@example(files=NUL_STRINGS)
def test_any_progress_file_is_published_left_pending_or_failed(shared_lab: Lab, files: list[bytes]) -> None:
    check_any_files(shared_lab, files)


def check_any_files(lab: Lab, files: list[bytes]) -> None:
    """The files ingest without raising; each is in the ledger as ingested, pending or failed; what
    came in obeys the schema's rules; the sentinel job is untouched."""
    sentinel = sentinel_facts(lab)
    root = lab.root.parent / "examples" / f"ex{next(EXAMPLE)}"
    paths = []
    for i, data in enumerate(files):
        path = root / f"f{i}" / "progress.json"
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
        paths.append(str(path.resolve()))

    summary = lab.ingest(root)  # must not raise

    n = len(files)
    assert summary.files_seen == n
    assert summary.ingested + summary.pending + summary.failed == n
    assert summary.unchanged == 0
    assert len(summary.problems) == summary.pending + summary.failed
    ledger = {
        r[0]: r[1:]
        for r in lab.query(
            "SELECT path, outcome, rows, warning_count, warnings, error FROM ingest_files "
            "WHERE path IN (SELECT unnest(CAST($paths AS VARCHAR[])))",
            {"paths": [lab.ledger_path(p) for p in paths]},
        )
    }
    listed = paths
    if lab.engine.ingests:  # a job whose id holds NUL is not published, nor its files (ingest/postgres.py)
        of_job = "SELECT path, job_id FROM ingest_files WHERE path IN (SELECT unnest(CAST($paths AS VARCHAR[])))"
        held = [path for path, job_id in lab.own_query(of_job, {"paths": paths}) if NUL in (job_id or "")]
        listed = [p for p in paths if p not in held]
    assert sorted(ledger) == sorted(lab.ledger_path(p) for p in listed)
    for path, (outcome, rows, warning_count, warnings, error) in ledger.items():
        assert outcome in OUTCOMES, (path, outcome)
        event(f"outcome: {outcome}")  # shown by pytest --hypothesis-show-statistics
        assert rows >= 0 and warning_count >= 0
        if outcome == "ingested":
            assert error is None
            assert isinstance(json.loads(warnings), list)
            assert len(json.loads(warnings)) == min(warning_count, 50)
        else:
            assert isinstance(error, str) and error, (path, outcome)
            assert rows == 0

    # whatever came in obeys the schema's rules
    assert lab.query(
        "SELECT count(*) FROM (SELECT 1 FROM steps GROUP BY job_id, step HAVING count(*) > 1) AS twice"
    ) == [(0,)]
    assert lab.query("SELECT count(*) FROM steps WHERE step < 0") == [(0,)]
    readings = lab.query("SELECT utilization_percent, memory_used_mb, power_w FROM step_gpus")
    for util, memory, power in readings:
        assert util is None or not math.isfinite(util) or 0 <= util <= 100, util
        assert memory is None or not math.isfinite(memory) or memory >= 0, memory
        assert power is None or not math.isfinite(power) or power >= 0, power
    assert lab.query(
        "SELECT count(*) FROM jobs WHERE status NOT IN "
        "('queued', 'running', 'paused', 'completed', 'failed', 'cancelled', 'unknown')"
    ) == [(0,)]

    # nothing already stored was lost or changed
    assert sentinel_facts(lab) == sentinel
