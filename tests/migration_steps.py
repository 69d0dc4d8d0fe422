"""Moving a test's warehouse along the revision chain the way a deployment does: alembic's own
``upgrade`` / ``downgrade`` commands on a DuckDB file or a PostgreSQL database."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from sqlalchemy import create_engine

from runlytics.warehouse import db, migrate, postgres


def alembic(warehouse: Path | db.PostgresUrl, how: str, revision: str) -> None:
    """alembic's upgrade or downgrade (``how``) of the warehouse file or PostgreSQL database to
    ``revision``."""
    config = migrate.alembic_config()
    if isinstance(warehouse, db.PostgresUrl):
        with postgres.connection(warehouse) as conn:
            config.attributes["connection"] = conn
            getattr(command, how)(config, revision)
            conn.commit()
        return
    engine = create_engine(f"duckdb:///{warehouse}")
    with engine.connect() as conn:
        config.attributes["connection"] = conn
        getattr(command, how)(config, revision)
        conn.commit()
    engine.dispose()
