"""LLaMA-Factory trainer_log.jsonl, Lightning CSVLogger metrics.csv and MLflow file stores (issue 16).

Every real file of these formats is read and checked against what an independent reader of the
same file (``json``, ``csv``, ``str.split`` here) finds: points per metric and their values,
a (metric, step) written twice keeping the later line.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import DUCKDB_ONLY_INGEST, REALDATA, Engine, Lab
from depth import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runlytics.ingest import ledger
from runlytics.ingest.formats import lightning_csv, llamafactory, mlflow_store
from runlytics.ingest.formats.text_logs import Chunk

TOOL_LOGS2 = REALDATA / "tool_logs2"
LLAMAFACTORY_FILES = sorted((TOOL_LOGS2 / "llamafactory").rglob("trainer_log.jsonl")) + [
    REALDATA / "tool_logs" / "llamafactory-mistral-trainer_log.jsonl"
]
LIGHTNING_ROOT = TOOL_LOGS2 / "lightning_csv" / "slm-resumed-and-killed"
LIGHTNING_FILES = sorted(LIGHTNING_ROOT.glob("lightning_logs/version_*/metrics.csv"))
MLRUNS = TOOL_LOGS2 / "mlflow" / "lightning-hydra-multirun" / "logs" / "mlruns"
MLFLOW_RUNS = sorted(p.parent for p in MLRUNS.glob("*/*/meta.yaml"))
BIRD_RUN = MLRUNS / "459562201803247328" / "1f9f0ec610b142ab8eff3eb836994def"

Expected = dict[tuple[str, int], float]


# --- independent readers: what each file holds, read without the code under test ---------------


def expected_llamafactory(path: Path) -> tuple[Expected, Counter[str]]:
    """(name, step) -> the last value written, and the lines per name, with json and float(); a
    line whose total_tokens is 0 (tokens not counted) has no throughput or total_tokens."""
    values: Expected = {}
    lines: Counter[str] = Counter()
    for text in path.read_text().splitlines():
        doc = json.loads(text)
        for key, value in doc.items():
            if key in ("current_steps", "total_steps", "elapsed_time", "remaining_time"):
                continue
            if key in ("throughput", "total_tokens") and doc.get("total_tokens") == 0:
                continue
            values[(key, doc["current_steps"])] = float(value)  # throughput "0.00" too
            lines[key] += 1
    return values, lines


def expected_lightning(path: Path) -> tuple[Expected, Counter[str]]:
    values: Expected = {}
    cells: Counter[str] = Counter()
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if key != "step" and value != "":
                    values[(key, int(row["step"]))] = float(value)
                    cells[key] += 1
    return values, cells


def expected_mlflow_metric(path: Path) -> tuple[Expected, int, list[int]]:
    values: Expected = {}
    times = []
    lines = path.read_text().splitlines()
    for line in lines:
        ms, value, step = line.split(" ")
        values[(path.name, int(step))] = float(value)
        times.append(int(ms))
    return values, len(lines), times


def last_values(chunk: Chunk) -> Expected:
    """(name, step) -> value of the point written last (highest order), from a parser's points."""
    kept: dict[tuple[str, int], tuple[int, float]] = {}
    for p in chunk.points:
        if (p.name, p.step) not in kept or kept[(p.name, p.step)][0] <= p.order:
            kept[(p.name, p.step)] = (p.order, p.value)
    return {key: value for key, (_, value) in kept.items()}


def same(a: Expected, b: Expected) -> bool:
    return a.keys() == b.keys() and all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)


# --- the parsers on the real files ---------------------------------------------------------------


# the two-GPU log holds a resumed run: line 1047 (step 5010, 0:02:38) follows step 5220 at 22:08:06
RESUME_WARNINGS = {
    "two-gpu-duplicated-lines": [
        "line 1047: elapsed_time 0:02:38 falls back from 22:08:06 (a resumed run): the points of the lines"
        " before it have no time (when that run ran is unknown)"
    ]
}


@pytest.mark.parametrize("path", LLAMAFACTORY_FILES, ids=lambda p: p.parent.name)
def test_llamafactory_real_files(path: Path) -> None:
    chunk = llamafactory.parse(path.read_bytes())
    values, lines = expected_llamafactory(path)
    assert chunk.warnings == RESUME_WARNINGS.get(path.parent.name, [])
    assert chunk.consumed == path.stat().st_size
    assert Counter(p.name for p in chunk.points) == lines
    assert same(last_values(chunk), values)


def test_llamafactory_shapes() -> None:
    qwen, two_gpu, mistral = (llamafactory.parse(p.read_bytes()) for p in LLAMAFACTORY_FILES)
    # 13 eval lines at the step of a train line; the closing line repeats 6750 without a loss
    assert sum(p.name == "eval_loss" for p in qwen.points) == 13
    assert last_values(qwen)[("eval_loss", 500)] == 1.6410622596740723
    assert (qwen.info.current_step, qwen.info.total_steps, qwen.info.status) == (6750, 6750, "completed")
    # two ranks log step 10 twice: 0.8548 then 0.8547, the later line wins
    assert last_values(two_gpu)[("loss", 10)] == 0.8547
    assert (two_gpu.info.current_step, two_gpu.info.total_steps, two_gpu.info.status) == (6565, 6566, None)
    # learning_rate spelled out in this version; its throughput "0.00" and total_tokens 0 on every
    # line say tokens were not counted: no points (session 17)
    assert "learning_rate" in {p.name for p in mistral.points}
    assert not {p.name for p in mistral.points} & {"throughput", "total_tokens"}
    assert llamafactory.duration_seconds("1 day, 0:08:23") == 86400 + 8 * 60 + 23
    assert llamafactory.duration_seconds("6:48:06") == 6 * 3600 + 48 * 60 + 6
    assert llamafactory.duration_seconds("10m 52s") is None


