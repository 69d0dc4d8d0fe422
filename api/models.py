"""Response models: the OpenAPI schema of every endpoint (field names of analytics.md).

Every field has a description, in the words of shared/spec/analytics.md for the analytics
figures (tests/test_openapi.py checks that none is missing). A figure that cannot be computed
from the data at hand is null, never 0 in disguise. The three answers of analytics.md's API
(one job's analytics, the summary, the comparison) carry an example: the worked example of
analytics.md.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

NEXT_CURSOR = "the cursor of the next page (pass it as `cursor`); null on the last page"
NEXT = "the URL of the next page (after the configured base URL, else relative); null on the last page"


class Duration(BaseModel):
    start_time: str | None = Field(
        description="`started_at`; else the first step row's timestamp minus its seconds; else null (ISO-8601)"
    )
    end_time: str | None = Field(
        description="`ended_at` for a job in a terminal status (completed, failed, cancelled) that has one; "
        "else the latest of the last step row's timestamp and `updated_at` (ISO-8601)"
    )
    total_seconds: float | None = Field(description="end − start, in seconds")
    training_seconds: float | None = Field(description="Σ known seconds of the step rows (all rows)")
    overhead_seconds: float | None = Field(description="max(0, `total_seconds` − `training_seconds`)")


class Performance(BaseModel):
    total_iterations: int | None = Field(description="the highest step seen (or `current_step`, if higher)")
    total_samples: float | None = Field(description="Σ known samples of the step rows")
    average_samples_per_second: float | None = Field(
        description="Σ samples / Σ seconds over the rows where both are known (time-weighted); when no row "
        "has both, the plain mean of `samples_per_second`, with a warning"
    )
    peak_samples_per_second: float | None = Field(description="the highest per-row `samples_per_second`")
    average_iteration_time: float | None = Field(
        description="Σ seconds / Σ Δ (iterations) over the rows whose seconds are known, in seconds per iteration"
    )


class Losses(BaseModel):
    initial_loss: float | None = Field(description="the loss of the lowest step that has one (finite values only)")
    final_loss: float | None = Field(description="the loss of the highest step that has one (finite values only)")
    best_loss: float | None = Field(description="the lowest loss")
    loss_reduction_percent: float | None = Field(
        description="100 × (initial − final) / initial; null when initial is 0"
    )
    final_eval_loss: float | None = Field(description="the eval loss of the highest step that has one")
    best_eval_loss: float | None = Field(description="the lowest eval loss")


class ResourceUtilization(BaseModel):
    average_gpu_utilization: float | None = Field(
        description="mean GPU utilization, percent: over the job's GPU samples (all GPUs, all times) when it "
        "has any, else over the GPU readings embedded in its step rows"
    )
    average_gpu_memory_mb: float | None = Field(description="mean GPU memory used, MiB")
    peak_gpu_memory_mb: float | None = Field(description="max GPU memory used, MiB")
    average_gpu_temp_celsius: float | None = Field(description="mean GPU temperature, °C")
    peak_gpu_temp_celsius: float | None = Field(description="max GPU temperature, °C")


class Checkpoints(BaseModel):
    total_checkpoints: int | None = Field(
        description="|C|: the checkpoint steps from the `checkpoints` list, the `checkpoint-<step>` folders "
        "and trainer states"
    )
    checkpoint_frequency_steps: float | None = Field(
        description="the config's `save_steps` when set; else the median gap between consecutive checkpoint "
        "steps, counting the first from 0; else null"
    )
    final_checkpoint: str | None = Field(description="the highest step of C, named `checkpoint-<step>`")
    best_checkpoint: str | None = Field(
        description="the trainer's own `best_model_checkpoint` when recorded; else the one with the lowest "
        "`eval_loss`; else the one whose training loss, read at the last logged step at or before it, is "
        "lowest; ties go to the earlier checkpoint"
    )


class Efficiency(BaseModel):
    gpu_utilization_score: float | None = Field(description="`average_gpu_utilization` (0–100)")
    throughput_score: float | None = Field(
        description="min(100, 100 × `average_samples_per_second` / reference), the reference being the "
        "config's `target_samples_per_second` when positive, else `peak_samples_per_second` (0–100)"
    )
    overall_score: float | None = Field(description="the mean of those of the two scores that are known (0–100)")


class Energy(BaseModel):
    total_energy_wh: float | None = Field(
        description="Σ `energy_wh` over the job's GPUs, in watt-hours; null without power samples"
    )
    energy_per_1000_samples_wh: float | None = Field(description="`total_energy_wh` / (`total_samples` / 1000)")
    gpus_with_power: int | None = Field(description="how many of the job's GPUs have power samples")
    idle_gpus: int | None = Field(description="how many of the job's GPUs were idle (below 10 % for most of the run)")
    average_throttled_share: float | None = Field(description="the mean `throttled_share` of the job's GPUs (0–1)")


class GpuSummary(BaseModel):
    """One GPU of a job, from its GPU samples."""

    host: str = Field(description="the host the GPU was sampled on ('' when unknown)")
    gpu_index: int = Field(description="the index the GPU was last sampled under (for display)")
    gpu_uuid: str | None = Field(description="the GPU's UUID, when the samples have one")
    samples: int = Field(description="how many GPU samples")
    first_sample: str | None = Field(description="the time of the first sample (ISO-8601)")
    last_sample: str | None = Field(description="the time of the last sample (ISO-8601)")
    average_utilization: float | None = Field(description="mean utilization over its samples, percent")
    average_memory_mb: float | None = Field(description="mean memory used over its samples, MiB")
    peak_memory_mb: float | None = Field(description="max memory used, MiB")
    average_temp_celsius: float | None = Field(description="mean temperature, °C")
    peak_temp_celsius: float | None = Field(description="max temperature, °C")
    average_power_w: float | None = Field(description="mean power draw, W")
    energy_wh: float | None = Field(
        description="power integrated over time: Σ (pᵢ + pᵢ₊₁) / 2 × (tᵢ₊₁ − tᵢ) over consecutive samples, Wh"
    )
    throttled_share: float | None = Field(
        description="the share of time (sample intervals with a reasons bitmask) the GPU was throttled "
        "(NVML clocks-event reasons: power cap, slowdown, thermal, power brake)"
    )
    idle_share: float | None = Field(description="the share of time below 10 % utilization")
    idle: bool | None = Field(description="true when the GPU was idle for most of its run (> 50 %)")


class InsightCounts(BaseModel):
    """A job's insights (shared/spec/insights.md) by severity."""

    critical: int = Field(description="how many of the job's insights are critical")
    warning: int = Field(description="how many are warnings")
    info: int = Field(description="how many are for information")


