"""`runlytics serve` in a process of its own, on a free port: the one way the tests start a server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
TOKEN_ENV = "RUNLYTICS_API_TOKEN"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Server:
    url: str
    port: int
    log: Path


@contextmanager
def serving(
    db: Path, *args: str, env: dict[str, str] | None = None, host: str = "127.0.0.1", keep_token: bool = False
) -> Iterator[Server]:
    """`runlytics serve --db DB ARGS` until the block ends; yields once /healthz answers.

    The caller's RUNLYTICS_API_TOKEN is left out unless ``keep_token`` (``env`` may set one).
    """
    port = free_port()
    log_path = db.parent / f"serve-{port}.log"
    environment = {k: v for k, v in os.environ.items() if keep_token or k != TOKEN_ENV} | (env or {})
    command = [sys.executable, "-m", "runlytics", "serve", "--db", str(db), "--port", str(port), "--host", host, *args]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=REPO, env=environment, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise AssertionError(f"the server exited with {process.returncode}: {log_path.read_text()}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the server did not answer /healthz within 30 s: {log_path.read_text()}")
            time.sleep(0.1)
        yield Server(url, port, log_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