def test_llamafactory_times_from_start() -> None:
    written = datetime(2025, 1, 2, 9, 52, 11)  # the last line (elapsed 6:48:06) was written then
    chunk = llamafactory.parse(LLAMAFACTORY_FILES[0].read_bytes(), written_at=written)
    first = next(p for p in chunk.points if p.name == "loss")
    assert chunk.info.started_at == datetime(2025, 1, 2, 3, 4, 5)  # 9:52:11 less 6:48:06
    assert first.ts == datetime(2025, 1, 2, 3, 4, 37)  # elapsed 0:00:32
    assert chunk.info.ended_at == written  # completed, elapsed 6:48:06 on the last line
    # the two-GPU run stops one step short of total_steps: no status, so its last line's time is no end
    assert llamafactory.parse(LLAMAFACTORY_FILES[1].read_bytes(), written_at=written).info.ended_at is None


def test_llamafactory_bad_lines_named() -> None:
    data = (
        b'{"current_steps": 1, "loss": 2.0, "note": "x", "flag": true}\n'
        b"not json\n"
        b"[1, 2]\n"
        b'{"loss": 1.0}\n'
        b'{"current_steps": -3, "loss": 1.0}\n'
        b'{"current_steps": 2, "loss": NaN, "throughput": " 12.5 "}\n'
    )
    data += b"[" * 100_000 + b"]" * 100_000 + b"\n"
    data += b'{"current_steps": 1e30, "loss": 1.0, "elapsed_time": "99999999 days, 0:00:00"}\n'
    chunk = llamafactory.parse(data, written_at=datetime(2025, 1, 1))
    assert [w.split(":")[0] for w in chunk.warnings] == [
        "line 1", "line 1", "line 2", "line 3", "line 4", "line 5", "line 6", "line 7", "line 8"
    ]  # fmt: skip
    assert "note 'x' is not a number" in chunk.warnings[0]
    # text is a number only as LLaMA-Factory's "{:.2f}" prints one: no spaces around (session 17)
    assert "line 6: throughput ' 12.5 ' is not a number, dropped" in chunk.warnings
    values = last_values(chunk)
    assert values[("loss", 1)] == 2.0 and math.isnan(values[("loss", 2)]) and ("throughput", 2) not in values


@pytest.mark.parametrize("path", LIGHTNING_FILES, ids=lambda p: p.parent.name)
def test_lightning_real_files(path: Path) -> None:
    chunk, header = lightning_csv.parse(path.read_bytes())
    values, cells = expected_lightning(path)
    assert chunk.warnings == []
    assert chunk.consumed == path.stat().st_size
    assert header is not None and "step" in header
    assert Counter(p.name for p in chunk.points) == cells
    assert same(last_values(chunk), values)


def test_lightning_shapes() -> None:
    by_version = {p.parent.name: lightning_csv.parse(p.read_bytes())[0] for p in LIGHTNING_FILES}
    v0, v5 = last_values(by_version["version_0"]), last_values(by_version["version_5"])
    assert by_version["version_0"].info.current_step == 140739
    assert v0[("val_loss", 140739)] == 3.570486068725586 and v0[("epoch", 140739)] == 9
    # version_5 resumes version_0 at epoch 10, step 140749, and stops after epoch 13
    assert min(s for _, s in v5) == 140749 and v5[("epoch", 197035)] == 13
    assert v5[("train_loss_epoch", 197035)] == 3.7186241149902344
    # the runs killed mid-epoch have step rows only
    assert {n for n, _ in last_values(by_version["version_12"])} == {
        "epoch",
        "train_loss_step",
        "train_perplexity_step",
    }


def test_lightning_header_again_and_bad_rows() -> None:
    data = b"epoch,step,loss\r\n0,10,1.5\r\n0,,1.4\r\n0,20,abc\r\n1,30\r\nepoch,step,loss,val_loss\r\n1,40,1.2,1.3\r\n"
    chunk, header = lightning_csv.parse(data)
    assert header == ["epoch", "step", "loss", "val_loss"]
    assert last_values(chunk) == {
        ("epoch", 10): 0, ("loss", 10): 1.5, ("epoch", 20): 0,
        ("epoch", 40): 1, ("loss", 40): 1.2, ("val_loss", 40): 1.3,
    }  # fmt: skip
    assert [w.split(":")[0] for w in chunk.warnings] == ["line 3", "line 4", "line 5"]


