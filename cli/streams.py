"""The command's seams with the shell's streams: a stdout that can't be written (a full disk
behind ``> log``, a closed stdout) is one line on stderr and exit 74, never a traceback.

Imports nothing Python has not loaded at start-up: ``entry()`` uses it before anything else."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any, TextIO, TypeVar, cast

Result = TypeVar("Result")


class OutputFailed(Exception):
    """stdout could not be written; the message says why, on one line."""


class CheckedStdout:
    """``sys.stdout`` for a command: a write or flush that fails raises OutputFailed (a broken pipe
    stays BrokenPipeError: the reader stopped, exit 141); anything else is the stream's own."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return _checked(self._stream.write, text)

    def writelines(self, lines: Iterable[str]) -> None:
        _checked(self._stream.writelines, lines)

    def flush(self) -> None:
        _checked(self._stream.flush)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _checked(method: Callable[..., Result], *args: Any) -> Result:
    try:
        return method(*args)
    except BrokenPipeError:
        raise
    except OSError as error:
        raise OutputFailed(f"could not write to stdout: {error.strerror or error}") from error


def checked(stream: TextIO) -> TextIO:
    """``stream`` as a CheckedStdout, typed as the stream it stands for."""
    return cast(TextIO, CheckedStdout(stream))


def reserve_standard_fds() -> None:
    """A closed stdin, stdout or stderr (``>&-``) opened on /dev/null, so that no file the command
    opens (the warehouse) takes its number. stdout is opened read-only, so that writing to it fails
    as writing to a closed one does (EBADF): a command that prints says it could not (exit 74)."""
    for fd, mode in ((0, os.O_RDONLY), (1, os.O_RDONLY), (2, os.O_WRONLY)):
        try:
            os.fstat(fd)
        except OSError:
            opened = os.open(os.devnull, mode)  # the lowest free number: fd, when the ones below are open
            if opened != fd:
                os.dup2(opened, fd)
                os.close(opened)
            if fd == 1:
                sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 (the process's own, never closed)
            elif fd == 2:
                sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115


def settle(stream: TextIO) -> None:
    """What is left of the output written, or dropped when it can't be (a full disk, a closed or
    broken stdout, already said): the interpreter's own last flush would fail again, in a message
    of its own and exit 120."""
    try:
        stream.flush()
    except (OSError, ValueError):
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())


def say(line: str) -> None:
    """``line`` on stderr, if stderr can still be written (if not, nothing can be said)."""
    with contextlib.suppress(OSError):
        print(line, file=sys.stderr)
