"""The audit's proven disagreements with the contracts (session 11), each pinned by a case.

F6: a ``latest`` entry that repeats a step the file's ``history`` holds. inputs.md §1: "the
entry with the later ``timestamp`` wins"; ``latest`` holds "the latest readings, for writers that
keep no history". Within one file the history entry stays unless ``latest`` carries its own,
strictly later timestamp; the snapshot's ``updated_at`` stands in for latest's timestamp only at
a step the history lacks.

Real DuckDB files in tmp folders; every expected figure is worked out by hand in its comment.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import duckdb
import pytest
from conftest import Engine, Lab

from runlytics.ingest.formats import nvidia_smi as nvidia_smi_format
from runlytics.ingest.formats.nvidia_smi import CsvImport

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "jobs"


@pytest.fixture
def lab(tmp_path: Path, ingest_engine: Engine) -> Lab:
    """On both engines (docs/testing.md, "Both engines"): on PostgreSQL ``ingest --db URL`` publishes
    the stage's result, and ``lab.query`` and ``lab.analytics`` read PostgreSQL's rows."""
    return Lab(tmp_path, ingest_engine)


# --- F6: latest repeating a history step ----------------------------------------------------


def _history_job(latest: dict[str, Any], *, careful: bool = False) -> dict[str, Any]:
    """Steps 10 and 20 (20 s from the start, iteration_time 1, 10 samples each); step 20 has an
    eval loss and one GPU reading. ``careful``: a string in step 10's loss, so that the C reader
    gives the file up and the careful read takes its history (the other road)."""
    return {
        "job_id": "j",
        "status": "running",
        "started_at": "2026-11-02T08:00:00Z",
        "updated_at": "2026-11-02T08:01:40Z",
        "history": [
            {
                "step": 10,
                "timestamp": "2026-11-02T08:00:10Z",
                "loss": "2.0" if careful else 2.0,
                "iteration_time": 1.0,
                "samples": 10,
            },
            {
                "step": 20,
                "timestamp": "2026-11-02T08:00:20Z",
                "loss": 1.5,
                "eval_loss": 1.4,
                "iteration_time": 1.0,
                "samples": 10,
                "gpus": [{"index": 0, "utilization_percent": 80.0, "memory_used_mb": 1000}],
            },
        ],
        "latest": latest,
    }


def _step_20(lab: Lab) -> list[tuple[Any, ...]]:
    return lab.query(
        "SELECT CAST(ts AS VARCHAR), loss, eval_loss, iteration_time, samples FROM steps"
        " WHERE job_id = 'j' AND step = 20"
    )


@pytest.mark.parametrize("careful", [False, True], ids=["fast-road", "careful-road"])
def test_a_latest_without_timestamp_leaves_the_history_entry_of_its_step(lab: Lab, careful: bool) -> None:
    lab.write_job("j", _history_job({"step": 20, "loss": 1.7}, careful=careful))
    lab.ingest()
    # the history's step 20 whole: its own time, eval loss, seconds, samples and GPU reading
    assert [row[1:] for row in _step_20(lab)] == [(1.5, 1.4, 1.0, 10)]
    assert lab.query("SELECT utilization_percent FROM step_gpus WHERE job_id = 'j' AND step = 20") == [(80.0,)]
    a = lab.analytics("j")
    assert a is not None
    # seconds 10 x 1 + 10 x 1 = 20; samples 10 + 10 = 20; iteration time (1 + 1) / 2 = 1
    assert a["duration"]["training_seconds"] == pytest.approx(20.0)
    assert a["performance"]["total_samples"] == pytest.approx(20.0)
    assert a["losses"]["final_eval_loss"] == pytest.approx(1.4)


def test_a_latest_with_the_same_timestamp_leaves_the_history_entry(lab: Lab) -> None:
    lab.write_job("j", _history_job({"step": 20, "timestamp": "2026-11-02T08:00:20Z", "loss": 1.7}))
    lab.ingest()
    assert [row[1:] for row in _step_20(lab)] == [(1.5, 1.4, 1.0, 10)]
    assert lab.query("SELECT count(*) FROM step_gpus WHERE job_id = 'j' AND step = 20") == [(1,)]


def test_a_latest_with_its_own_later_timestamp_replaces_the_history_entry(lab: Lab) -> None:
    lab.write_job("j", _history_job({"step": 20, "timestamp": "2026-11-02T08:00:30Z", "loss": 1.7}))
    lab.ingest()
    # latest wins whole (the contract's rule): no eval loss, seconds, samples or GPU reading of its own
    assert _step_20(lab) == [("2026-11-02 08:00:30", 1.7, None, None, None)]
    assert lab.query("SELECT count(*) FROM step_gpus WHERE job_id = 'j' AND step = 20") == [(0,)]


def test_a_latest_at_a_step_the_history_lacks_takes_updated_at(lab: Lab) -> None:
    lab.write_job("j", _history_job({"step": 30, "loss": 1.2}))
    lab.ingest()
    rows = lab.query("SELECT step, CAST(ts AS VARCHAR), loss FROM steps WHERE job_id = 'j' ORDER BY step")
    assert rows[-1] == (30, "2026-11-02 08:01:40", 1.2)
    assert [row[1:] for row in _step_20(lab)] == [(1.5, 1.4, 1.0, 10)]


def test_the_bundled_mistral_sample_keeps_its_last_gpu_readings(lab: Lab, tmp_path: Path) -> None:
    shutil.copytree(SAMPLES / "mistral-lora-002", lab.root / "mistral-lora-002")
    lab.ingest()
    assert lab.query("SELECT count(*) FROM step_gpus WHERE job_id = 'mistral-lora-002' AND step = 300") == [(2,)]
    a = lab.analytics("mistral-lora-002")
    assert a is not None
    r = a["resource_utilization"]
    # the file's six readings (GPU 1's "n/a" utilization at step 200 dropped):
    # util (91 + 89 + 93 + 94 + 92) / 5 = 91.8; memory 122630 / 6; peak 20510;
    # temperature (71 + 69 + 73 + 70 + 74 + 71) / 6 = 428 / 6; peak 74
    assert r["average_gpu_utilization"] == pytest.approx(91.8)
    assert r["average_gpu_memory_mb"] == pytest.approx(122630 / 6)
    assert r["peak_gpu_memory_mb"] == pytest.approx(20510.0)
    assert r["average_gpu_temp_celsius"] == pytest.approx(428 / 6)
    assert r["peak_gpu_temp_celsius"] == pytest.approx(74.0)


# --- F2: an nvidia-smi log imported again with other arguments --------------------------------

HEADED = "timestamp, index, utilization.gpu [%]\n2024/07/01 12:00:00.000, 0, 50 %\n2024/07/01 12:00:01.000, 0, 70 %\n"
HEADERLESS = "2024/07/01 12:00:00.000, 50 %, 100 MiB\n2024/07/01 12:00:01.000, 70 %, 300 MiB\n"


def _log(lab: Lab, text: str) -> Path:
    """A log written earlier (its time in the past: not a file being written now)."""
    path = lab.root.parent / "gpu.csv"
    path.write_text(text)
    os.utime(path, (1719878400, 1719878400))  # 2024-07-02
    return path


def _samples(lab: Lab) -> list[tuple[Any, ...]]:
    return lab.query("SELECT job_id, CAST(ts AS VARCHAR), utilization_percent FROM gpu_samples ORDER BY 1, 2, 3")


def _imported_before(lab: Lab) -> list[str]:
    """The log's ledger warnings about an earlier import with other arguments, up to the job (the
    stage's ledger on PostgreSQL: the row of a job not yet known is published with the job)."""
    ((warnings,),) = lab.own_query("SELECT CAST(warnings AS VARCHAR) FROM ingest_files WHERE kind = 'nvidia_smi'")
    return [w.split(" with ")[0] for w in json.loads(warnings) if w.startswith("imported before")]


