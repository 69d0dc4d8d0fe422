"""Moved to warehouse/lock.py (schema upgrades take the same lock); kept for old imports."""

from warehouse.lock import IngestLocked, run_lock

__all__ = ["IngestLocked", "run_lock"]
