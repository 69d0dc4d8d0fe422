"""The spool: JSON Lines files of GPU samples, one per host and UTC hour, of bounded total size.

``<spool>/<host>-<YYYYMMDDHH>.jsonl`` (shared/spec/inputs.md section 2). Each sample is one
``os.write`` of a whole line and its newline on a file opened with O_APPEND: the ingester, which
reads up to the last newline, never takes half a sample for a whole one, and several samplers on
one host (one per job) can append to the same file without interleaving their lines (on a local
file system; NFS gives no such promise). Unbuffered writes need no flush.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("runlytics.sampler")

SUFFIX = ".jsonl"
# How often the folder is listed to enforce the bound: after this share of the bound was written.
CHECK_SHARE = 16
CHECK_MAX_BYTES = 2**20
COMPLAIN_EVERY = 60.0


def file_name(host: str, ts: float) -> str:
    """``<host>-<YYYYMMDDHH>.jsonl`` for the UTC hour of ``ts`` (Unix epoch seconds)."""
    return f"{safe_host(host)}-{time.strftime('%Y%m%d%H', time.gmtime(ts))}{SUFFIX}"


def safe_host(host: str) -> str:
    # A host name can't hold a path separator in practice, but the file name must not either.
    return re.sub(r"[^A-Za-z0-9._-]", "_", host) or "unknown"


# Made once: json.dumps with any option builds a new encoder at every call.
_ENCODER = json.JSONEncoder(separators=(", ", ": "), allow_nan=False)


def encode(sample: Mapping[str, Any]) -> bytes:
    """One JSON line; NaN and infinities are refused (the sampler's values are always finite)."""
    return _ENCODER.encode(sample).encode() + b"\n"


class Spool:
    """Appends sample lines to the hour's file; thread-safe; keeps the folder under max_bytes."""

    def __init__(self, folder: Path, host: str, max_bytes: int | None) -> None:
        self.folder = Path(folder)
        self.host = host
        self.max_bytes = max_bytes
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._hour: int | None = None
        self._path: Path | None = None
        self._unchecked = 0
        # Set when a write stopped short: the next line starts with a newline, so that the
        # fragment stays one bad line instead of spoiling the next good one.
        self._dangling = False
        self._complained: float | None = None
        self._closed = False
        self._check_every = max(1, min(CHECK_MAX_BYTES, (max_bytes or CHECK_MAX_BYTES) // CHECK_SHARE))
        self.enforce_bound()

    @property
    def path(self) -> Path | None:
        """The file being appended to."""
        return self._path

    def write(self, sample: Mapping[str, Any]) -> bool:
        """Append one sample (its ``ts`` picks the file); False if it could not be written."""
        line = encode(sample)
        with self._lock:
            if self._closed:
                return False  # a reading that outlived the sampler (a hung call, not waited for)
            try:
                fd = self._file_for(float(sample["ts"]))
                return self._append(fd, line)
            except OSError as error:
                self._complain("spool %s: could not write a sample: %s", self.folder, error)
                return False

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._close()

    def enforce_bound(self) -> list[Path]:
        """Delete the oldest spool files until the folder is within max_bytes; the deleted files.

        The file being written is never deleted, so the spool can exceed the bound by at most
        that one file (an hour of samples: about 9 MiB for 8 GPUs at 1 s).
        """
        if self.max_bytes is None:
            return []
        files = self._spool_files()
        total = sum(size for _, size, _ in files)
        deleted = []
        for path, size, _ in sorted(files, key=lambda f: (f[2], f[0].name)):
            if total <= self.max_bytes:
                break
            if path == self._path:
                continue
            try:
                path.unlink()
            except FileNotFoundError:
                pass  # another sampler sharing the spool took it first
            except OSError as error:
                log.warning("spool: could not delete %s: %s", path, error)
                continue
            total -= size
            deleted.append(path)
            log.info("spool over %d bytes: deleted the oldest file %s (%d bytes)", self.max_bytes, path, size)
        self._unchecked = 0
        return deleted

    def _spool_files(self) -> list[tuple[Path, int, float]]:
        found = []
        for entry in os.scandir(self.folder):
            if not entry.name.endswith(SUFFIX):
                continue
            try:
                if entry.is_file(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    found.append((Path(entry.path), st.st_size, st.st_mtime))
            except FileNotFoundError:
                continue
        return found

    def _file_for(self, ts: float) -> int:
        hour = int(ts // 3600)
        if self._fd is not None and hour == self._hour and os.fstat(self._fd).st_nlink > 0:
            return self._fd
        # A new hour, or the file was deleted under us (by hand, or by another sampler's bound):
        # writing on to an unlinked file would lose every sample.
        self._close()
        path = self.folder / file_name(self.host, ts)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self._hour, self._path = hour, path
        self.enforce_bound()
        return self._fd

    def _append(self, fd: int, line: bytes) -> bool:
        if self._dangling:
            line = b"\n" + line
        written = os.write(fd, line)
        self._dangling = written < len(line)
        if self._dangling:
            self._complain("spool %s: short write (%d of %d bytes, disk full?)", self._path, written, len(line))
            return False
        self._unchecked += written
        if self._unchecked >= self._check_every:
            self.enforce_bound()
        return True

    def _complain(self, message: str, *args: Any) -> None:
        # A full disk fails every sample: once a minute in the log is enough.
        now = time.monotonic()
        if self._complained is None or now - self._complained >= COMPLAIN_EVERY:
            self._complained = now
            log.error(message, *args)

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = self._hour = self._path = None