def test_a_failed_import_is_retried_with_columns(lab: Lab) -> None:
    log = _log(lab, HEADERLESS)
    first = lab.ingest(csv_imports=[CsvImport(log, "j")])
    assert (first.failed, first.unchanged) == (1, 0)
    again = lab.ingest(csv_imports=[CsvImport(log, "j", columns=("timestamp", "utilization.gpu", "memory.used"))])
    assert (again.ingested, again.unchanged, again.failed) == (1, 0, 0)
    assert _samples(lab) == [("j", "2024-07-01 12:00:00", 50.0), ("j", "2024-07-01 12:00:01", 70.0)]


def test_the_same_log_for_another_job_or_zone_is_imported_and_the_same_arguments_are_not(lab: Lab) -> None:
    log = _log(lab, HEADED)
    lab.ingest(csv_imports=[CsvImport(log, "a")])
    same = lab.ingest(csv_imports=[CsvImport(log, "a")])
    assert (same.ingested, same.unchanged) == (0, 1)
    other_job = lab.ingest(csv_imports=[CsvImport(log, "b")])
    assert (other_job.ingested, other_job.unchanged, other_job.gpu_samples) == (1, 0, 2)
    # the earlier import's samples stay (nothing is dropped unasked), and the run says so
    assert _imported_before(lab) == ["imported before for job 'a'"]
    berlin = lab.ingest(csv_imports=[CsvImport(log, "b", timezone="Europe/Berlin")])
    assert berlin.ingested == 1
    # 12:00 in Berlin (summer time, UTC+2) is 10:00Z; b's reading in UTC is replaced (the same
    # job's log read again with a corrected zone), a's stays
    assert _samples(lab) == [
        ("a", "2024-07-01 12:00:00", 50.0),
        ("a", "2024-07-01 12:00:01", 70.0),
        ("b", "2024-07-01 10:00:00", 50.0),
        ("b", "2024-07-01 10:00:01", 70.0),
    ]
    back = lab.ingest(csv_imports=[CsvImport(log, "b", timezone="Europe/Berlin")])
    assert (back.ingested, back.unchanged) == (0, 1)
    # the log grown, imported with the same arguments: an upsert, no warning about other arguments
    # (the new line's sample counted, the two read before not again: session 19)
    log.write_text(HEADED + "2024/07/01 12:00:02.000, 0, 90 %\n")
    os.utime(log, (1719878400, 1719878400))
    grown = lab.ingest(csv_imports=[CsvImport(log, "b", timezone="Europe/Berlin")])
    assert (grown.ingested, grown.gpu_samples, _imported_before(lab)) == (1, 1, [])