# The examples below hold no null: FastAPI leaves every null out of the schema it writes.
SEED_CURSOR = "eyJrIjoidG9wIiwidiI6WzMuNiwiZ3B0Mi1zbWFsbC0wMDIiXX0"  # after gpt2-small-002 (3.6)
SEED_DURATION: dict[str, Any] = {
    "start_time": "2025-01-01T00:00:00",
    "end_time": "2025-01-01T02:00:00",
    "total_seconds": 7200.0,
    "training_seconds": 6900.0,
    "overhead_seconds": 300.0,
}


class JobAnalytics(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "job_id": "bert-finetune-001",
                    "status": "completed",
                    "model_name": "bert-base-uncased",
                    "duration": SEED_DURATION,
                    "performance": {
                        "total_iterations": 1000,
                        "total_samples": 28980.0,
                        "average_samples_per_second": 4.2,
                        "peak_samples_per_second": 4.8,
                        "average_iteration_time": 6.9,
                    },
                    "losses": {
                        "initial_loss": 2.45,
                        "final_loss": 0.32,
                        "best_loss": 0.31,
                        "loss_reduction_percent": 86.94,
                        "final_eval_loss": 0.35,
                        "best_eval_loss": 0.34,
                    },
                    "resource_utilization": {
                        "average_gpu_utilization": 98.5,
                        "average_gpu_memory_mb": 14500.0,
                        "peak_gpu_memory_mb": 15200.0,
                        "average_gpu_temp_celsius": 71.0,
                        "peak_gpu_temp_celsius": 78.0,
                    },
                    "checkpoints": {
                        "total_checkpoints": 4,
                        "checkpoint_frequency_steps": 250.0,
                        "final_checkpoint": "checkpoint-1000",
                        "best_checkpoint": "checkpoint-750",
                    },
                    "efficiency": {"gpu_utilization_score": 98.5, "throughput_score": 84.0, "overall_score": 91.25},
                    "energy": {
                        "total_energy_wh": 580.0,
                        "energy_per_1000_samples_wh": 20.01,
                        "gpus_with_power": 1,
                        "idle_gpus": 0,
                        "average_throttled_share": 0.02,
                    },
                    "gpus": [
                        {
                            "host": "node-1",
                            "gpu_index": 0,
                            "gpu_uuid": "GPU-5f1c1a3e-7d2b-4c6e-9a10-2b3c4d5e6f70",
                            "samples": 7200,
                            "first_sample": "2025-01-01T00:00:00",
                            "last_sample": "2025-01-01T02:00:00",
                            "average_utilization": 98.5,
                            "average_memory_mb": 14500.0,
                            "peak_memory_mb": 15200.0,
                            "average_temp_celsius": 71.0,
                            "peak_temp_celsius": 78.0,
                            "average_power_w": 290.0,
                            "energy_wh": 580.0,
                            "throttled_share": 0.02,
                            "idle_share": 0.01,
                            "idle": False,
                        }
                    ],
                    "warnings": [],
                    "insights": {"critical": 0, "warning": 0, "info": 0},
                }
            ]
        }
    )

    job_id: str = Field(description="the job's id")
    status: str = Field(description="queued, running, paused, completed, failed, cancelled or unknown")
    model_name: str | None = Field(description="the model trained (the config's `model_name`)")
    duration: Duration = Field(description="when the job ran, and how its time split between training and overhead")
    performance: Performance = Field(description="iterations, samples and throughput")
    losses: Losses = Field(description="the training and eval losses")
    resource_utilization: ResourceUtilization = Field(description="GPU utilization, memory and temperature")
    checkpoints: Checkpoints = Field(description="the job's checkpoints")
    efficiency: Efficiency = Field(description="scores from 0 to 100")
    energy: Energy = Field(description="energy used, from the GPU samples' power")
    gpus: list[GpuSummary] = Field(description="each GPU of the job, from its GPU samples")
    warnings: list[str] = Field(description="why a figure is null, or how it was estimated")
    insights: InsightCounts = Field(
        description="the job's insights by severity (listed at `/api/training/{job_id}/insights`)"
    )