def test_hparams_python_tags_read_as_plain_data() -> None:
    tagged = REALDATA / "tool_logs2/tfevents/lightning-two-writers/lightning_logs/version_0/hparams.yaml"
    config, warnings = lightning_csv.load_hparams(tagged.read_bytes())
    assert warnings == [] and config is not None
    assert config["loss"]["__tag__"] == "!!python/object:neuralforecast.losses.pytorch.MAE"
    assert config["loss"]["_backward_hooks"] == {} and config["learning_rate"] == 0.0001
    json.dumps(config, allow_nan=False)  # JSON-ready: sets, times and NaN turned into lists and text
    hostile = b"a: !!python/object/apply:os.system ['touch /tmp/pwned']\nb: !!python/name:os.system\nc: !!set {x}\n"
    config, _ = lightning_csv.load_hparams(hostile)
    assert config == {"a": {"__tag__": "!!python/object/apply:os.system", "args": ["touch /tmp/pwned"]},
                      "b": "!!python/name:os.system", "c": ["x"]}  # fmt: skip
    assert not Path("/tmp/pwned").exists()
    for path in LIGHTNING_ROOT.glob("lightning_logs/version_*/hparams.yaml"):
        config, warnings = lightning_csv.load_hparams(path.read_bytes())
        assert warnings == [] and isinstance(config, dict)
    assert lightning_csv.load_hparams(b"a: [1")[0] is None
    # aliases that expand to 10^9 values, a list holding itself, nesting deeper than the parser's stack
    bomb = b"a: &a [x,x,x,x,x,x,x,x,x,x]\n" + b"".join(
        f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n".encode() for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    for hostile in (bomb, b"a: &a [1, *a]\n", b"a: " + b"[" * 50_000 + b"]" * 50_000):
        config, warnings = lightning_csv.load_hparams(hostile)
        assert config is None and len(warnings) == 1
    assert lightning_csv.load_hparams(b"- 1\n")[1] == ["not a YAML mapping but list, config not read"]


@pytest.mark.parametrize("run", MLFLOW_RUNS, ids=lambda p: p.name[:8])
def test_mlflow_real_runs(run: Path) -> None:
    metrics = mlflow_store.named_files(run / "metrics")
    assert metrics  # every run logged metrics
    for name, path in metrics.items():
        chunk = mlflow_store.parse_metric(path.read_bytes(), name)
        values, lines, times = expected_mlflow_metric(path)
        assert chunk.warnings == [] and len(chunk.points) == lines
        assert same(last_values(chunk), {(name, step): v for (_, step), v in values.items()})
        assert [p.ts for p in chunk.points] == [
            datetime.fromtimestamp(ms / 1000, UTC).replace(tzinfo=None) for ms in times
        ]
    meta, warnings = mlflow_store.load_meta((run / "meta.yaml").read_bytes())
    experiment, _ = mlflow_store.load_meta((run.parent / "meta.yaml").read_bytes())
    params, tags = (
        {n: p.read_text() for n, p in mlflow_store.named_files(run / k).items()} for k in ("params", "tags")
    )
    info, warnings = mlflow_store.run_info(meta, params, tags, experiment)
    assert warnings == [] and info.status == "completed"  # status: 3 in every run here
    assert info.config is not None
    assert info.config["params"] == {p.name: p.read_text() for p in (run / "params").iterdir()}
    assert info.config["tags"]["mlflow.runName"] == (run / "tags" / "mlflow.runName").read_text()
    assert info.config["mlflow"]["experiment_name"] in ("bird_classification", "dogbreed_classification")
    assert info.started_at is not None and info.ended_at is not None and info.started_at < info.ended_at


def test_mlflow_metric_names_keep_slashes() -> None:
    names = set(mlflow_store.named_files(MLFLOW_RUNS[0] / "metrics"))
    assert {"train/loss", "val/acc", "test/f1", "epoch"} <= names


@pytest.mark.parametrize(
    ("raw", "status"),
    [(1, "running"), (2, "queued"), (3, "completed"), (4, "failed"), (5, "cancelled"), ("RUNNING", "running"),
     ("FINISHED", "completed"), ("FAILED", "failed"), ("KILLED", "cancelled"), ("killed", "cancelled"),
     (9, "unknown"), ("DONE", "unknown")],
)  # fmt: skip
def test_mlflow_status(raw: object, status: str) -> None:
    info, warnings = mlflow_store.run_info({"status": raw}, {}, {}, None)
    assert info.status == status
    assert bool(warnings) == (status == "unknown")


def test_mlflow_run_without_meta_and_bad_lines() -> None:
    info, warnings = mlflow_store.run_info(None, {"model_name": "gpt2"}, {}, {"name": "e"})
    assert (info.status, info.model_name, warnings) == ("unknown", "gpt2", ["no readable meta.yaml: status unknown"])
    chunk = mlflow_store.parse_metric(
        b"1700000000000 0.5 3\n1700000000001 nan\nx y z\n1 2 3 4\n1700000000002 0.25 3\n", "m"
    )
    assert last_values(chunk)[("m", 3)] == 0.25 and math.isnan(last_values(chunk)[("m", 0)])  # no step: step 0
    assert [w.split(":")[0] for w in chunk.warnings] == ["line 3", "line 4"]


# --- cut anywhere: a partial last line waits, appended lines are picked up, nothing twice ---------


def _two_reads(parse_from: object, data: bytes, cut: int) -> tuple[Chunk, Chunk]:
    first = parse_from(data[:cut], 0, 1)  # type: ignore[operator]
    second = parse_from(data[first.consumed :], first.consumed, 1 + first.lines)  # type: ignore[operator]
    return first, second


def _check_cut(parse_from: object, data: bytes, cut: int) -> None:
    whole = parse_from(data, 0, 1)  # type: ignore[operator]
    first, second = _two_reads(parse_from, data, cut)
    assert first.consumed <= cut and (first.consumed == 0 or data[first.consumed - 1 : first.consumed] == b"\n")
    assert data[first.consumed : cut].count(b"\n") == 0  # only the partial line was left
    assert first.points + second.points == whole.points  # same points, same orders: nothing lost or doubled
    assert first.lines + second.lines == whole.lines
    assert parse_from(b"", first.consumed, 1).points == []  # nothing new: nothing read


CUT_FILES = [
    LLAMAFACTORY_FILES[1],
    LIGHTNING_FILES[0],
    next(iter(mlflow_store.named_files(MLFLOW_RUNS[0] / "metrics").values())),
]


def _lightning_from(header_source: bytes) -> object:
    def parse(data: bytes, offset: int, first_line: int) -> Chunk:
        header = None if offset == 0 else lightning_csv.parse(header_source[: header_source.index(b"\n") + 1])[1]
        return lightning_csv.parse(data, offset, first_line, header)[0]

    return parse


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_cuts_llamafactory(data: st.DataObject) -> None:
    raw = LLAMAFACTORY_FILES[1].read_bytes()[:20_000]
    _check_cut(llamafactory.parse, raw, data.draw(st.integers(0, len(raw))))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_cuts_lightning(data: st.DataObject) -> None:
    raw = LIGHTNING_FILES[0].read_bytes()[:20_000]
    _check_cut(_lightning_from(raw), raw, data.draw(st.integers(0, len(raw))))


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_cuts_mlflow(data: st.DataObject) -> None:
    raw = (MLFLOW_RUNS[0] / "metrics" / "epoch").read_bytes()
    _check_cut(lambda d, o, f: mlflow_store.parse_metric(d, "epoch", o, f), raw, data.draw(st.integers(0, len(raw))))


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {"current_steps": st.integers(0, 50), "loss": st.floats(allow_nan=False), "lr": st.floats(0, 1)},
            optional={"eval_loss": st.floats(allow_nan=False), "elapsed_time": st.just("0:00:01")},
        ),
        max_size=30,
    ),
    st.integers(0, 5000),
)
def test_llamafactory_generated_lines(entries: list[dict[str, object]], cut: int) -> None:
    data = b"".join(json.dumps(e).encode() + b"\n" for e in entries)
    expected: Expected = {}
    for e in entries:
        for key in ("loss", "lr", "eval_loss"):
            if key in e:
                expected[(key, e["current_steps"])] = float(e[key])  # type: ignore[arg-type]
    assert same(last_values(llamafactory.parse(data)), expected)
    _check_cut(llamafactory.parse, data, min(cut, len(data)))


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 40), st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False))),
        max_size=30,
    ),
    st.integers(0, 3000),
)
def test_lightning_generated_rows(rows: list[tuple[int, float | None]], cut: int) -> None:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["epoch", "loss", "step"])
    for step, loss in rows:
        writer.writerow([0, "" if loss is None else repr(loss), step])
    data = out.getvalue().encode()
    expected: Expected = {}
    for step, loss in rows:
        expected[("epoch", step)] = 0
        if loss is not None:
            expected[("loss", step)] = loss
    assert same(last_values(lightning_csv.parse(data)[0]), expected)
    _check_cut(_lightning_from(data), data, min(cut, len(data)))