def test_a_log_imported_again_for_its_job_with_a_corrected_zone_or_host_replaces_its_samples(lab: Lab) -> None:
    log = _log(lab, HEADED)
    lab.write_job("a", {"job_id": "a", "status": "completed", "history": [{"step": 1}]})
    lab.ingest(csv_imports=[CsvImport(log, "a")])
    berlin = lab.ingest(csv_imports=[CsvImport(log, "a", timezone="Europe/Berlin")])
    assert berlin.gpu_samples == 2
    # 12:00 in Berlin (UTC+2 in July) is 10:00Z: the UTC reading (12:00Z) is gone, samples and minutes
    assert _samples(lab) == [("a", "2024-07-01 10:00:00", 50.0), ("a", "2024-07-01 10:00:01", 70.0)]
    assert lab.query("SELECT CAST(minute AS VARCHAR), samples FROM gpu_minutes") == [("2024-07-01 10:00:00", 2)]
    a = lab.analytics("a")
    assert a is not None
    # (50 + 70) / 2 = 60; one GPU, first and last sample of the Berlin reading
    assert a["resource_utilization"]["average_gpu_utilization"] == pytest.approx(60.0)
    ((gpu),) = a["gpus"]
    assert (gpu["samples"], gpu["first_sample"], gpu["last_sample"]) == (
        2,
        "2024-07-01T10:00:00Z",
        "2024-07-01T10:00:01Z",
    )
    ((warnings,),) = lab.own_query("SELECT CAST(warnings AS VARCHAR) FROM ingest_files WHERE kind = 'nvidia_smi'")
    assert json.loads(warnings) == [
        "imported before for job 'a' with other arguments (timezone, host or columns): "
        "its 2 sample(s) replaced by this import's"
    ]
    lab.ingest(csv_imports=[CsvImport(log, "a", timezone="Europe/Berlin", host="node-1")])
    assert lab.query("SELECT host, CAST(ts AS VARCHAR) FROM gpu_samples ORDER BY 1, 2") == [
        ("node-1", "2024-07-01 10:00:00"),
        ("node-1", "2024-07-01 10:00:01"),
    ]


