"""Alembic migrations of the warehouse (see alembic.ini and warehouse/migrate.py)."""