# --- ingest: the real files into metric_points, jobs and the analytics --------------------------

# every stored point, in an order both engines give
VALUES = "SELECT job_id, name, step, ts, value, source FROM metric_values ORDER BY job_id, name, step, source, ts"


@pytest.fixture
def lab(tmp_path: Path, ingest_engine: Engine) -> Lab:
    """A lab ingesting into its file, or publishing to PostgreSQL (``ingest --db``)."""
    return Lab(tmp_path, ingest_engine)


def stored_points(lab: Lab, job_id: str) -> Expected:
    rows = lab.query("SELECT name, step, value FROM metric_points WHERE job_id = $job", {"job": job_id})
    return {(name, step): value for name, step, value in rows}


def names_count(values: Expected) -> Counter[str]:
    return Counter(name for name, _ in values)


def test_real_files_ingest(lab: Lab, tmp_path: Path) -> None:
    mistral = tmp_path / "llama" / "mistral-translator"
    mistral.mkdir(parents=True)
    (mistral / "trainer_log.jsonl").write_bytes(LLAMAFACTORY_FILES[2].read_bytes())
    roots = [LIGHTNING_ROOT, MLRUNS.parent, TOOL_LOGS2 / "llamafactory", tmp_path / "llama"]
    summary = lab.ingest(*roots)
    # one warning: the two-GPU log's resumed run (line 1047), whose earlier lines have no time
    assert (summary.failed, summary.pending, summary.warnings) == (0, 0, 1)
    expected: dict[str, Expected] = {}
    for path in LIGHTNING_FILES:
        expected[f"lightning_logs/{path.parent.name}"] = expected_lightning(path)[0]
    for run in MLFLOW_RUNS:
        values: Expected = {}
        for name, path in mlflow_store.named_files(run / "metrics").items():
            values |= {(name, step): v for (_, step), v in expected_mlflow_metric(path)[0].items()}
        expected[f"mlruns/{run.parent.name}/{run.name}"] = values
    for path in LLAMAFACTORY_FILES[:2]:
        expected[path.parent.name] = expected_llamafactory(path)[0]
    expected["mistral-translator"] = expected_llamafactory(LLAMAFACTORY_FILES[2])[0]
    # the jobs are these runs, named by their folders: not the stale .ipynb_checkpoints copy, not
    # the version folders without a metrics.csv, not the experiment without runs
    assert {job for (job,) in lab.query("SELECT job_id FROM jobs")} == set(expected)
    total = 0
    for job_id, values in expected.items():
        stored = stored_points(lab, job_id)
        assert names_count(stored) == names_count(values), job_id
        assert same(stored, values), job_id
        total += len(values)
    assert lab.query("SELECT count(*) FROM metric_points")[0][0] == total
    # a metric logged twice per step (MLflow's epoch: 21 lines, 11 steps) keeps the later line
    run = BIRD_RUN
    assert len((run / "metrics" / "epoch").read_text().splitlines()) == 21
    assert sum(name == "epoch" for name, _ in expected[f"mlruns/{run.parent.name}/{run.name}"]) == 11
    # a second run reads nothing and changes nothing
    before = lab.query(VALUES), lab.facts()
    again = lab.ingest(*roots)
    assert (again.ingested, again.rows) == (0, 0)
    assert (lab.query(VALUES), lab.facts()) == before


def test_real_runs_jobs_rows(lab: Lab) -> None:
    lab.ingest(LIGHTNING_ROOT, MLRUNS.parent)
    for run in MLFLOW_RUNS:
        job_id = f"mlruns/{run.parent.name}/{run.name}"
        status, started, ended, model, config = lab.query(
            "SELECT status, started_at, ended_at, model_name, config FROM jobs WHERE job_id = $j", {"j": job_id}
        )[0]
        meta = dict(line.split(": ", 1) for line in (run / "meta.yaml").read_text().splitlines() if ": " in line)
        assert status == {"3": "completed"}[meta["status"]]
        assert started == datetime.fromtimestamp(int(meta["start_time"]) / 1000, UTC).replace(tzinfo=None)
        assert ended == datetime.fromtimestamp(int(meta["end_time"]) / 1000, UTC).replace(tzinfo=None)
        config = json.loads(config)
        assert config["params"] == {p.name: p.read_text() for p in (run / "params").iterdir()}
        assert config["tags"] == {p.name: p.read_text() for p in (run / "tags").iterdir()}
        assert model == config["params"]["base_model"]
        experiment = (run.parent / "meta.yaml").read_text().split("name: ")[1].split("\n")[0]
        assert config["mlflow"]["experiment_name"] == experiment
    config = lab.query("SELECT config FROM jobs WHERE job_id = 'lightning_logs/version_0'")[0][0]
    hparams_text = (LIGHTNING_ROOT / "lightning_logs/version_0/hparams.yaml").read_text()
    hparams = dict(line.split(": ") for line in hparams_text.splitlines())
    assert json.loads(config) == {k: json.loads(v) for k, v in hparams.items()}  # plain YAML scalars, read as JSON