class TopJob(BaseModel):
    job_id: str = Field(description="the job's id")
    throughput: float = Field(description="its `average_samples_per_second`")
    duration: float | None = Field(description="its `total_seconds`")


class ResourceTrends(BaseModel):
    average_gpu_utilization: float | None = Field(description="the mean of the jobs' `average_gpu_utilization`")
    average_peak_memory_mb: float | None = Field(description="the mean of the jobs' `peak_gpu_memory_mb`")


class Summary(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "total_jobs": 4,
                    "jobs_by_status": {
                        "queued": 0,
                        "running": 1,
                        "paused": 0,
                        "completed": 2,
                        "failed": 1,
                        "cancelled": 0,
                    },
                    "average_training_duration_seconds": 6300.0,
                    "total_training_time_hours": 5.5,
                    "average_throughput_samples_per_sec": 3.6,
                    "top_performing_jobs": [
                        {"job_id": "bert-finetune-001", "throughput": 4.2, "duration": 7200.0},
                        {"job_id": "gpt2-small-002", "throughput": 3.6, "duration": 5400.0},
                    ],
                    "top_performing_total": 3,
                    "next_cursor": SEED_CURSOR,
                    "next": f"/api/training/analytics/summary?limit=2&cursor={SEED_CURSOR}",
                    "resource_trends": {"average_gpu_utilization": 91.3, "average_peak_memory_mb": 14100.0},
                }
            ]
        }
    )

    total_jobs: int = Field(description="the jobs matching the filters")
    jobs_by_status: dict[str, int] = Field(
        description="a count for every status of the vocabulary, zeros included (and `unknown` when any)"
    )
    average_training_duration_seconds: float | None = Field(description="the mean `total_seconds` of completed jobs")
    total_training_time_hours: float | None = Field(
        description="Σ `training_seconds` of all matching jobs / 3600; 0 when no job matches, "
        "null when jobs match but none has a known `training_seconds`"
    )
    average_throughput_samples_per_sec: float | None = Field(
        description="the mean of the jobs' `average_samples_per_second`"
    )
    top_performing_jobs: list[TopJob] = Field(
        description="one page of the jobs whose `average_samples_per_second` is known, highest first, ties by "
        "job id (a job without a throughput is not ranked)"
    )
    top_performing_total: int = Field(description="how many jobs are ranked")
    next_cursor: str | None = Field(description=NEXT_CURSOR)
    next: str | None = Field(description=NEXT)
    resource_trends: ResourceTrends = Field(description="GPU figures averaged over the jobs")


