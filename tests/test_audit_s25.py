"""Audit 25: what independent readers of the contracts, the real bindings and the API found.

1. Sampler: a reading in which every query got a field error ("not supported", "no permission")
   was written as a line of nulls, which then hid the job's step readings in job_resources
   (docs/sampler.md: a reading in which not one query answered is skipped).
2. Sampler: a non-ASCII digit in --gpus or CUDA_VISIBLE_DEVICES ('²') was a traceback; CUDA reads
   ASCII digits only.
3. Sampler: one MIG slot refused ("no permission": another container's instance) hid every
   instance of its GPU; it hides only itself now.
4. The fake NVML answers as nvml.h says where it did not: the MIG slot count of a GPU not in MIG
   mode (0), a MIG handle's index (its slot), the instance ids of a whole GPU (not supported).
5. Retention: which (host, day)s were pruned was read off the manifest (DuckDB) or a job's first
   minute (PostgreSQL); a late sample stored on a pruned day hid it. The raw window then reached
   back over the day (a rolled-up minute rebuilt from a later sample alone: 3 samples became 1),
   and a job's GPU chart read its kept samples as all its readings (pruned minutes left out).
   Revision 0044's gpu_pruned_days records each prune.
6. /metrics: an ETA whose product passes a double's range was sent as +Inf (docs/metrics.md: an
   unknown figure has no series).
7. GPU charts (docs/api.md): a partly pruned job's minute chart said downsampled when it returned
   its pages' readings; a GPU with no more readings than its share lost some; a GPU whose index
   changed under one UUID counted as two and lost its extremes; the chart of a GPU the job does
   not have named another source than its page.
8. A trainer state read as its folder's job (the progress.json torn, or not written yet), then
   rotated away (save_total_limit) before the progress.json could be read, kept that job for good:
   a phantom job of the folder's name, collecting the real job's checkpoint folders.
9. A checkpoint's path depended on the order of reads when a state's copy (last-checkpoint/, a
   tmp-checkpoint-<step>/ the trainer renamed) was read in an earlier run than its checkpoint-<step>/.
10. After an ingest killed between its facts and its refresh, `insights set` (or `db upgrade`)
    published the killed run's facts beside stale analytics, and the next ingest, finding no
    marker, did not publish its refresh; a killed run's row stayed `running` for good.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path

import pynvml
import pytest
from conftest import Engine, Lab
from fake_nvml import MIB, FakeMig, FakeNvml, gpus
from fastapi.testclient import TestClient
from file_times import write
from test_sampler import run_cli
from test_sampler_nvml import Rig, messages
from test_sampler_s18 import READING_CALLS

from runlytics.api import metrics
from runlytics.api.app import TOKEN_ENV, create_app
from runlytics.cli import main as cli_main
from runlytics.sampler import devices
from runlytics.sampler.nvml import Nvml
from runlytics.warehouse import db, history, snapshots

# --- 1. a reading of no answer is skipped, whatever the errors --------------------------------


@pytest.mark.parametrize("code", [pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_NO_PERMISSION])
def test_a_reading_where_every_query_is_unanswerable_writes_no_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, code: int
) -> None:
    fleet = gpus(2)
    fleet[0].fail = dict.fromkeys(READING_CALLS, code)
    rig = Rig(tmp_path, FakeNvml(fleet))
    with caplog.at_level(logging.WARNING, "runlytics.sampler"):
        lines = rig.readings(3)
    assert [line["gpu_index"] for line in lines] == [1, 1, 1]  # no line of nulls for GPU 0
    worker = rig.workers[0]
    assert worker.transient == 3 and worker.failures == 1  # skipped twice, then backed off
    name = type(pynvml.NVMLError(code)).__name__
    warned = messages(caplog, logging.WARNING)
    assert warned[0] == f"GPU 0 ({fleet[0].uuid}): reading skipped (TransientError: no query answered ({name}))"
    assert not any("null" in message for message in warned)  # no field reported as null


def test_a_reading_with_one_answer_is_still_written(tmp_path: Path) -> None:
    fleet = gpus(1)
    fleet[0].fail = dict.fromkeys(READING_CALLS, pynvml.NVML_ERROR_NOT_SUPPORTED)
    del fleet[0].fail["nvmlDeviceGetTemperatureV"]  # one query answers: the line stands
    lines = Rig(tmp_path, FakeNvml(fleet)).readings(1)
    assert len(lines) == 1 and lines[0]["temperature_c"] == 68.0 and lines[0]["utilization_percent"] is None


# --- 2. only ASCII digits are GPU indexes ------------------------------------------------------


def test_a_non_ascii_digit_in_gpus_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["sample", "--job-id", "j", "--gpus", "\u00b2", "--spool", str(tmp_path / "s")]
    assert run_cli(monkeypatch, FakeNvml(gpus(3)), argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'\u00b2' is neither a GPU index nor a UUID" in err[0]


def test_a_non_ascii_digit_ends_cuda_visible_devices(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "runlytics.sampler"):
        assert devices.parse_devices("1,\u0663,0") == [1]  # Arabic-Indic three is not CUDA's 3
    assert messages(caplog, logging.WARNING) == [
        "CUDA_VISIBLE_DEVICES=1,\u0663,0: GPUs from '\u0663' on are not sampled (CUDA ignores them)"
    ]


# --- 3. a refused MIG slot hides only itself ---------------------------------------------------


def refused_slot_fleet() -> list:
    fleet = gpus(1, mig=True)
    fleet[0].migs = [
        FakeMig(uuid="MIG-0the0r-0000-5000-8000-000000000001", gi_id=1, refused=True),
        FakeMig(uuid="MIG-00000ur-0000-5000-8000-000000000002", gi_id=2, memory_used=4000 * MIB),
    ]
    return fleet


def test_a_refused_mig_slot_leaves_the_other_instances_sampled(tmp_path: Path) -> None:
    fleet = refused_slot_fleet()
    rig = Rig(tmp_path, FakeNvml(fleet), keys=[fleet[0].migs[1].uuid])
    lines = rig.readings(2)
    assert [(line["gpu_uuid"], line["memory_used_mb"], line["mig_gi_id"]) for line in lines] == [
        (fleet[0].migs[1].uuid, 4000.0, 2)
    ] * 2


def test_the_instance_in_a_refused_slot_is_looked_up_again_later(caplog: pytest.LogCaptureFixture) -> None:
    fleet = refused_slot_fleet()
    nvml = Nvml(FakeNvml(fleet))
    nvml.init()
    with caplog.at_level(logging.WARNING, "runlytics.sampler"):
        found = devices.resolve(nvml, [fleet[0].migs[0].uuid])
    assert [gpu.device for gpu in found] == [None]
    assert messages(caplog, logging.WARNING) == [
        f"GPU {fleet[0].migs[0].uuid}: can't be read now (NVMLError_NoPermission: Insufficient Permissions);"
        " trying again later"
    ]
    fleet[0].migs[0].refused = False  # its container gone, say
    devices.attach(nvml, found[0])
    assert found[0].uuid == fleet[0].migs[0].uuid


# --- 4. the fake as nvml.h says ----------------------------------------------------------------


def test_the_fake_mig_queries_answer_as_nvml_h_says() -> None:
    fleet = gpus(2)
    fleet[1].mig, fleet[1].mig_uuids = True, ("MIG-7e57-0001", "MIG-7e57-0002")
    fake = FakeNvml(fleet)
    fake.nvmlInit()
    whole, card = fake.nvmlDeviceGetHandleByIndex(0), fake.nvmlDeviceGetHandleByIndex(1)
    assert fake.nvmlDeviceGetMaxMigDeviceCount(whole) == 0  # "zero if MIG is not supported or enabled"
    assert fake.nvmlDeviceGetMaxMigDeviceCount(card) == 7
    with pytest.raises(pynvml.NVMLError_NotSupported):
        fake.nvmlDeviceGetMigDeviceHandleByIndex(whole, 0)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        fake.nvmlDeviceGetMigDeviceHandleByIndex(card, 7)
    second = fake.nvmlDeviceGetMigDeviceHandleByIndex(card, 1)
    assert fake.nvmlDeviceGetIndex(second) == 1  # a MIG handle's index is its slot
    assert fake.nvmlDeviceGetIndex(card) == 1
    for call in (fake.nvmlDeviceGetGpuInstanceId, fake.nvmlDeviceGetComputeInstanceId):
        with pytest.raises(pynvml.NVMLError_NotSupported):
            call(whole)


# --- 5. a pruned day stays pruned --------------------------------------------------------------


def sample(ts: str, utilization: float, job: str = "j1", host: str = "n1") -> str:
    return json.dumps({"ts": ts, "host": host, "job_id": job, "gpu_index": 0, "gpu_uuid": f"GPU-{host}",
                       "utilization_percent": utilization, "power_w": 100.0}) + "\n"  # fmt: skip


GPU_FIGURES = "SELECT samples, first_sample, average_utilization, energy_wh FROM job_gpus WHERE job_id = 'j1'"


def spool(folder: Path, *lines: str) -> Path:
    folder.mkdir()
    (folder / "a.jsonl").write_text("".join(lines))
    return folder


def test_a_late_sample_stored_on_a_pruned_day_does_not_reopen_the_day(ingest_engine: Engine, tmp_path: Path) -> None:
    """2025-06-10 pruned; a sample of a minute never rolled up (12:03) is stored there, as one ingest
    would; a later sample of the rolled-up 12:00 is still skipped with a warning, whatever the
    window (it rebuilt 12:00 from itself alone: 3 samples, mean 73.33)."""
    lab = Lab(tmp_path, ingest_engine)
    lab.write_job("j1", {"job_id": "j1", "status": "completed", "started_at": "2025-06-10T11:59:00Z",
                         "ended_at": "2025-06-12T12:01:00Z", "history": [{"step": 10, "loss": 1.0}]})  # fmt: skip
    first = spool(tmp_path / "first", sample("2025-06-10T12:00:00Z", 10), sample("2025-06-10T12:00:20Z", 20),
                  sample("2025-06-10T12:00:40Z", 30), sample("2025-06-12T12:00:00Z", 40))  # fmt: skip
    lab.ingest(spool_root=first, keep_raw_days=1)
    lab.ingest(spool_root=spool(tmp_path / "late1", sample("2025-06-10T12:03:00Z", 90)), keep_raw_days=30)
    assert lab.query(GPU_FIGURES) == [(5, datetime(2025, 6, 10, 12), 38.0, 4800.0)]  # (10+20+30+90+40)/5
    summary = lab.ingest(spool_root=spool(tmp_path / "late2", sample("2025-06-10T12:00:30Z", 90)), keep_raw_days=30)
    assert lab.query(GPU_FIGURES) == [(5, datetime(2025, 6, 10, 12), 38.0, 4800.0)]
    assert [m for _, m in summary.listed_warnings if "already rolled up" in m], summary.listed_warnings
    assert lab.query("SELECT host, day FROM gpu_pruned_days") == [("n1", datetime(2025, 6, 10).date())]


def test_a_jobs_chart_reads_its_minutes_after_another_jobs_sample_lands_on_its_pruned_day(
    ingest_engine: Engine, tmp_path: Path
) -> None:
    """j's 2025-06-01 was pruned; job k's late sample on the same host and day made the day look
    kept, and j's chart answered its one kept sample (gpu_samples, downsampled false)."""
    lab = Lab(tmp_path, ingest_engine)
    for job in ("j1", "z", "k"):
        lab.write_job(job, {"job_id": job, "status": "completed", "history": [{"step": 1, "loss": 1.0}]})
    lines = [sample("2025-06-01T23:59:00Z", 50), sample("2025-06-01T23:59:30Z", 70),
             sample("2025-06-02T00:00:30Z", 90), sample("2025-06-03T12:00:00Z", 10, job="z", host="n2")]  # fmt: skip
    first = spool(tmp_path / "first", *lines)
    lab.ingest(spool_root=first, keep_raw_days=1)
    lab.ingest(spool_root=spool(tmp_path / "late", sample("2025-06-01T13:00:00Z", 5, job="k")), keep_raw_days=0)
    assert lab.query("SELECT job_id, samples FROM job_gpus WHERE job_id <> 'z' ORDER BY 1") == [("j1", 3), ("k", 1)]
    with lab._reader() as con:
        chart = history.gpu_readings_downsampled(con, "j1", None, 100)
    assert chart.source == "gpu_minutes"