def test_analytics_of_tool_runs(lab: Lab, tmp_path: Path) -> None:
    lab.ingest(LIGHTNING_ROOT, MLRUNS.parent, TOOL_LOGS2 / "llamafactory")
    qwen = LLAMAFACTORY_FILES[0]
    lines = [json.loads(t) for t in qwen.read_text().splitlines()]
    losses = [e["loss"] for e in lines if "loss" in e]
    evals = [e["eval_loss"] for e in lines if "eval_loss" in e]
    a = lab.analytics(qwen.parent.name)
    assert a is not None and a["status"] == "completed"
    assert (a["losses"]["initial_loss"], a["losses"]["final_loss"]) == (losses[0], losses[-1])
    assert (a["losses"]["final_eval_loss"], a["losses"]["best_eval_loss"]) == (evals[-1], min(evals))
    lrs = lab.query(
        "SELECT step, learning_rate FROM step_facts WHERE job_id = $j AND learning_rate IS NOT NULL ORDER BY step",
        {"j": qwen.parent.name},
    )
    assert lrs == sorted({e["current_steps"]: e["lr"] for e in lines if "lr" in e}.items())
    v0 = LIGHTNING_ROOT / "lightning_logs/version_0/metrics.csv"
    with v0.open(newline="") as f:
        rows = list(csv.DictReader(f))
    step_losses = [float(r["train_loss_step"]) for r in rows if r["train_loss_step"]]
    val = [float(r["val_loss"]) for r in rows if r["val_loss"]]
    a = lab.analytics("lightning_logs/version_0")
    assert a is not None
    assert a["losses"]["initial_loss"] == step_losses[0]
    assert (a["losses"]["final_eval_loss"], a["losses"]["best_eval_loss"]) == (val[-1], min(val))
    run = BIRD_RUN
    train = [float(t.split()[1]) for t in (run / "metrics/train/loss").read_text().splitlines()]
    a = lab.analytics(f"mlruns/{run.parent.name}/{run.name}")
    assert a is not None and (a["losses"]["initial_loss"], a["losses"]["final_loss"]) == (train[0], train[-1])
    # a Lightning LearningRateMonitor column feeds the learning rate
    folder = tmp_path / "more" / "lightning_logs" / "version_99"
    folder.mkdir(parents=True)
    (folder / "metrics.csv").write_text("epoch,lr-Adam,step,train_loss\n0,0.001,9,2.5\n0,0.0005,19,2.25\n")
    assert lab.ingest(tmp_path / "more").failed == 0
    rows = lab.query(
        "SELECT step, loss, learning_rate FROM step_facts WHERE job_id = 'lightning_logs/version_99' "
        "AND learning_rate IS NOT NULL ORDER BY step"
    )
    assert rows == [(9, 2.5, 0.001), (19, 2.25, 0.0005)]


def test_lightning_loss_series_is_one_metric(lab: Lab) -> None:
    """A run that logs both a step loss and an epoch loss: the analytics' loss is the step loss at every step."""
    lab.ingest(LIGHTNING_ROOT)
    with (LIGHTNING_ROOT / "lightning_logs/version_0/metrics.csv").open(newline="") as f:
        step_losses = [(int(r["step"]), float(r["train_loss_step"])) for r in csv.DictReader(f) if r["train_loss_step"]]
    stored = lab.query(
        "SELECT step, loss FROM step_facts WHERE job_id = 'lightning_logs/version_0' AND loss IS NOT NULL"
    )
    assert sorted(stored) == step_losses
    a = lab.analytics("lightning_logs/version_0")
    assert a is not None and a["losses"]["final_loss"] == step_losses[-1][1]


# --- ingest: appends, cuts, failures ------------------------------------------------------------

CUTS = (0.0, 0.31, 0.5, 0.77, 1.0)  # where the first read stops, as a share of the file


def _cut(data: bytes, share: float) -> int:
    """A cut inside a line (when there is one) near ``share`` of the file."""
    at = int(len(data) * share)
    return at + 3 if 0 < at < len(data) - 3 and data[at + 2 : at + 3] != b"\n" else at


def _prefix_of_lines(data: bytes, cut: int) -> bytes:
    return data[: data.rfind(b"\n", 0, cut) + 1]


def _written_at(path: Path, seconds: float) -> None:
    os.utime(path, (seconds, seconds))


FIRST_LOSS_TIME = "SELECT ts FROM metric_points WHERE job_id = $j AND name = 'loss' AND step = 10"
WARNINGS_OF = "SELECT warnings FROM ingest_files WHERE path = $p"


