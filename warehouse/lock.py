"""One writer at a time per warehouse (ingest, schema upgrades): an advisory lock file beside it.

A second writer waits up to ``wait`` seconds for the first, then gives up with
``IngestLocked`` (exit code 75, EX_TEMPFAIL, from the command line). The lock dies with its
process, so a run killed with ``kill -9`` never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from . import sidefiles
from .db import WarehouseBusy, WarehouseError


class IngestLocked(WarehouseBusy):
    """Another ingest (or schema upgrade) of the same warehouse is still running."""


@contextmanager
def run_lock(db_path: Path, wait: float) -> Iterator[None]:
    lock_path = sidefiles.lock(db_path)
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:  # a read-only folder, one this user may not write, a folder in the way
        raise WarehouseError(
            f"cannot write to warehouse {db_path}: its lock file {lock_path} can't be created or opened "
            f"({error.strerror or error}): a writer needs a folder it may write in"
        ) from None
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise IngestLocked(
                        f"another ingest into {db_path} is running (waited {wait:g} s; lock {lock_path})"
                    ) from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)
