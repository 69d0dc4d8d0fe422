"""The analytics views: every figure of ``shared/spec/analytics.md``, computed in SQL.

Each view of the head revision is one whole SQL text, ``warehouse/sql/<view>.sql``: a template
with the ``@macro(arg; arg)`` placeholders of ``warehouse/dialect.py``, which ``create_sql``
renders for DuckDB or PostgreSQL (one text for both engines: docs/postgresql.md).
``CURRENT`` lists them in dependency order; ``docs/views.md`` documents their columns.

Migrations never read these files: each keeps frozen copies of the texts it created
(``migrations/versions/views/<revision>/``, loaded by ``runlytics.migrations.frozen``), so an
old revision replays the same SQL forever. Changing a view is a new revision that freezes the
new text; ``tests/test_views_sql.py`` fails when a file here differs from its newest frozen copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .dialect import DUCKDB, render

STATUSES = ("queued", "running", "paused", "completed", "failed", "cancelled")

SQL = Path(__file__).resolve().parent / "sql"


@dataclass(frozen=True)
class View:
    name: str
    template: str

    @classmethod
    def load(cls, folder: Path, name: str) -> View:
        """The view ``name`` from ``folder/<name>.sql``."""
        return cls(name, (folder / f"{name}.sql").read_text())

    def create_sql(self, dialect: dict[str, str] = DUCKDB) -> str:
        return f"CREATE OR REPLACE VIEW {self.name} AS\n{render(self.template, dialect)}"

    def drop_sql(self) -> str:
        return f"DROP VIEW IF EXISTS {self.name}"


# The views of the head revision, each after the views it reads. job_gpu_hours also reads the
# table job_results (job_analytics materialised), so it is created once that table exists.
ORDER = (
    "step_facts",
    "job_settings",
    "step_metrics",
    "job_performance",
    "job_duration",
    "job_losses",
    "gpu_sample_intervals",
    "job_gpus",
    "job_resources",
    "checkpoint_scores",
    "job_checkpoints",
    "job_efficiency",
    "job_energy",
    "step_gpu_alignment",
    "job_analytics",
    "gpu_utilization_readings",
    "job_gpu_hours",
    "fleet_gpu_hours",
    # insights (revision 0011): thresholds from the table insight_settings; insight_peers,
    # insight_gpus and insight_lifecycle read job_results too
    "insight_parameters",
    "insight_rows",
    "insight_steps",
    "insight_losses",
    "insight_speed",
    "insight_peers",
    "insight_gpus",
    "insight_lifecycle",
    "job_insights",
    "metric_points",
)
CURRENT: tuple[View, ...] = tuple(View.load(SQL, name) for name in ORDER)