def test_llamafactory_appends(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    """The two-GPU log, read in two runs cut anywhere. It holds a resumed run (line 1047 falls back
    to 0:02:38): here the first run started at t0 and the resumed one at t1, a day later; the file
    is written last when its last line is (at its run's start plus the highest elapsed_time).
    However the reads fell, the warehouse ends as one read of the whole file leaves it: a read
    that finds the resume reads the file whole again, and the first run's points lose the times
    an earlier read gave them from its own modification time, and the job its start."""
    # the logs are dated when their last lines were written (long ago), yet cut mid-line by a
    # writer still at them: none has settled (a settled log's last line is read as its last)
    monkeypatch.setattr(ledger, "SETTLED_SECONDS", math.inf)
    data = LLAMAFACTORY_FILES[1].read_bytes()
    t0, t1 = 1_700_000_000, 1_700_086_400
    resume = sum(len(line) for line in data.splitlines(keepends=True)[:1046])  # where line 1047 starts

    def written_at(prefix: bytes) -> float:
        lines = prefix.decode().splitlines()
        elapsed = [llamafactory.duration_seconds(json.loads(t)["elapsed_time"]) or 0.0 for t in lines]
        if len(prefix) > resume:
            return t1 + max(elapsed[1046:])
        return t0 + max(elapsed)

    for i, share in enumerate(CUTS):
        folder = lab.root / f"run{i}"
        folder.mkdir()
        log = folder / "trainer_log.jsonl"
        cut = _cut(data, share)
        log.write_bytes(data[:cut])
        if _prefix_of_lines(data, cut):
            _written_at(log, written_at(_prefix_of_lines(data, cut)))
    lab.ingest()
    for i, share in enumerate(CUTS):
        cut = _cut(data, share)
        partial = lab.root / "partial.jsonl"
        partial.write_bytes(_prefix_of_lines(data, cut))
        assert same(stored_points(lab, f"run{i}"), expected_llamafactory(partial)[0]), share
        if 0 < cut <= resume:  # the first run alone so far: timed from t0
            assert lab.query(FIRST_LOSS_TIME, {"j": f"run{i}"}) == [(utc(t0 + 133),)], share  # the later line: 0:02:13
    for i, share in enumerate(CUTS):
        log = lab.root / f"run{i}" / "trainer_log.jsonl"
        with log.open("ab") as f:
            f.write(data[_cut(data, share) :])
        _written_at(log, t1 + 6 * 3600 + 36 * 60 + 26)  # the last line: 6:36:26
    lab.ingest()
    whole, _ = expected_llamafactory(LLAMAFACTORY_FILES[1])
    points = "SELECT name, step, ts, value FROM metric_points WHERE job_id = $j ORDER BY name, step"
    job = "SELECT status, started_at, ended_at, updated_at, current_step, total_steps FROM jobs WHERE job_id = $j"
    one_read = lab.query(points, {"j": "run4"}), lab.query(job, {"j": "run4"})  # read whole at once
    # step 10 (first run) has no time; step 6560 is the resumed run's start (t1) plus 6:35:21
    assert lab.query(FIRST_LOSS_TIME, {"j": "run4"}) == [(None,)]
    last = "SELECT ts FROM metric_points WHERE job_id = $j AND name = 'loss' AND step = 6560"
    assert lab.query(last, {"j": "run4"}) == [(utc(t1 + 23721),)]
    assert one_read[1] == [("unknown", None, None, utc(t1 + 23786), 6565, 6566)]
    for i, share in enumerate(CUTS):
        assert same(stored_points(lab, f"run{i}"), whole)
        assert (lab.query(points, {"j": f"run{i}"}), lab.query(job, {"j": f"run{i}"})) == one_read, share
        (warnings,) = lab.query(WARNINGS_OF, {"p": lab.ledger_path(lab.root / f"run{i}" / "trainer_log.jsonl")})[0]
        assert "line 1047: elapsed_time 0:02:38 falls back from 22:08:06" in str(warnings), share
    before = lab.query(VALUES), lab.facts()
    assert lab.ingest().ingested == 0
    assert (lab.query(VALUES), lab.facts()) == before


def utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None)


def test_lightning_appends(lab: Lab) -> None:
    data = (LIGHTNING_ROOT / "lightning_logs/version_5/metrics.csv").read_bytes()
    for i, share in enumerate(CUTS):
        folder = lab.root / f"v{i}"
        folder.mkdir()
        (folder / "metrics.csv").write_bytes(data[: _cut(data, share)])
    lab.ingest()
    for i, share in enumerate(CUTS):
        partial = lab.root / "partial.csv"
        partial.write_bytes(_prefix_of_lines(data, _cut(data, share)))
        assert same(stored_points(lab, f"v{i}"), expected_lightning(partial)[0]), share
    for i, share in enumerate(CUTS):
        with (lab.root / f"v{i}" / "metrics.csv").open("ab") as f:
            f.write(data[_cut(data, share) :])
    lab.ingest()
    whole, _ = expected_lightning(LIGHTNING_ROOT / "lightning_logs/version_5/metrics.csv")
    for i, _share in enumerate(CUTS):
        assert same(stored_points(lab, f"v{i}"), whole)
    # Lightning rewrites the file with a wider header when a new key is logged: read whole again
    csv_path = lab.root / "v0" / "metrics.csv"
    with csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, ["lr-Adam", *rows[0].keys()], lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(rows + [{"epoch": "14", "step": "197100", "lr-Adam": "0.0001"}])
    lab.ingest()
    assert same(stored_points(lab, "v0"), whole | {("epoch", 197100): 14, ("lr-Adam", 197100): 0.0001})


def test_mlflow_appends_and_status(lab: Lab) -> None:
    store = lab.root / "mlruns"
    shutil.copytree(MLRUNS / "459562201803247328", store / "459562201803247328")
    run = store / "459562201803247328" / BIRD_RUN.name
    for other in (run.parent).iterdir():
        if other.is_dir() and other != run:
            shutil.rmtree(other)
    loss = run / "metrics" / "train" / "loss"
    data = loss.read_bytes()
    loss.write_bytes(data[: _cut(data, 0.5)])
    meta = run / "meta.yaml"
    finished = meta.read_text()
    meta.write_text(finished.replace("status: 3", "status: 1").replace("end_time: 1729487099849", "end_time: null"))
    job = f"mlruns/459562201803247328/{run.name}"
    lab.ingest()
    partial = lab.root / "loss"
    partial.write_bytes(_prefix_of_lines(data, _cut(data, 0.5)))
    assert {k: v for k, v in stored_points(lab, job).items() if k[0] == "train/loss"} == {
        ("train/loss", step): v for (_, step), v in expected_mlflow_metric(partial)[0].items()
    }
    assert lab.query("SELECT status, ended_at FROM jobs WHERE job_id = $j", {"j": job}) == [("running", None)]
    with loss.open("ab") as f:
        f.write(data[_cut(data, 0.5) :])
    meta.write_text(finished)
    lab.ingest()
    expected: Expected = {}
    for name, path in mlflow_store.named_files(BIRD_RUN / "metrics").items():
        expected |= {(name, step): v for (_, step), v in expected_mlflow_metric(path)[0].items()}
    assert same(stored_points(lab, job), expected)
    assert lab.query("SELECT status, ended_at FROM jobs WHERE job_id = $j", {"j": job}) == [
        ("completed", datetime(2024, 10, 21, 5, 4, 59, 849000))
    ]
    # only meta.yaml changes (same size: status 3 -> 4): the job row follows, the points stay
    meta.write_text(finished.replace("status: 3", "status: 4"))
    lab.ingest()
    assert lab.query("SELECT status FROM jobs WHERE job_id = $j", {"j": job}) == [("failed",)]
    assert same(stored_points(lab, job), expected)