class ComparedJob(BaseModel):
    job_id: str = Field(description="the job's id")
    duration_seconds: float | None = Field(description="its `total_seconds`")
    throughput: float | None = Field(description="its `average_samples_per_second`")
    final_loss: float | None = Field(description="its `final_loss`")
    gpu_utilization: float | None = Field(description="its `average_gpu_utilization`")
    overall_score: float | None = Field(description="its `overall_score`, which `most_efficient` is chosen by")


class Winners(BaseModel):
    best_throughput: str | None = Field(description="the job with the highest throughput; null when none has one")
    best_loss: str | None = Field(description="the job with the lowest final loss; null when none has one")
    fastest: str | None = Field(description="the job with the lowest duration; null when none has one")
    most_efficient: str | None = Field(description="the job with the highest `overall_score`; null when none has one")


class Comparison(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "jobs": [
                        {
                            "job_id": "bert-finetune-001",
                            "duration_seconds": 7200.0,
                            "throughput": 4.2,
                            "final_loss": 0.32,
                            "gpu_utilization": 98.5,
                            "overall_score": 91.25,
                        },
                        {
                            "job_id": "gpt2-small-002",
                            "duration_seconds": 5400.0,
                            "throughput": 3.6,
                            "final_loss": 0.41,
                            "gpu_utilization": 84.1,
                            "overall_score": 78.05,
                        },
                    ],
                    "winner": {
                        "best_throughput": "bert-finetune-001",
                        "best_loss": "bert-finetune-001",
                        "fastest": "gpt2-small-002",
                        "most_efficient": "bert-finetune-001",
                    },
                }
            ]
        }
    )

    jobs: list[ComparedJob] = Field(description="the jobs in the order asked (a repeated id counts once)")
    winner: Winners = Field(
        description="the winners: a job without the figure does not compete; ties go to the job asked first"
    )


class JobRow(BaseModel):
    job_id: str = Field(description="the job's id")
    status: str = Field(description="queued, running, paused, completed, failed, cancelled or unknown")
    model_name: str | None = Field(description="the model trained")
    start_time: str | None = Field(description="the job's start (as in its analytics' `duration`)")
    end_time: str | None = Field(description="the job's end (as in its analytics' `duration`)")
    total_seconds: float | None = Field(description="end − start, in seconds")
    total_iterations: int | None = Field(description="the highest step seen")
    average_samples_per_second: float | None = Field(description="the time-weighted throughput")
    final_loss: float | None = Field(description="the loss of the highest step that has one")
    average_gpu_utilization: float | None = Field(description="mean GPU utilization, percent")
    overall_score: float | None = Field(description="the efficiency's overall score (0–100)")
    updated_at: str | None = Field(description="when the job last reported")
    insights: InsightCounts = Field(description="the job's insights by severity")


class JobList(BaseModel):
    jobs: list[JobRow] = Field(description="one page of jobs, in the order asked by `sort`")
    total: int = Field(description="how many jobs match the filters")
    next_cursor: str | None = Field(description=NEXT_CURSOR)
    next: str | None = Field(description=NEXT)


class LatestStep(BaseModel):
    step: int = Field(description="the highest step logged")
    timestamp: str | None = Field(description="its time")
    loss: float | None = Field(description="its loss")


class JobRecord(BaseModel):
    job_id: str = Field(description="the job's id")
    status: str = Field(description="queued, running, paused, completed, failed, cancelled or unknown")
    model_name: str | None = Field(description="the model trained")
    created_at: str | None = Field(description="when the job was created")
    started_at: str | None = Field(description="when the job started")
    ended_at: str | None = Field(description="when the job ended")
    updated_at: str | None = Field(description="when the job last reported")
    current_step: int | None = Field(description="the step the job reported being at")
    total_steps: int | None = Field(description="the steps the job was set to run")
    config: dict[str, Any] | None = Field(
        description="the job's config as written (nested deeper than 64 levels: null below)"
    )
    source_dir: str | None = Field(description="the job folder's name (not its path on the server)")
    latest_step: LatestStep | None = Field(description="the highest step logged, null before any")


