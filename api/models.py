"""Response models: the OpenAPI schema of every endpoint (field names of analytics.md)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class Duration(BaseModel):
    start_time: str | None
    end_time: str | None
    total_seconds: float | None
    training_seconds: float | None
    overhead_seconds: float | None


class Performance(BaseModel):
    total_iterations: int | None
    total_samples: float | None
    average_samples_per_second: float | None
    peak_samples_per_second: float | None
    average_iteration_time: float | None


class Losses(BaseModel):
    initial_loss: float | None
    final_loss: float | None
    best_loss: float | None
    loss_reduction_percent: float | None
    final_eval_loss: float | None
    best_eval_loss: float | None


class ResourceUtilization(BaseModel):
    average_gpu_utilization: float | None
    average_gpu_memory_mb: float | None
    peak_gpu_memory_mb: float | None
    average_gpu_temp_celsius: float | None
    peak_gpu_temp_celsius: float | None


class Checkpoints(BaseModel):
    total_checkpoints: int | None
    checkpoint_frequency_steps: float | None
    final_checkpoint: str | None
    best_checkpoint: str | None


class Efficiency(BaseModel):
    gpu_utilization_score: float | None
    throughput_score: float | None
    overall_score: float | None


class Energy(BaseModel):
    total_energy_wh: float | None
    energy_per_1000_samples_wh: float | None
    gpus_with_power: int | None
    idle_gpus: int | None
    average_throttled_share: float | None


class GpuSummary(BaseModel):
    """One GPU of a job, from its GPU samples."""

    host: str
    gpu_index: int
    gpu_uuid: str | None
    samples: int
    first_sample: str | None
    last_sample: str | None
    average_utilization: float | None
    average_memory_mb: float | None
    peak_memory_mb: float | None
    average_temp_celsius: float | None
    peak_temp_celsius: float | None
    average_power_w: float | None
    energy_wh: float | None
    throttled_share: float | None
    idle_share: float | None
    idle: bool | None


class JobAnalytics(BaseModel):
    job_id: str
    status: str
    model_name: str | None
    duration: Duration
    performance: Performance
    losses: Losses
    resource_utilization: ResourceUtilization
    checkpoints: Checkpoints
    efficiency: Efficiency
    energy: Energy
    gpus: list[GpuSummary]
    warnings: list[str]


class TopJob(BaseModel):
    job_id: str
    throughput: float
    duration: float | None


class ResourceTrends(BaseModel):
    average_gpu_utilization: float | None
    average_peak_memory_mb: float | None


class Summary(BaseModel):
    total_jobs: int
    jobs_by_status: dict[str, int]
    average_training_duration_seconds: float | None
    total_training_time_hours: float | None
    average_throughput_samples_per_sec: float | None
    top_performing_jobs: list[TopJob]
    top_performing_total: int
    next_cursor: str | None
    next: str | None
    resource_trends: ResourceTrends


class ComparedJob(BaseModel):
    job_id: str
    duration_seconds: float | None
    throughput: float | None
    final_loss: float | None
    gpu_utilization: float | None
    overall_score: float | None


class Winners(BaseModel):
    best_throughput: str | None
    best_loss: str | None
    fastest: str | None
    most_efficient: str | None


class Comparison(BaseModel):
    jobs: list[ComparedJob]
    winner: Winners


class JobRow(BaseModel):
    job_id: str
    status: str
    model_name: str | None
    start_time: str | None
    end_time: str | None
    total_seconds: float | None
    total_iterations: int | None
    average_samples_per_second: float | None
    final_loss: float | None
    average_gpu_utilization: float | None
    overall_score: float | None
    updated_at: str | None


class JobList(BaseModel):
    jobs: list[JobRow]
    total: int
    next_cursor: str | None
    next: str | None


class LatestStep(BaseModel):
    step: int
    timestamp: str | None
    loss: float | None


class JobRecord(BaseModel):
    job_id: str
    status: str
    model_name: str | None
    created_at: str | None
    started_at: str | None
    ended_at: str | None
    updated_at: str | None
    current_step: int | None
    total_steps: int | None
    config: dict[str, Any] | None
    source_dir: str | None
    latest_step: LatestStep | None


class StepPage(BaseModel):
    job_id: str
    fields: list[str]
    downsampled: bool
    steps: list[dict[str, Any]]
    next_cursor: str | None
    next: str | None


class Checkpoint(BaseModel):
    step: int
    name: str
    eval_loss: float | None
    train_loss: float | None


class CheckpointList(BaseModel):
    job_id: str
    checkpoints: list[Checkpoint]


class HistogramBin(BaseModel):
    low: float | None
    high: float | None
    jobs: int


class UtilizationBucket(BaseModel):
    start: str
    end: str
    average_gpu_utilization: float | None
    readings: int
    jobs: int


class ModelCount(BaseModel):
    model_name: str
    jobs: int


class FleetTrends(BaseModel):
    """Charts of the summary page: GPU hours = total_seconds x GPUs, summed over jobs."""

    gpu_hours: float | None
    gpu_hours_jobs: int
    jobs: int
    throughput_histogram: list[HistogramBin]
    utilization_over_time: list[UtilizationBucket]
    models: list[ModelCount]


class GpuReading(BaseModel):
    """A GPU sample (``ts``, ``host``) or a reading logged with a step (``step``)."""

    gpu_index: int
    host: str | None = None
    ts: str | None = None
    step: int | None = None
    gpu_uuid: str | None
    utilization_percent: float | None
    memory_used_mb: float | None
    memory_total_mb: float | None
    temperature_c: float | None
    power_w: float | None
    sm_clock_mhz: float | None = None
    clocks_event_reasons: int | None = None


class GpuPage(BaseModel):
    job_id: str
    source: str | None
    readings: list[GpuReading]
    next_cursor: str | None
    next: str | None


class IngestRun(BaseModel):
    run_id: int
    started_at: str
    ended_at: str | None
    outcome: str
    files_seen: int | None
    ingested: int | None
    unchanged: int | None
    pending: int | None
    failed: int | None
    rows: int | None
    warnings: int | None
    jobs_changed: int | None
    seconds: float | None
    error: str | None
    host: str | None
    pid: int | None


class IngestFile(BaseModel):
    path: str
    kind: str
    outcome: str
    error: str | None
    last_read_at: str | None


class IngestRuns(BaseModel):
    runs: list[IngestRun]
    problem_files: list[IngestFile]
    next_cursor: str | None
    next: str | None


class Health(BaseModel):
    status: str
    detail: str | None = None
    revision: str | None = None
    snapshot: str | None = None


class Readiness(Health):
    """/readyz: Health, and whether the last successful ingest is older than RUNLYTICS_STALE_AFTER."""

    stale: bool | None = None


class Problem(BaseModel):
    """Every 4xx/5xx answer: a JSON body saying what was wrong."""

    detail: Any