MLFLOW_STATUSES = {"1": "running", "2": "queued", "3": "completed", "4": "failed", "5": "cancelled",
                   "RUNNING": "running", "FINISHED": "completed", "FAILED": "failed", "KILLED": "cancelled",
                   "7": "unknown"}  # fmt: skip


def test_mlflow_status_params_tags(lab: Lab) -> None:
    (lab.root / "mlruns" / "5").mkdir(parents=True)
    (lab.root / "mlruns" / "5" / "meta.yaml").write_text("experiment_id: '5'\nname: sweeps\n")
    for status in MLFLOW_STATUSES:
        run = lab.root / "mlruns" / "5" / f"run{status}"
        for sub in ("metrics", "params", "tags"):
            (run / sub).mkdir(parents=True)
        meta = f"run_id: run{status}\nstatus: {status}\nstart_time: 1700000000000\nend_time: null\n"
        (run / "meta.yaml").write_text(meta)
        (run / "metrics" / "lr-Adam").write_text("1700000000500 0.001 0\n1700000001500 0.0005 1\n")
        (run / "params" / "model_name").write_text("gpt2")
        (run / "tags" / "mlflow.runName").write_text(f"run {status}")
    summary = lab.ingest()
    assert summary.warnings == 1  # status 7
    for status, expected in MLFLOW_STATUSES.items():
        job = f"mlruns/5/run{status}"
        status_, model, config, started = lab.query(
            "SELECT status, model_name, config, started_at FROM jobs WHERE job_id = $j", {"j": job}
        )[0]
        assert (status_, model, started) == (expected, "gpt2", datetime(2023, 11, 14, 22, 13, 20))
        config = json.loads(config)
        assert (config["params"], config["tags"]) == ({"model_name": "gpt2"}, {"mlflow.runName": f"run {status}"})
        assert config["mlflow"]["experiment_name"] == "sweeps"
        assert lab.query("SELECT step, learning_rate FROM step_facts WHERE job_id = $j ORDER BY step", {"j": job}) == [
            (0, 0.001), (1, 0.0005)
        ]  # fmt: skip
    (warnings,) = lab.query("SELECT warnings FROM ingest_files WHERE warning_count > 0")[0]
    assert json.loads(warnings) == ["meta.yaml: status '7' is not an MLflow run status, kept as unknown"]


def test_lfs_pointers_and_bad_lines_named(lab: Lab) -> None:
    pointer = next((TOOL_LOGS2 / "tfevents" / "hf-lfs-pointer").rglob("events.out.tfevents.*")).read_bytes()
    for folder, name in (("llama", "trainer_log.jsonl"), ("lightning", "metrics.csv")):
        (lab.root / folder).mkdir()
        (lab.root / folder / name).write_bytes(pointer)
    bad = lab.root / "bad"
    bad.mkdir()
    (bad / "trainer_log.jsonl").write_bytes(
        b'{"current_steps": 1, "loss": 1.5}\n{"current_steps": 2, "loss":\n{"current_steps": 3, "loss": "high"}\n'
    )
    summary = lab.ingest()
    failed = dict(lab.query("SELECT path, error FROM ingest_files WHERE outcome = 'failed'"))
    assert set(failed) == {lab.ledger_path(lab.root / f) for f in ("llama/trainer_log.jsonl", "lightning/metrics.csv")}
    assert all("Git LFS pointer" in reason for reason in failed.values())
    assert summary.failed == 2
    log = lab.ledger_path(bad / "trainer_log.jsonl")
    (warnings,) = lab.query("SELECT warnings FROM ingest_files WHERE path = $p", {"p": log})[0]
    assert [w.split(":")[0] for w in json.loads(warnings)] == ["line 2", "line 3"]
    assert stored_points(lab, "bad") == {("loss", 1): 1.5}


def test_llamafactory_log_beside_trainer_states(lab: Lab) -> None:
    """LLaMA-Factory's output folder holds the checkpoints' trainer states and the log of the same run:
    one job, the log's points added to it (the run's steps after its last checkpoint included)."""
    job = lab.root / "mistral-translator"
    shutil.copytree(REALDATA / "hf_trainer_state" / "mistral-translator", job)
    (job / "trainer_log.jsonl").write_bytes(LLAMAFACTORY_FILES[2].read_bytes())
    assert lab.ingest().failed == 0
    assert lab.query("SELECT job_id FROM jobs") == [("mistral-translator",)]
    stored = stored_points(lab, "mistral-translator")
    for key, value in expected_llamafactory(LLAMAFACTORY_FILES[2])[0].items():
        assert stored[key] == value
    losses = lab.query("SELECT step, loss FROM step_facts WHERE job_id = 'mistral-translator' AND loss IS NOT NULL")
    logged = [json.loads(t) for t in LLAMAFACTORY_FILES[2].read_text().splitlines()]
    assert sorted(losses) == sorted((e["current_steps"], e["loss"]) for e in logged if "loss" in e)


LOG_LINE = st.fixed_dictionaries(
    {"current_steps": st.integers(0, 30), "loss": st.floats(allow_nan=False, allow_infinity=False)},
    optional={"eval_loss": st.floats(0, 10), "throughput": st.floats(0, 1e4).map(lambda v: f"{v:.2f}")},
)