class StepPage(BaseModel):
    job_id: str = Field(description="the job's id")
    fields: list[str] = Field(description="the fields of each step, besides `step`")
    downsampled: bool = Field(
        description="true when `max_points` left rows of the range out; false when every row is returned"
    )
    steps: list[dict[str, Any]] = Field(description="the step rows by step: `step` and the fields asked for")
    next_cursor: str | None = Field(description=NEXT_CURSOR)
    next: str | None = Field(description=NEXT)


class Checkpoint(BaseModel):
    step: int = Field(description="the checkpoint's step")
    name: str = Field(description="`checkpoint-<step>`")
    eval_loss: float | None = Field(description="the eval loss of the checkpoint entry, else of the step row")
    train_loss: float | None = Field(description="the training loss at the last logged step at or before it")


class CheckpointList(BaseModel):
    job_id: str = Field(description="the job's id")
    checkpoints: list[Checkpoint] = Field(description="the job's checkpoints by step")


class HistogramBin(BaseModel):
    low: float | None = Field(description="the bin's lower edge, samples per second")
    high: float | None = Field(description="the bin's upper edge, samples per second")
    jobs: int = Field(description="the jobs whose throughput falls in the bin")


class UtilizationBucket(BaseModel):
    start: str = Field(description="the bucket's start (a whole minute)")
    end: str = Field(description="the bucket's end (a whole minute)")
    average_gpu_utilization: float | None = Field(description="mean GPU utilization of its readings, percent")
    readings: int = Field(description="the GPU readings in the bucket")
    jobs: int = Field(description="the jobs those readings belong to")


class ModelCount(BaseModel):
    model_name: str = Field(description="a model")
    jobs: int = Field(description="the jobs that trained it")


class FleetTrends(BaseModel):
    """Charts of the summary page: GPU hours = total_seconds x GPUs, summed over jobs."""

    gpu_hours: float | None = Field(description="Σ `total_seconds` × GPUs / 3600; null when no job has any")
    gpu_hours_jobs: int = Field(description="the jobs that have GPU hours")
    jobs: int = Field(description="every job matching the filters")
    throughput_histogram: list[HistogramBin] = Field(
        description="the jobs' `average_samples_per_second` in `bins` bins of equal width"
    )
    utilization_over_time: list[UtilizationBucket] = Field(
        description="GPU utilization in `buckets` equal time spans (only those with readings)"
    )
    models: list[ModelCount] = Field(description="the models of the jobs matching the other filters")


class GpuFigures(BaseModel):
    """One value of each figure of a bucket of minutes (null: no finite reading of it)."""

    utilization_percent: float | None = Field(description="GPU utilization, percent")
    memory_used_mb: float | None = Field(description="memory used, MiB")
    temperature_c: float | None = Field(description="temperature, °C")
    power_w: float | None = Field(description="power draw, W")
    sm_clock_mhz: float | None = Field(description="SM clock, MHz")


class GpuReading(BaseModel):
    """A GPU sample (``ts``, ``host``), a reading logged with a step (``step``), or, at the
    answer's ``minute`` resolution, a bucket of whole minutes of GPU samples: its figures are
    the means over the bucket's finite readings, ``minimum`` and ``maximum`` their extremes."""

    gpu_index: int = Field(description="the GPU's index (a bucket: its last minute's)")
    host: str | None = Field(None, description="the host (GPU samples)")
    ts: str | None = Field(
        None,
        description="the time of the reading (logged with a step: the step's timestamp; a bucket: its first sample's)",
    )
    step: int | None = Field(None, description="the step it was logged with (readings logged with steps)")
    gpu_uuid: str | None = Field(description="the GPU's UUID, when known")
    utilization_percent: float | None = Field(description="GPU utilization, percent")
    memory_used_mb: float | None = Field(description="memory used, MiB")
    memory_total_mb: float | None = Field(description="memory in all, MiB (a bucket: the largest)")
    temperature_c: float | None = Field(description="temperature, °C")
    power_w: float | None = Field(description="power draw, W")
    sm_clock_mhz: float | None = Field(None, description="SM clock, MHz")
    clocks_event_reasons: int | None = Field(
        None, description="NVML's clocks-event (throttle) reasons bitmask (null for a bucket)"
    )
    last_ts: str | None = Field(None, description="a bucket: the time of its last sample")
    samples: int | None = Field(None, description="a bucket: how many GPU samples it sums")
    minimum: GpuFigures | None = Field(None, description="a bucket: each figure's lowest finite reading")
    maximum: GpuFigures | None = Field(None, description="a bucket: each figure's highest finite reading")


