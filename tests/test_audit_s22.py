"""Audit 22: what independent readers of inputs.md and insights.md found the product doing otherwise.

1. A later progress.json snapshot whose job-level value was refused (a time in another zone's
   name, a setting of the wrong type) wiped the stored value: the job row was replaced whole, the
   refused field NULL. A refused value now keeps the stored one (inputs.md: a file that breaks the
   contract never loses data already ingested); a field left out, or null, is still replaced.
2. Two `checkpoints` items of one step in one file: the last item alone was kept, so a writer
   listing a checkpoint when saved and again when evaluated lost its path and saved_at (one ingest
   of the final file differed from ingests of its prefixes). Items of a step now complete each other.
3. A checkpoint `path` of "" was stored as the path, hiding the `checkpoint-<step>/` folder's.
4. gpu_idle counted a -Infinity utilization as idle time but not as time with a reading: a GPU
   read at -Infinity twice and at 50 % once was idle "200.0 % of its time" (revision 0041).
5. silent_running printed its silence and limit alike ("1800 s, longer than 1800 s").
6. Two warnings of job_analytics gave a false reason: "end unknown: no ... step timestamps" where
   only the last row lacks one; "the GPU samples carry no power readings" where one sample does.
7. A spool line without `ts` or `gpu_index` was skipped as "ts 'None' is not a timestamp".
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

from conftest import Lab, read_file
from file_times import write

from runlytics.warehouse import db, history, insight_list

JOB_COLUMNS = (
    "created_at, started_at, ended_at, updated_at, model_name, batch_size, save_steps, "
    "target_samples_per_second, gpu_count, current_step, total_steps, CAST(config AS VARCHAR)"
)


def job(lab: Lab, job_id: str) -> dict[str, Any]:
    rows = lab.query(f"SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = $j", {"j": job_id})
    assert len(rows) == 1, rows
    names = [name.strip() for name in JOB_COLUMNS.replace("CAST(config AS VARCHAR)", "config").split(",")]
    return dict(zip(names, rows[0], strict=True))


FIRST = {
    "job_id": "j",
    "status": "running",
    "created_at": "2026-03-01T09:00:00Z",
    "started_at": "2026-03-01T09:30:00Z",
    "updated_at": "2026-03-01T10:00:00Z",
    "current_step": 10,
    "total_steps": 100,
    "config": {
        "model_name": "m",
        "batch_size": 8,
        "save_steps": 50,
        "target_samples_per_second": 20,
        "gpu_count": 2,
    },
    "history": [{"step": 10, "timestamp": "2026-03-01T10:00:00Z", "loss": 2.0}],
}


def test_a_refused_job_value_keeps_the_stored_one(lab: Lab) -> None:
    lab.write_job("j", FIRST)
    lab.ingest()
    later = {
        **FIRST,
        "created_at": "yesterday",
        "started_at": "2026-03-01 09:30:00 CST",
        "updated_at": "2026-03-01T10:01:00Z",
        "current_step": -1,
        "total_steps": "100",
        "config": {
            "model_name": 5,
            "batch_size": "8",
            "save_steps": 0,
            "target_samples_per_second": float("nan"),
            "gpu_count": 1.5,
        },
        "history": [{"step": 20, "timestamp": "2026-03-01T10:01:00Z", "loss": 1.9}],
    }
    lab.write_job("j", later)
    summary = lab.ingest()
    assert summary.warnings, "every refused value is still said"
    row = job(lab, "j")
    assert row == {
        "created_at": datetime(2026, 3, 1, 9, 0),
        "started_at": datetime(2026, 3, 1, 9, 30),
        "ended_at": None,
        "updated_at": datetime(2026, 3, 1, 10, 1),  # the new snapshot's, read
        "model_name": "m",
        "batch_size": 8.0,
        "save_steps": 50,
        "target_samples_per_second": 20.0,
        "gpu_count": 2,
        "current_step": 10,
        "total_steps": 100,
        # the config is kept whole, as written (its refused settings are not read from it)
        "config": '{"model_name":5,"batch_size":"8","save_steps":0,"target_samples_per_second":NaN,"gpu_count":1.5}',
    }
    assert lab.query("SELECT step FROM steps ORDER BY step") == [(10,), (20,)]


def test_a_left_out_or_null_job_value_is_replaced(lab: Lab) -> None:
    """The snapshot is the job's state: what it no longer gives is no longer known."""
    lab.write_job("j", {**FIRST, "ended_at": "2026-03-01T10:00:00Z"})
    lab.ingest()
    later = {key: value for key, value in FIRST.items() if key not in ("created_at", "current_step")}
    later.update(
        updated_at="2026-03-01T10:01:00Z",
        ended_at=None,  # resumed: no longer ended
        config={"model_name": "m", "batch_size": None},  # save_steps, target and gpu_count left out
    )
    lab.write_job("j", later)
    lab.ingest()
    row = job(lab, "j")
    assert (row["created_at"], row["ended_at"], row["current_step"]) == (None, None, None)
    assert (row["batch_size"], row["save_steps"], row["target_samples_per_second"], row["gpu_count"]) == (
        None,
        None,
        None,
        None,
    )
    assert (row["started_at"], row["model_name"], row["total_steps"]) == (datetime(2026, 3, 1, 9, 30), "m", 100)


