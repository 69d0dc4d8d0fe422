"""A throwaway PostgreSQL server for the tests: Debian's binaries, a temporary data folder, a free
port on loopback, trust authentication, and a fresh database per test.

PostgreSQL refuses to run as root; when the tests run as root (CI), the server runs as the
unprivileged ``postgres`` user that Debian's package creates. Without PostgreSQL installed the
tests that need it skip, except under CI (``$CI`` set), where they fail: CI installs it
(``.ci/run``).
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SERVER_USER = "postgres"
# a file to which each server adds its CPU seconds when it stops (for measuring the tests' cost)
CPU_LOG = "RUNLYTICS_PG_CPU_LOG"


def bin_dir() -> Path | None:
    """The folder of Debian's PostgreSQL binaries (the newest version installed), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """One running server; ``new_database()`` gives each test an empty database's URL."""

    def __init__(self, bins: Path) -> None:
        self.bins = bins
        self.folder = Path(tempfile.mkdtemp(prefix="runlytics-pg-"))
        self.data = self.folder / "data"
        self.port = _free_port()
        self._names = itertools.count()
        self._as_root = os.geteuid() == 0
        if self._as_root:
            shutil.chown(self.folder, SERVER_USER, SERVER_USER)
        self.folder.chmod(0o700)
        self._run(
            str(bins / "initdb"), "-D", str(self.data), "-A", "trust", "-U", SERVER_USER,
            "-E", "UTF8", "--locale=C.UTF-8", "--no-sync",
        )  # fmt: skip
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        log = str(self.folder / "log")
        self._run(str(bins / "pg_ctl"), "-D", str(self.data), "-l", log, "-o", options, "-w", "start")
        self.admin_url = f"postgresql://{SERVER_USER}@127.0.0.1:{self.port}/postgres"

    def _run(self, *cmd: str) -> None:
        if self._as_root:
            cmd = ("runuser", "-u", SERVER_USER, "--", *cmd)
        subprocess.run(cmd, check=True, capture_output=True, cwd=self.folder)

    def new_database(self) -> str:
        """Create an empty database and return its URL (``postgresql://postgres@127.0.0.1:PORT/NAME``)."""
        import psycopg

        name = f"t{os.getpid()}_{next(self._names)}_{int(time.time() * 1000) % 100000}"
        with psycopg.connect(self.admin_url, autocommit=True) as con:
            con.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://{SERVER_USER}@127.0.0.1:{self.port}/{name}"

    def cpu_seconds(self) -> float:
        """CPU seconds the server has used so far: the postmaster's own and its ended children's,
        and its live children's (Linux's /proc); 0 where it cannot be read."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            tick = os.sysconf("SC_CLK_TCK")
            total = sum(int(v) for v in _stat(pid)[11:15])  # utime, stime, cutime, cstime
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    fields = _stat(int(entry.name))
                    if fields and int(fields[1]) == pid:  # a live backend: its own time
                        total += int(fields[11]) + int(fields[12])
            return total / tick
        except (OSError, ValueError, IndexError):
            return 0.0

    def stop(self) -> None:
        log = os.environ.get(CPU_LOG)
        try:
            if log:  # docs/testing.md: the cost of the [postgresql] tests counts the server's time too
                with open(log, "a") as out:
                    out.write(f"{self.cpu_seconds():.2f}\n")
        finally:  # a failed write (a bad path) still stops the server and removes its folder
            try:
                self._run(str(self.bins / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
            finally:
                _remove_in_background(self.folder)


def _remove_in_background(folder: Path) -> None:
    """Remove the server's folder without waiting for it: after a whole run it holds hundreds of
    databases (gigabytes, hundreds of thousands of files), whose removal took tens of seconds at the
    end of the last test of each worker (docs/testing.md, "Suite time"). An ``rm`` left running on
    its own (the shell that starts it returns at once; nothing of the test process's is held)."""
    try:
        subprocess.run(
            ["sh", "-c", 'rm -rf -- "$1" </dev/null >/dev/null 2>&1 &', "sh", str(folder)], check=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):  # no shell: remove it here, as before
        shutil.rmtree(folder, ignore_errors=True)


def _stat(pid: int) -> list[str]:
    """/proc/<pid>/stat's fields after the command name (state, ppid, …), or [] if it ended."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    return text[text.rindex(")") + 2 :].split()