class GpuPage(BaseModel):
    job_id: str = Field(description="the job's id")
    source: str | None = Field(
        description="`gpu_samples` (the job's GPU samples), `gpu_minutes` (their per-minute rollups, for a job whose "
        "raw samples retention dropped, all or some: a day of it pruned) or `step_readings` (the readings logged with "
        "its steps)"
    )
    resolution: Literal["sample", "minute"] = Field(
        description="`sample`: each reading is one GPU sample or logged reading; `minute` (`max_points` over "
        "as many minutes as each GPU's share of it, or more, or a share under 12; or source `gpu_minutes`): each is "
        "a bucket of whole minutes of GPU samples"
    )
    bucket_seconds: int | None = Field(description="at `minute` resolution, the buckets' width (whole minutes)")
    downsampled: bool = Field(
        description="true when `max_points` left readings out or merged them into buckets (a bucket of more than one "
        "sample, or of more than one minute where the pages read minutes); false for pages and when every reading is "
        "returned"
    )
    extremes_kept: bool = Field(
        description="true when every GPU's lowest and highest value of each figure is in the answer (a reading's, or a "
        "bucket's `minimum` and `maximum`); false where `max_points` left a GPU too small a share to keep them and "
        "readings were left out (readings logged with steps: under 10 per GPU; each GPU then keeps its first and last "
        "reading alone)"
    )
    readings: list[GpuReading] = Field(description="the readings, by GPU then time (or step)")
    next_cursor: str | None = Field(description=NEXT_CURSOR)
    next: str | None = Field(description=NEXT)


class IngestRun(BaseModel):
    run_id: int = Field(description="the run's number")
    started_at: str = Field(description="when it started")
    ended_at: str | None = Field(description="when it ended; null while it runs")
    outcome: str = Field(description="how it ended")
    files_seen: int | None = Field(description="the files it found")
    ingested: int | None = Field(description="the files it ingested")
    unchanged: int | None = Field(description="the files unchanged since the last run")
    pending: int | None = Field(description="the files left for a later run")
    failed: int | None = Field(description="the files that failed")
    rows: int | None = Field(description="the rows it wrote")
    warnings: int | None = Field(description="the warnings it raised")
    jobs_changed: int | None = Field(description="the jobs whose data changed")
    seconds: float | None = Field(description="how long it took")
    error: str | None = Field(description="why it failed, if it did")
    host: str | None = Field(description="the host it ran on")
    pid: int | None = Field(description="its process id")


class IngestFile(BaseModel):
    path: str = Field(description="the file")
    kind: str = Field(description="its format")
    outcome: str = Field(description="what became of it")
    error: str | None = Field(description="why it is not ingested as it is now")
    last_read_at: str | None = Field(description="when it was last read")


class IngestRuns(BaseModel):
    runs: list[IngestRun] = Field(description="the ingest runs, newest first")
    problem_files: list[IngestFile] = Field(description="the files not ingested as they are now, with the reason")
    next_cursor: str | None = Field(description=NEXT_CURSOR)
    next: str | None = Field(description=NEXT)


THRESHOLDS = "the thresholds in force, name → value (insights.md; `runlytics insights set NAME VALUE` changes one)"
AS_OF = (
    "when the insights were computed: the start of the ingest run that computed them (ISO-8601; "
    "`silent_running` depends on it); null when none were computed yet"
)