def test_a_ledger_row_with_the_arguments_digest_alone_is_the_same_import(tmp_path: Path) -> None:
    # DuckDB only (a ledger row edited in place): session 11 wrote "size:mtime digest", without the
    # arguments; the same log with the same arguments stays unchanged after the upgrade
    lab = Lab(tmp_path)
    log = _log(lab, HEADED)
    lab.ingest(csv_imports=[CsvImport(log, "a")])
    con = duckdb.connect(str(lab.db))
    con.execute("UPDATE ingest_files SET fingerprint = array_to_string(string_split(fingerprint, ' ')[1:2], ' ')")
    con.close()
    again = lab.ingest(csv_imports=[CsvImport(log, "a")])
    assert (again.ingested, again.unchanged) == (0, 1)
    # another zone then adds, as in session 11 (the earlier arguments are not known): both readings stay
    lab.ingest(csv_imports=[CsvImport(log, "a", timezone="Europe/Berlin")])
    assert len(_samples(lab)) == 4


def test_a_failed_replacement_leaves_the_earlier_import_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # DuckDB only: the removal and the new samples are one transaction of the stage on either engine
    lab = Lab(tmp_path)
    log = _log(lab, HEADED)
    lab.ingest(csv_imports=[CsvImport(log, "a")])

    def broken(*_: Any) -> set[str]:
        raise OSError("disk full")

    monkeypatch.setattr(nvidia_smi_format.gpu_samples, "store", broken)
    with pytest.raises(OSError, match="disk full"):
        lab.ingest(csv_imports=[CsvImport(log, "a", timezone="Europe/Berlin")])
    monkeypatch.undo()
    assert _samples(lab) == [("a", "2024-07-01 12:00:00", 50.0), ("a", "2024-07-01 12:00:01", 70.0)]
    lab.ingest(csv_imports=[CsvImport(log, "a", timezone="Europe/Berlin")])
    assert _samples(lab) == [("a", "2024-07-01 10:00:00", 50.0), ("a", "2024-07-01 10:00:01", 70.0)]


# --- F7: rows with samples and seconds whose seconds total 0 -----------------------------------


def test_rows_with_samples_and_zero_seconds_give_no_throughput_and_say_why(lab: Lab) -> None:
    entry = {"iteration_time": 0.0, "samples": 10}
    lab.write_job(
        "z",
        {
            "job_id": "z",
            "status": "completed",
            "history": [
                {"step": 1, "timestamp": "2026-11-02T08:00:01Z", "samples_per_second": 5.0, **entry},
                {"step": 2, "timestamp": "2026-11-02T08:00:02Z", "samples_per_second": 7.0, **entry},
            ],
        },
    )
    lab.ingest()
    a = lab.analytics("z")
    assert a is not None
    # both rows have samples and seconds: 20 samples / 0 s has no value (not the plain mean 6.0)
    assert a["performance"]["average_samples_per_second"] is None
    assert not [w for w in a["warnings"] if "plain mean" in w]
    (why,) = [w for w in a["warnings"] if w.startswith("average_samples_per_second is null")]
    assert "0 seconds" in why


# --- F4: a job with GPU samples takes every resource figure from them --------------------------


