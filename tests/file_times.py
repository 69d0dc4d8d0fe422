"""Helpers for tests of files a writer may still be at: their age, and which of them are opened."""

from __future__ import annotations

import builtins
import io
import os
import time
from pathlib import Path
from typing import Any

import pytest


def aged(path: Path, seconds: float) -> None:
    """Date the file's last change ``seconds`` ago (ledger.settled and FRESH_SECONDS read it)."""
    when = time.time() - seconds
    os.utime(path, (when, when))


def write(path: Path, content: str | bytes, age: float = 3600) -> Path:
    """``content`` written to ``path`` (its folders made), dated ``age`` seconds ago: a file
    changed within seconds is read again."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        path.write_text(content)
    else:
        path.write_bytes(content)
    aged(path, age)
    return path


def opened_under(folder: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files under ``folder`` that Python opens from now on, by ``open`` or ``Path.open``
    (which calls ``io.open``, not the name ``builtins.open``); DuckDB's own reads are not seen."""
    seen: list[str] = []
    real = io.open

    def watching(file: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(file, str | os.PathLike) and str(file).startswith(str(folder)):
            seen.append(str(file))
        return real(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", watching)
    monkeypatch.setattr(io, "open", watching)
    return seen
