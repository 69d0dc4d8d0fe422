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

    def stop(self) -> None:
        try:
            self._run(str(self.bins / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