# one run's files: trainer_log.jsonl lines, an MLflow metric's values, where the two cuts fall
PIECES_CASE = st.tuples(
    st.lists(LOG_LINE, min_size=1, max_size=25),
    st.lists(st.lists(st.tuples(st.integers(0, 30), st.floats(allow_nan=False, allow_infinity=False)), max_size=8)),
    st.lists(st.integers(0, 4000), min_size=2, max_size=2),
)


# the stage's readers cut anywhere (hypothesis' examples); their publish on PostgreSQL: the appends tests above.
# One to three runs' files (folders of their own, cuts of their own) grow together, one ingest after
# each piece for all: an ingest's fixed cost is most of an example's, so half the examples check
# about as many runs (docs/testing.md, "Deep runs": 8 examples under the deep profile)
@DUCKDB_ONLY_INGEST
@settings(max_examples=examples(1, 8), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(PIECES_CASE, min_size=1, max_size=3))
def test_ingest_in_pieces(lab: Lab, cases: list[tuple[list[dict[str, object]], list[list[tuple[int, float]]],
                                                      list[int]]]) -> None:  # fmt: skip
    """Files written in three pieces, cut anywhere, ingested after each piece and once more: the
    stored points are those of the complete lines so far, and the last ingest changes nothing."""
    n = len(list(lab.root.iterdir()))
    runs = []
    for k, (entries, metric, cuts) in enumerate(cases):
        log = b"".join(json.dumps(e).encode() + b"\n" for e in entries)
        values = b"".join(f"{1700000000000 + i} {v!r} {s}\n".encode() for i, (s, v) in enumerate(sum(metric, [])))
        llama = lab.root / f"llama{n}-{k}" / "trainer_log.jsonl"
        run = lab.root / f"mlruns{n}-{k}" / "1" / "r"
        for folder in (llama.parent, run / "metrics"):
            folder.mkdir(parents=True)
        (run / "meta.yaml").write_text("status: 1\nstart_time: 1700000000000\nend_time: null\n")
        runs.append((k, log, values, llama, run / "metrics" / "loss", [*sorted(cuts), None]))
    for piece in range(3):
        for _, log, values, llama, loss, ends in runs:
            end = ends[piece]
            for path, data in ((llama, log), (loss, values)):
                path.write_bytes(data[: min(end, len(data)) if end is not None else len(data)])
        lab.ingest()
        for k, _, _, llama, loss, _ in runs:
            written_log = llama.read_bytes()
            kept_log = written_log[: written_log.rfind(b"\n") + 1]
            (lab.root / "partial.jsonl").write_bytes(kept_log)
            expected = expected_llamafactory(lab.root / "partial.jsonl")[0] if kept_log else {}
            assert same(stored_points(lab, f"llama{n}-{k}"), expected)
            written = loss.read_bytes()
            expected = {}
            for line in written[: written.rfind(b"\n") + 1].decode().splitlines():
                _, value, step = line.split(" ")
                expected[("loss", int(step))] = float(value)
            assert same(stored_points(lab, f"mlruns{n}-{k}/1/r"), expected)
    before = lab.query(VALUES)
    assert lab.ingest().rows == 0
    assert lab.query(VALUES) == before
    (lab.root / "partial.jsonl").unlink()


DOC_SECTIONS = {
    "lightning_csv": "### Lightning CSVLogger",
    "mlflow": "### MLflow file store",
    "llamafactory": "### LLaMA-Factory `trainer_log.jsonl`",
}
DOC_COLUMNS = {
    "loss": "loss", "eval loss": "eval_loss", "learning rate": "learning_rate", "grad norm": "grad_norm",
    "epoch": "epoch", "samples per second": "samples_per_second",
}  # fmt: skip


def test_docs_list_the_mapping_of_step_facts() -> None:
    """docs/ingest.md's table of each tool names the metrics step_facts maps, in its order of preference."""
    sql = (Path(__file__).parent.parent / "warehouse" / "sql" / "step_facts.sql").read_text()
    docs = (Path(__file__).parent.parent / "docs" / "ingest.md").read_text()
    for source, heading in DOC_SECTIONS.items():
        in_sql: dict[str, list[tuple[int, str]]] = {}
        for row in re.findall(rf"\('{source}', '([^']+)', '([a-z_]+)', (\d+)\)", sql):
            in_sql.setdefault(row[1], []).append((int(row[2]), row[0]))
        section = docs.split(heading, 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
        in_docs = {}
        for names, column in re.findall(r"^\| (`.*`) \| ([a-z ]+) \|$", section, re.MULTILINE):
            in_docs[DOC_COLUMNS[column]] = re.findall(r"`([^`]+)`", names)
        assert in_docs == {field: [name for _, name in sorted(rows)] for field, rows in in_sql.items()}, source


def test_mlflow_run_files_checked_before_reading(lab: Lab, tmp_path: Path) -> None:
    """A param that is a FIFO (it would block the run), a link out of the root or a folder is not read."""
    run = lab.root / "mlruns" / "1" / "r"
    for sub in ("metrics", "params", "tags"):
        (run / sub).mkdir(parents=True)
    (run / "meta.yaml").write_text("status: 3\nstart_time: 1700000000000\nend_time: 1700000001000\n")
    (run / "metrics" / "loss").write_text("1700000000000 0.5 1\n")
    (run / "params" / "lr").write_text("0.1")
    os.mkfifo(run / "params" / "fifo")
    (tmp_path / "secret").write_text("s3cret")
    (run / "tags" / "outside").symlink_to(tmp_path / "secret")
    summary = lab.ingest()
    (config,) = lab.query("SELECT config FROM jobs WHERE job_id = 'mlruns/1/r'")[0]
    assert json.loads(config)["params"] == {"lr": "0.1"} and json.loads(config)["tags"] == {}
    assert "s3cret" not in config
    assert stored_points(lab, "mlruns/1/r") == {("loss", 1): 0.5}
    assert summary.failed == 2  # the FIFO and the link, each named with its reason