class Insight(BaseModel):
    """What went wrong in a run, and where (shared/spec/insights.md)."""

    job_id: str = Field(description="the job")
    kind: str = Field(
        description="nonfinite_loss, loss_spike, loss_divergence, overfitting, throughput_drop, stall, "
        "slow_vs_peers, gpu_idle, gpu_straggler, gpu_throttled, low_gpu_utilization, memory_headroom, "
        "work_at_risk or silent_running"
    )
    severity: str = Field(description="`critical`, `warning` or `info`, as each kind says")
    first_step: int | None = Field(
        description="the first step it covers (row kinds only: null for the GPU kinds and the job kinds)"
    )
    last_step: int | None = Field(description="the last step it covers (the same as `first_step` for a single row)")
    start_time: str | None = Field(description="the timestamp of the row at `first_step`, when it has one")
    end_time: str | None = Field(description="the timestamp of the row at `last_step`, when it has one")
    host: str | None = Field(description="the GPU's host, for the GPU kinds; else null")
    gpu_index: int | None = Field(description="the GPU's index, for the GPU kinds; else null")
    gpu_uuid: str | None = Field(
        description="the GPU's UUID, for the GPU kinds when its readings have one (two GPUs of a host may share an "
        "index); else null. Not a field of shared/spec/insights.md"
    )
    value: float | None = Field(description="the figure that triggered it")
    reference: float | None = Field(description="what `value` was compared with (a median, a best, a threshold)")
    message: str = Field(description="one sentence for a person, with both figures")


class FleetInsight(Insight):
    status: str = Field(description="the job's status")
    model_name: str | None = Field(description="the model the job trained")
    job_start_time: str | None = Field(description="the job's start (as in its analytics' `duration`)")


class JobInsights(BaseModel):
    job_id: str = Field(description="the job's id")
    as_of: str | None = Field(description=AS_OF)
    thresholds: dict[str, float] = Field(description=THRESHOLDS)
    insights: list[Insight] = Field(description="the job's insights, by first step (those without one last), then kind")


class FleetInsights(BaseModel):
    insights: list[FleetInsight] = Field(
        description="one page of the insights of the jobs matching the filters: newest jobs first (by start time, "
        "those without one last, then job id), each job's by first step then kind"
    )
    as_of: str | None = Field(description="when the newest insights were computed (ISO-8601); null before any")
    thresholds: dict[str, float] = Field(description=THRESHOLDS)
    next_cursor: str | None = Field(description=NEXT_CURSOR)
    next: str | None = Field(description=NEXT)


class MetricSummary(BaseModel):
    name: str = Field(description="the metric's name as logged (a TensorBoard tag, a CSV column, an MLflow metric)")
    points: int = Field(description="how many points it has (one per step)")
    first_step: int | None = Field(description="its first step")
    last_step: int | None = Field(description="its last step")
    last_value: float | None = Field(description="its value at the last step (null when not finite)")


class JobMetrics(BaseModel):
    job_id: str = Field(description="the job's id")
    metrics: list[MetricSummary] = Field(description="every metric the job logged, by name")


class MetricPoint(BaseModel):
    step: int = Field(description="the step")
    ts: str | None = Field(description="when it was logged, when known (ISO-8601)")
    value: float | None = Field(description="the value (null when not finite: NaN, ±Infinity)")


class MetricHistory(BaseModel):
    job_id: str = Field(description="the job's id")
    name: str = Field(description="the metric's name")
    downsampled: bool = Field(
        description="true when `max_points` left points of the range out; false when every point is returned"
    )
    points: list[MetricPoint] = Field(description="the points by step")
    next_cursor: str | None = Field(description=NEXT_CURSOR)
    next: str | None = Field(description=NEXT)


class Health(BaseModel):
    status: str = Field(description="ok, or what is wrong (`unavailable`, `stale`)")
    detail: str | None = Field(None, description="why it is not ok")
    revision: str | None = Field(None, description="the warehouse schema's revision")
    snapshot: str | None = Field(None, description="the snapshot read, as `<db name>.snapshots/<copy>`")


class Readiness(Health):
    """/readyz: Health, and whether the last successful ingest is older than RUNLYTICS_STALE_AFTER."""

    stale: bool | None = Field(None, description="whether the last successful ingest is older than allowed")


class Problem(BaseModel):
    """Every 4xx/5xx answer: a JSON body saying what was wrong."""

    detail: Any = Field(description="what was wrong")