def test_a_refused_updated_at_keeps_the_stored_time_and_the_later_read_wins(lab: Lab) -> None:
    lab.write_job("j", FIRST)
    lab.ingest()
    lab.write_job("j", {**FIRST, "updated_at": "not a time", "status": "completed", "current_step": 20})
    lab.ingest()
    row = job(lab, "j")
    assert (row["updated_at"], row["current_step"]) == (datetime(2026, 3, 1, 10, 0), 20)
    assert lab.query("SELECT status FROM jobs") == [("completed",)]


def test_a_refused_value_of_a_new_job_is_null(lab: Lab) -> None:
    lab.write_job("j", {**FIRST, "started_at": "2026-03-01 09:30:00 CST"})
    summary = lab.ingest()
    assert job(lab, "j")["started_at"] is None
    assert "started_at" in str(summary.listed_warnings)


def test_checkpoint_items_of_one_step_complete_each_other(lab: Lab) -> None:
    items = [
        {"step": 500, "path": "/ckpt/checkpoint-500", "saved_at": "2026-03-01T10:00:00Z"},
        {"step": 500, "eval_loss": 0.42},
        {"step": 600, "eval_loss": 0.5},
        {"step": 600, "path": "/ckpt/600", "eval_loss": 0.4},  # the later item's value wins
    ]
    lab.write_job("j", {**FIRST, "checkpoints": items})
    lab.ingest()
    assert lab.query("SELECT step, path, saved_at, eval_loss FROM checkpoints ORDER BY step") == [
        (500, "/ckpt/checkpoint-500", datetime(2026, 3, 1, 10, 0), 0.42),
        (600, "/ckpt/600", None, 0.4),
    ]


def test_an_empty_checkpoint_path_is_no_path(lab: Lab) -> None:
    folder = lab.write_job("j", {**FIRST, "checkpoints": [{"step": 40, "path": ""}, {"step": 50, "path": "  "}]}).parent
    (folder / "checkpoint-40").mkdir()
    lab.ingest()
    assert lab.query("SELECT step, path FROM checkpoints ORDER BY step") == [
        (40, str(folder / "checkpoint-40")),
        (50, None),
    ]


# --- silent_running's message, two warnings (revision 0041; GPU idleness: test_idle_mutants_s22) -----


def test_silent_runnings_message_tells_its_figures_apart(lab: Lab) -> None:
    lab.write_job("quiet", {"job_id": "quiet", "status": "running", "updated_at": "2026-01-05T10:00:00Z"})
    lab.ingest()
    with db.connection(lab.db) as con:
        # the run's time, as_of, a microsecond past the 1800 s limit
        con.execute("UPDATE ingest_runs SET started_at = TIMESTAMP '2026-01-05 10:30:00.000001'")
        rows = con.execute("SELECT value, message FROM job_insights WHERE kind = 'silent_running'").fetchall()
    assert rows == [(1800.000001, "The job is running but has logged nothing for 1800.000001 s, longer than 1800 s.")]