# --- 6. an ETA past a double is no figure -------------------------------------------------------


def test_an_eta_past_a_doubles_range_has_no_series(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    from test_metrics import by_job, scrape

    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.delenv(metrics.STALE_ENV, raising=False)
    for job, seconds in (("huge", 1e308), ("large", 1e300)):
        row = {"step": 1, "iteration_time": seconds, "loss": 1.0, "samples_per_second": 1.0}
        lab.write_job(job, {"job_id": job, "status": "running", "total_steps": 1000, "history": [row]})
    lab.ingest()
    families = scrape(TestClient(create_app(lab.warehouse(), token=None)))
    # (1000 - 1) x 1e308 is past 1.797e308: no series, never +Inf; 999 x 1e300 is a figure
    assert by_job(families, "runlytics_job_eta_seconds") == {"large": pytest.approx(9.99e302)}


# --- 7. GPU charts as docs/api.md says ----------------------------------------------------------


def gpu_line(ts: float, utilization: float, index: int = 0, uuid: str = "GPU-z") -> str:
    return json.dumps({"ts": ts, "host": "h", "job_id": "g", "gpu_index": index, "gpu_uuid": uuid,
                       "utilization_percent": utilization, "memory_used_mb": 100.0 + utilization}) + "\n"  # fmt: skip


def gpu_lab(ingest_engine: Engine, tmp_path: Path, lines: list[str], keep_raw_days: int = 0) -> Lab:
    lab = Lab(tmp_path, ingest_engine)
    lab.write_job("g", {"job_id": "g", "status": "completed", "history": [{"step": 1, "loss": 1.0}]})
    lab.ingest(spool_root=spool(tmp_path / "spool", *lines), keep_raw_days=keep_raw_days)
    return lab


def chart(lab: Lab, max_points: int | None, gpu: int | None = None) -> history.GpuReadings:
    with lab._reader() as con:
        return history.gpu_history(con, "g", gpu, None, 1000, max_points)


T = 1748772000.0  # 2025-06-01 10:00:00 UTC


def test_a_partly_pruned_jobs_minute_chart_of_its_pages_readings_is_not_downsampled(
    ingest_engine: Engine, tmp_path: Path
) -> None:
    # 2025-06-01 pruned (two samples in its 10:00), 2025-06-03 kept: a span of 2 days and 1 minute
    lab = gpu_lab(ingest_engine, tmp_path, [gpu_line(T, 10), gpu_line(T + 30, 30), gpu_line(T + 2 * 86400, 50)], 1)
    page = chart(lab, None)
    assert (page.source, page.resolution, len(page.readings)) == ("gpu_minutes", "minute", 2)
    for max_points in (2881, 2882):  # the span's 2,881 minutes: one-minute buckets either way
        answer = chart(lab, max_points)
        assert (answer.source, answer.bucket_seconds, answer.downsampled) == ("gpu_minutes", 60, False)
        assert [r["utilization_percent"] for r in answer.readings] == [20.0, 50.0]
    absent = chart(lab, 100, gpu=5)  # a GPU the job does not have: named as its page is
    assert (absent.source, absent.resolution, absent.readings) == ("gpu_minutes", "minute", [])
    assert chart(lab, None, gpu=5).source == "gpu_minutes"


def test_a_gpu_with_no_more_readings_than_its_share_keeps_them_all(ingest_engine: Engine, tmp_path: Path) -> None:
    lab = gpu_lab(ingest_engine, tmp_path, [gpu_line(T + i, 10 + i) for i in range(12)])
    for max_points in (24, 12):
        answer = chart(lab, max_points)
        assert (answer.resolution, answer.downsampled, answer.extremes_kept) == ("sample", False, True)
        assert [r["utilization_percent"] for r in answer.readings] == [10.0 + i for i in range(12)]
    assert chart(lab, 11).resolution == "minute"  # a share under 12: minutes (one bucket here)


def test_a_gpu_under_its_share_keeps_its_readings_beside_one_over_it(ingest_engine: Engine, tmp_path: Path) -> None:
    few = [gpu_line(T + i, 10 + i, 0, "GPU-a") for i in range(12)]
    many = [gpu_line(T + i, (i * 37) % 100, 1, "GPU-b") for i in range(200)]
    answer = chart(gpu_lab(ingest_engine, tmp_path, few + many), 48)  # a share of 24 each
    assert (answer.resolution, answer.downsampled, answer.extremes_kept) == ("sample", True, True)
    a = [r["utilization_percent"] for r in answer.readings if r["gpu_uuid"] == "GPU-a"]
    b = [r for r in answer.readings if r["gpu_uuid"] == "GPU-b"]
    assert a == [10.0 + i for i in range(12)] and 2 < len(b) <= 24


def test_a_gpu_whose_index_changed_is_one_gpu_of_a_chart(ingest_engine: Engine, tmp_path: Path) -> None:
    # 100 samples 6 s apart, index 0 then 3 under one UUID; a spike at sample 30, a dip at 70
    values = [99.0 if i == 30 else 1.0 if i == 70 else 50.0 for i in range(100)]
    lab = gpu_lab(ingest_engine, tmp_path, [gpu_line(T + 6 * i, v, 0 if i < 50 else 3) for i, v in enumerate(values)])
    answer = chart(lab, 12)  # one GPU: a share of 12, one bucket of its extremes
    assert (answer.resolution, answer.extremes_kept, answer.downsampled) == ("sample", True, True)
    kept = {r["utilization_percent"] for r in answer.readings}
    assert {99.0, 1.0} <= kept and len(answer.readings) <= 12


# --- 8. a rotated-away state does not keep a phantom job ------------------------------------------


def trainer_state_of(global_step: int) -> str:
    history = [{"step": s, "loss": 3 - s / 1000} for s in range(100, global_step + 1, 100)]
    return json.dumps({"global_step": global_step, "max_steps": 1000, "save_steps": 500, "log_history": history})


@pytest.mark.parametrize("first_progress", ["torn", "absent"])
def test_a_state_rotated_away_before_the_progress_json_was_read_leaves_no_phantom_job(
    ingest_engine: Engine, tmp_path: Path, first_progress: str
) -> None:
    lab = Lab(tmp_path, ingest_engine)
    folder = lab.root / "job-7"
    history = [{"step": s, "loss": 3 - s / 1000, "timestamp": 1772359200 + s} for s in range(100, 1001, 100)]
    whole = json.dumps({"job_id": "llama-ft-7", "status": "running", "history": history})
    if first_progress == "torn":
        write(folder / "progress.json", whole[:100], age=10)  # caught mid-write: pending
    write(folder / "checkpoint-500" / "trainer_state.json", trainer_state_of(500))
    lab.ingest()
    assert lab.query("SELECT job_id FROM jobs") == [("job-7",)]  # the folder's name, for now
    (folder / "checkpoint-500" / "trainer_state.json").unlink()  # save_total_limit=1
    (folder / "checkpoint-500").rmdir()
    write(folder / "checkpoint-1000" / "trainer_state.json", trainer_state_of(1000))
    write(folder / "progress.json", whole)
    summary = lab.ingest()
    # as one ingest of the final files: one job, its checkpoint 1000, the state's 10 steps
    assert lab.query("SELECT job_id, status FROM jobs") == [("llama-ft-7", "running")]
    assert lab.query("SELECT job_id, step FROM checkpoints") == [("llama-ft-7", 1000)]
    assert lab.query("SELECT job_id, count(*) FROM trainer_steps GROUP BY job_id") == [("llama-ft-7", 10)]
    assert [m for _, m in summary.listed_warnings if "gone since it was read for job job-7" in m]
    lab.ingest()  # and it stays so
    assert lab.query("SELECT job_id FROM jobs") == [("llama-ft-7",)]


# --- 9. a checkpoint's path whatever the order of reads --------------------------------------------


@pytest.mark.parametrize("copy", ["last-checkpoint", "tmp-checkpoint-30"])
@pytest.mark.parametrize("later", ["state", "folder"])
def test_a_checkpoints_folder_read_after_a_copy_gives_its_path(lab: Lab, copy: str, later: str) -> None:
    folder = lab.root / "hf2"
    state = json.dumps({"global_step": 30, "max_steps": 40, "log_history": [{"step": 30, "loss": 1.4}]})
    write(folder / "checkpoint-10" / "trainer_state.json", json.dumps({"global_step": 10, "log_history": []}))
    write(folder / copy / "trainer_state.json", state)
    lab.ingest()
    assert lab.query("SELECT step, path FROM checkpoints WHERE step = 30") == [(30, str(folder / copy))]
    if later == "state":
        write(folder / "checkpoint-30" / "trainer_state.json", state)
    else:  # a checkpoint-30/ the trainer has not written its state into yet
        (folder / "checkpoint-30").mkdir()
    lab.ingest()
    assert lab.query("SELECT step, path FROM checkpoints WHERE step = 30") == [(30, str(folder / "checkpoint-30"))]


# --- 10. a killed run's facts are published with their refresh, and its row says it was cut short


def test_a_writer_after_a_killed_ingest_leaves_publishing_to_the_ingest_that_completes_it(lab: Lab) -> None:
    rows = [{"step": s, "loss": 1.0, "iteration_time": 1.0} for s in (1, 2)]
    lab.write_job("j", {"job_id": "j", "status": "running", "history": rows})
    lab.ingest()
    # what a run killed after its merge and before its refresh leaves: a new step, its job queued
    with db.connection(lab.db) as con:
        con.execute("INSERT INTO steps (job_id, step, loss) VALUES ('j', 3, 0.5)")
        con.execute("INSERT INTO refresh_queue VALUES ('j')")
        con.execute("INSERT INTO ingest_runs (run_id, started_at, outcome) VALUES (1, now()::TIMESTAMP, 'running')")
    snapshots.mark_unpublished(lab.db)
    seen = "SELECT (SELECT count(*) FROM steps), (SELECT total_iterations FROM job_results)"
    assert cli_main(["insights", "set", "loss_spike.mad_factor", "8", "--db", str(lab.db)]) == 0
    with snapshots.connect_latest(lab.db) as con:
        assert con.execute(seen).fetchone() == (2, 2)  # the snapshot before the killed run, still
    lab.ingest()  # completes the killed run's refresh, and publishes
    with snapshots.connect_latest(lab.db) as con:
        assert con.execute(seen).fetchone() == (3, 3)
        value = con.execute("SELECT value FROM insight_settings WHERE name = 'loss_spike.mad_factor'").fetchone()
        assert value == (8.0,)
        assert con.execute("SELECT outcome FROM ingest_runs WHERE run_id = 1").fetchone() == ("interrupted",)