def test_a_job_with_samples_takes_no_figure_from_its_step_readings(lab: Lab) -> None:
    reading = {"index": 0, "utilization_percent": 10.0, "memory_used_mb": 5000, "memory_total_mb": 8000}
    lab.write_job(
        "s",
        {
            "job_id": "s",
            "status": "completed",
            "history": [
                {"step": 1, "timestamp": "2024-07-01T12:00:00Z", "gpus": [{**reading, "temperature_c": 70}]},
                {"step": 2, "timestamp": "2024-07-01T12:00:01Z", "gpus": [{**reading, "temperature_c": 80}]},
            ],
        },
    )
    log = _log(
        lab,
        "timestamp, index, utilization.gpu [%], memory.used [MiB]\n"
        "2024/07/01 12:00:00.000, 0, 50 %, 100 MiB\n2024/07/01 12:00:01.000, 0, 70 %, 300 MiB\n",
    )
    lab.ingest(csv_imports=[CsvImport(log, "s")])
    a = lab.analytics("s")
    assert a is not None
    # the two samples: util (50 + 70) / 2, memory (100 + 300) / 2, peak 300; they carry no
    # temperature, so none (not the step readings' 75 and 80)
    assert a["resource_utilization"] == {
        "average_gpu_utilization": 60.0,
        "average_gpu_memory_mb": 200.0,
        "peak_gpu_memory_mb": 300.0,
        "average_gpu_temp_celsius": None,
        "peak_gpu_temp_celsius": None,
    }
    assert (
        "average_gpu_temp_celsius and peak_gpu_temp_celsius are null: no GPU sample (with samples, step readings"
        " are not used) has a finite temperature"
    ) in a["warnings"]


# --- F9: the GPU readings of a job whose raw samples retention dropped ------------------------


def test_gpu_readings_after_retention_come_from_the_minute_rollups(lab: Lab) -> None:
    from runlytics.warehouse import history

    for job in ("old", "new"):
        lab.write_job(job, {"job_id": job, "status": "completed", "history": [{"step": 1}]})
    new = lab.root.parent / "new.csv"
    new.write_text("timestamp, index, utilization.gpu [%]\n2024/03/01 12:00:00.000, 0, 50 %\n")
    old = lab.root.parent / "old.csv"
    old.write_text(
        "timestamp, index, utilization.gpu [%]\n"
        "2024/01/01 12:00:00.000, 0, 10 %\n2024/01/01 12:00:01.000, 0, 30 %\n2024/01/01 12:00:02.000, 0, 30 %\n"
        "2024/01/01 12:01:00.000, 0, 90 %\n"
    )
    lab.ingest(csv_imports=[CsvImport(new, "new")], keep_raw_days=30)
    lab.ingest(csv_imports=[CsvImport(old, "old")], keep_raw_days=30)  # 60 days before: raw samples dropped
    assert lab.query("SELECT count(*) FROM gpu_samples WHERE job_id = 'old'") == [(0,)]
    with lab._reader() as con:
        source, readings, cursor = history.gpu_readings(con, "old", None, None, 1)
        assert cursor is not None
        _, second, last = history.gpu_readings(con, "old", None, cursor, 1)
        chart = history.gpu_readings_downsampled(con, "old", None, 10)
    assert source == "gpu_minutes" and last is None
    # the second minute: its one sample
    assert [(r["ts"], r["samples"], r["utilization_percent"]) for r in second] == [("2024-01-01T12:01:00Z", 1, 90.0)]
    # the first minute: 3 samples, utilization (10 + 30 + 30) / 3, least 10, most 30
    (minute,) = readings
    assert (minute["ts"], minute["last_ts"], minute["samples"]) == ("2024-01-01T12:00:00Z", "2024-01-01T12:00:02Z", 3)
    assert minute["utilization_percent"] == pytest.approx(70 / 3)
    assert (minute["minimum"]["utilization_percent"], minute["maximum"]["utilization_percent"]) == (10.0, 30.0)
    assert chart.source == "gpu_minutes" and chart.resolution == "minute"
    assert [r["utilization_percent"] for r in chart.readings] == [pytest.approx(70 / 3), 90.0]
    from fastapi.testclient import TestClient

    from runlytics.api.app import create_app

    page = TestClient(create_app(lab.warehouse(), token=None)).get("/api/training/old/gpus").json()
    assert (page["source"], page["resolution"], page["bucket_seconds"]) == ("gpu_minutes", "minute", 60)
    assert [r["samples"] for r in page["readings"]] == [3, 1]