def test_the_end_unknown_warning_says_the_last_row_has_no_timestamp(lab: Lab) -> None:
    history = [{"step": 10, "timestamp": "2026-03-01T10:00:00Z", "iteration_time": 1.0}, {"step": 20}]
    lab.write_job("w", {"job_id": "w", "status": "running", "history": history})
    lab.ingest()
    warnings = (lab.analytics("w") or {})["warnings"]
    assert (
        "end unknown: no ended_at (of a finished job) or updated_at, and the last step row has no timestamp" in warnings
    )


def test_the_energy_warning_says_no_sample_and_the_next_both_carry_power(lab: Lab, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    write(
        spool / "a.jsonl",
        '{"ts": 1767607200, "host": "h", "job_id": "p", "gpu_index": 0, "utilization_percent": 50, "power_w": 300}\n'
        '{"ts": 1767607210, "host": "h", "job_id": "p", "gpu_index": 0, "utilization_percent": 50}\n',
    )
    lab.write_job("p", {"job_id": "p", "status": "completed", "history": [{"step": 1, "iteration_time": 10.0}]})
    assert lab.ingest(spool_root=spool, keep_raw_days=0).failed == 0
    job = lab.analytics("p") or {}
    assert "energy is null: no GPU sample and the next of its GPU both carry a finite power reading" in job["warnings"]


def test_a_spool_line_without_ts_or_gpu_index_says_so(lab: Lab, tmp_path: Path) -> None:
    """They read "ts 'None' is not a timestamp" and "gpu_index 'None' is not a GPU index"."""
    spool = tmp_path / "spool"
    write(
        spool / "a.jsonl",
        '{"ts": 1767607200, "job_id": "p", "gpu_index": 0, "utilization_percent": 50}\n'
        '{"job_id": "p", "gpu_index": 0, "utilization_percent": 50}\n'
        '{"ts": null, "job_id": "p", "gpu_index": 0}\n'
        '{"ts": 1767607210, "job_id": "p", "utilization_percent": 50}\n'
        '{"ts": 1767607220, "job_id": "p", "gpu_index": null}\n',
    )
    summary = lab.ingest(spool_root=spool, keep_raw_days=0)
    messages = sorted(message for _, message in summary.listed_warnings)
    assert messages == [
        "line 2: no ts, skipped",
        "line 3: no ts, skipped",
        "line 4: no gpu_index, skipped",
        "line 5: no gpu_index, skipped",
    ]
    assert lab.query("SELECT count(*) FROM gpu_samples") == [(1,)]


def test_a_spool_file_opened_by_a_byte_order_mark_reads_alike_on_every_road(lab: Lab, tmp_path: Path) -> None:
    """A mark on a line of its own: DuckDB's CSV reader of the whole file dropped it, the text road
    (a large or resumed file's) warned "line 1: not JSON"; both now read blanks in its place."""
    spool = tmp_path / "spool"
    sample = '{"ts": %d, "job_id": "b", "gpu_index": 0, "utilization_percent": 50}\n'
    data = b"\xef\xbb\xbf\n" + (sample % 1767607200 + sample % 1767607210).encode()
    write(spool / "a.jsonl", data)
    # a name DuckDB would read as a pattern: this file takes the text road
    write(spool / "b[1].jsonl", data.replace(b'"b"', b'"c"'))
    summary = lab.ingest(spool_root=spool, keep_raw_days=0)
    assert summary.listed_warnings == []
    assert lab.query("SELECT job_id, count(*) FROM gpu_samples GROUP BY ALL ORDER BY 1") == [("b", 2), ("c", 2)]


def test_a_spool_line_duckdb_refuses_with_a_message_it_cannot_decode_is_skipped(lab: Lab, tmp_path: Path) -> None:
    """A JSON array holding a non-ASCII text: DuckDB's reader refused it with a message cut inside a
    UTF-8 character, which its binding raised as UnicodeDecodeError, and the whole run stopped."""
    spool = tmp_path / "spool"
    line = '[{"ts": 1793610000.875, "host": "node-01", "job_id": "\u0080", "gpu_index": 0, "gpu_uuid": "GPU-a", '
    line += '"utilization_percent": 0.0, "memory_used_mb": 0.0, "memory_total_mb": 0.0, "temperature_c": 0.0}]\n'
    good = '{"ts": 1767607200, "job_id": "b", "gpu_index": 0, "utilization_percent": 50}\n'
    write(spool / "a.jsonl", line + good)
    summary = lab.ingest(spool_root=spool, keep_raw_days=0)
    assert [message for _, message in summary.listed_warnings] == ["line 1: not a JSON object, skipped"]
    assert lab.query("SELECT job_id FROM gpu_samples") == [("b",)]


def test_a_spool_host_or_uuid_of_another_type_is_said_and_numbered_hosts_stay_apart(lab: Lab, tmp_path: Path) -> None:
    """A host 1 and a host 2 both became '' silently (one GPU: the later sample overwrote the
    other); a host ["x"] and a gpu_uuid 12345 were dropped without a warning."""
    spool = tmp_path / "spool"
    write(
        spool / "a.jsonl",
        '{"ts": 1767607200, "host": 1, "job_id": "h", "gpu_index": 0, "utilization_percent": 10}\n'
        '{"ts": 1767607200, "host": 2, "job_id": "h", "gpu_index": 0, "utilization_percent": 90}\n'
        '{"ts": 1767607200, "host": ["x"], "job_id": "h", "gpu_index": 1, "utilization_percent": 50}\n'
        '{"ts": 1767607200, "host": "n", "job_id": "h", "gpu_index": 2, "gpu_uuid": 12345, "utilization_percent": 5}\n',
    )
    summary = lab.ingest(spool_root=spool, keep_raw_days=0)
    assert sorted(message for _, message in summary.listed_warnings) == [
        """line 3: host "['x']" is not a string or a whole number, dropped""",
        "line 4: gpu_uuid '12345' is not a string, dropped",
    ]
    assert lab.query("SELECT host, gpu_key, utilization_percent FROM gpu_samples ORDER BY host, gpu_key") == [
        ("", "#1", 50.0),
        ("1", "#0", 10.0),
        ("2", "#0", 90.0),
        ("n", "#2", 5.0),
    ]


def test_a_tool_log_runs_checkpoint_folders_are_its_checkpoints(lab: Lab) -> None:
    """A LLaMA-Factory run beside checkpoint-20/ (no trainer state yet: a trainer writes it last)
    had no checkpoints: discovery took the folder for a tool-log run only, whose folders no reader
    looked at, and checkpoint folders were read before the tool logs made the job."""
    run = lab.root / "lf"
    lines = [
        {"current_steps": s, "total_steps": 40, "loss": 2.0 - s / 40, "elapsed_time": f"0:00:{s:02d}"}
        for s in (10, 20, 30, 40)
    ]
    write(run / "trainer_log.jsonl", "".join(f"{json.dumps(line)}\n" for line in lines))
    (run / "checkpoint-20").mkdir()
    (run / "checkpoint-20" / "adapter_config.json").write_text("{}")
    lab.ingest()
    assert lab.query("SELECT job_id, step, source FROM checkpoints") == [("lf", 20, "folder")]
    job = lab.analytics("lf") or {}
    assert job["checkpoints"]["total_checkpoints"] == 1
    assert job["checkpoints"]["final_checkpoint"] == "checkpoint-20"


def test_a_lightning_csv_opened_by_a_byte_order_mark_reads_its_header(lab: Lab) -> None:
    write(lab.root / "v" / "metrics.csv", b"\xef\xbb\xbfstep,train_loss\r\n10,2.0\r\n20,1.5\r\n")
    summary = lab.ingest()
    assert summary.listed_warnings == []
    assert lab.query("SELECT step, value FROM metric_values WHERE name = 'train_loss' ORDER BY step") == [
        (10, 2.0),
        (20, 1.5),
    ]


def test_a_llamafactory_text_total_steps_is_said_and_a_null_is_not_logged(lab: Lab) -> None:
    """A null is "not logged at this line" (older LogCallbacks write eval_loss: null on every line:
    a warning each would flood the run); a total_steps that is no whole number was ignored silently."""
    lines = [
        '{"current_steps": 10, "total_steps": 20, "loss": null, "lr": 0.001, "elapsed_time": "0:00:10"}',
        '{"current_steps": 20, "total_steps": "20", "loss": 1.5, "elapsed_time": "0:00:20"}',
    ]
    write(lab.root / "lf" / "trainer_log.jsonl", "\n".join(lines) + "\n")
    summary = lab.ingest()
    assert [message for _, message in summary.listed_warnings] == [
        "line 2: total_steps '20' is not a whole number, ignored",
    ]
    # the total of the line that gives one as a number: 20/20, completed
    assert lab.query("SELECT status, total_steps FROM jobs") == [("completed", 20)]


def test_a_chart_of_a_job_whose_samples_retention_pruned_says_gpu_minutes(lab: Lab, tmp_path: Path) -> None:
    """A span of more minutes than the chart's share skipped the check and said gpu_samples."""
    spool = tmp_path / "spool"
    samples = [
        f'{{"ts": {1767607200 + 3600 * h}, "job_id": "q", "gpu_index": 0, "utilization_percent": {h % 100}}}\n'
        for h in range(48)
    ]
    write(spool / "a.jsonl", "".join(samples))
    lab.write_job("q", {"job_id": "q", "status": "completed", "history": [{"step": 1, "iteration_time": 1.0}]})
    assert lab.ingest(spool_root=spool, keep_raw_days=1).failed == 0  # January: aged out
    with read_file(lab.db) as con:
        assert history.gpu_readings_downsampled(con, "q", None, 10).source == "gpu_minutes"
        assert history.gpu_readings_downsampled(con, "q", None, 10_000).source == "gpu_minutes"
    assert lab.query("SELECT count(*) < 48 FROM gpu_samples") == [(True,)]  # some pruned (a run prunes within a budget)


# --- trainer states: the run's settings and status follow the state that ranks first ---------------


def trainer_state(
    path: Path, last: int, *, global_step: int, max_steps: int, save_steps: int, summary: bool = False
) -> None:
    history: list[dict[str, Any]] = [
        {"step": s, "loss": 2 - s / 1000, "learning_rate": 1e-4, "epoch": s / 100} for s in range(50, last + 1, 50)
    ]
    if summary:
        history.append({"step": last, "train_runtime": 100.0, "train_samples_per_second": 10.0, "train_loss": 1.9})
    doc = {"log_history": history, "global_step": global_step, "max_steps": max_steps, "save_steps": save_steps,
           "logging_steps": 50}  # fmt: skip
    write(path, json.dumps(doc))


def test_an_older_checkpoint_read_later_keeps_the_newest_states_settings(lab: Lab) -> None:
    """A resumed run whose arguments changed: checkpoint-100/ first read after checkpoint-300/
    replaced max_steps and save_steps with its own (total_steps 200, frequency 100)."""
    job = lab.root / "res"
    trainer_state(job / "checkpoint-200" / "trainer_state.json", 200, global_step=200, max_steps=200, save_steps=100)
    trainer_state(job / "checkpoint-300" / "trainer_state.json", 300, global_step=300, max_steps=400, save_steps=50)
    lab.ingest()
    trainer_state(job / "checkpoint-100" / "trainer_state.json", 100, global_step=100, max_steps=200, save_steps=100)
    lab.ingest()
    assert lab.query("SELECT global_step, max_steps, save_steps FROM trainer_runs") == [(300, 400, 50)]
    assert lab.query("SELECT total_steps, current_step FROM jobs") == [(400, 300)]
    assert (lab.analytics("res") or {})["checkpoints"]["checkpoint_frequency_steps"] == 50


def test_a_continued_run_is_not_completed_by_its_first_runs_summary(lab: Lab) -> None:
    """A run finished at step 200 (its own state with the summary), then continued to max_steps 600:
    checkpoint-400/ is the newest state, without a summary. It stayed completed (completed once
    seen stayed, across the batch's states and across runs), with the old run's train_runtime."""
    job = lab.root / "cont"
    trainer_state(job / "checkpoint-200" / "trainer_state.json", 200, global_step=200, max_steps=200, save_steps=100)
    trainer_state(job / "trainer_state.json", 200, global_step=200, max_steps=200, save_steps=100, summary=True)
    lab.ingest()
    assert lab.query("SELECT status FROM jobs") == [("completed",)]
    trainer_state(job / "checkpoint-400" / "trainer_state.json", 400, global_step=400, max_steps=600, save_steps=200)
    lab.ingest()
    assert lab.query("SELECT completed, train_runtime, max_steps FROM trainer_runs") == [(False, None, 600)]
    assert lab.query("SELECT status, current_step, total_steps FROM jobs") == [("unknown", 400, 600)]
    (lab.root.parent / "fresh").mkdir()
    fresh = lab.sharing(lab.root.parent / "fresh")
    shutil.copytree(job, fresh.root / "cont")
    fresh.ingest()
    assert fresh.query("SELECT completed, train_runtime, max_steps FROM trainer_runs") == [(False, None, 600)]


def test_the_fleets_insights_carry_as_of_before_any_job(lab: Lab) -> None:
    """null before: the newest of no job's computation (insights.md: every answer carries as_of)."""
    lab.ingest()  # a run over no job: as_of is its start
    with read_file(lab.db) as con:
        (as_of,) = con.execute(insight_list.FLEET_AS_OF).fetchone() or (None,)
        (started,) = con.execute("SELECT max(started_at) FROM ingest_runs").fetchone() or (None,)
    assert as_of is not None and as_of == started


# --- the review of session 22's own changes ----------------------------------------------------


def test_a_refused_value_keeps_only_a_progress_json_rows_value(lab: Lab) -> None:
    """A trainer state's row of the job is not kept from: one ingest reads the progress.json first,
    so the result would depend on whether the state was read in an earlier run."""
    trainer_state(lab.root / "j" / "trainer_state.json", 40, global_step=40, max_steps=100, save_steps=10)
    lab.ingest()
    assert lab.query("SELECT current_step, total_steps, save_steps FROM jobs") == [(40, 100, 10)]
    lab.write_job("j", {"job_id": "j", "current_step": "x", "total_steps": "lots", "config": {"save_steps": "ten"}})
    lab.ingest()
    assert lab.query("SELECT current_step, total_steps, save_steps FROM jobs") == [(None, None, None)]


def test_a_refused_config_keeps_the_settings_read_from_it(lab: Lab) -> None:
    lab.write_job("j", {**FIRST})
    lab.ingest()
    lab.write_job("j", {**FIRST, "updated_at": "2026-03-01T10:01:00Z", "config": "oops"})
    lab.ingest()
    row = job(lab, "j")
    assert (row["model_name"], row["batch_size"], row["save_steps"], row["gpu_count"]) == ("m", 8.0, 50, 2)
    assert (
        row["config"]
        == '{"model_name":"m","batch_size":8,"save_steps":50,"target_samples_per_second":20,"gpu_count":2}'
    )


def test_of_two_states_without_global_step_the_jobs_own_wins_in_any_order(lab: Lab) -> None:
    folder = lab.root / "ng"

    def state(path: Path, summary: bool) -> None:
        history: list[dict[str, Any]] = [{"step": 5, "loss": 1.0}]
        if summary:
            history.append({"step": 5, "train_runtime": 9.0, "train_samples_per_second": 1.0, "train_loss": 1.0})
        write(path, json.dumps({"log_history": history}))

    state(folder / "trainer_state.json", summary=True)
    lab.ingest()
    state(folder / "checkpoint-5" / "trainer_state.json", summary=False)
    lab.ingest()
    assert lab.query("SELECT completed, train_runtime, source_file FROM trainer_runs") == [
        (True, 9.0, str(folder / "trainer_state.json"))
    ]


def test_a_spool_file_opened_by_a_byte_order_mark_grows_without_being_read_again(lab: Lab, tmp_path: Path) -> None:
    """The blanks that stand for the mark entered the spool's record of the file: the next run
    took the file for another and read it again from the start, warning of lost lines."""
    spool = tmp_path / "spool"
    sample = '{"ts": %d, "job_id": "b", "gpu_index": 0, "utilization_percent": 50}\n'
    path = write(spool / "a.jsonl", b"\xef\xbb\xbf" + (sample % 1767607200 + sample % 1767607210).encode())
    assert lab.ingest(spool_root=spool, keep_raw_days=0).listed_warnings == []
    write(path, path.read_bytes() + (sample % 1767607220).encode())
    summary = lab.ingest(spool_root=spool, keep_raw_days=0)
    assert summary.listed_warnings == []
    assert summary.gpu_samples == 1  # the new line alone
    assert lab.query("SELECT count(*) FROM gpu_samples") == [(3,)]
