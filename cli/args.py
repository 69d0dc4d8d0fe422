"""The types of the command line's arguments: each checks one value and says why it refuses it (exit 2)."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import TypeVar

Number = TypeVar("Number", int, float)


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"not a number of seconds above 0: {text}")
    return seconds


# a time limit of a read, and --wait: PostgreSQL's statement_timeout and lock_timeout hold at most
# 2^31-1 ms (about 24.8 days)
MAX_LIMIT_SECONDS = 2_000_000
# --max-file-mb, --spool-max-mb: a bound no file or spool comes near (a bigger float reached
# infinity as bytes, and int() of it a traceback)
MAX_MIB = 1 << 20
# --keep-raw-days: a century (a bigger count overflowed Python's dates)
MAX_KEEP_DAYS = 36_500


def _not_blank(text: str, then: str) -> str:
    """``text``, unless it is empty or blank: then an error saying so, and ``then``."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is blank: {then}")
    return text


def _job_id(text: str) -> str:
    """sample --job-id: not empty or blank (ingest skips a sample line naming no job)."""
    return _not_blank(text, "no job is named so")


def _number(text: str) -> float:
    """``text`` as a float, NaN when it is none (every range test below then fails)."""
    try:
        return float(text)
    except ValueError:
        return math.nan


def _wait_seconds(text: str) -> float:
    """--wait: 0 (don't wait) to MAX_LIMIT_SECONDS, PostgreSQL's lock_timeout at most."""
    seconds = _number(text)
    if not 0 <= seconds < math.inf:
        raise argparse.ArgumentTypeError(f"not a number of seconds, 0 or more: {text}")
    return _at_most(seconds, MAX_LIMIT_SECONDS, "seconds (about 23 days)", text)


def _at_most(number: Number, bound: int, unit: str, text: str) -> Number:
    """``number``, else the usage error of a value above ``bound`` (``unit`` names what it counts)."""
    if number > bound:
        raise argparse.ArgumentTypeError(f"at most {bound} {unit}: {text}")
    return number


def _finite_seconds(text: str) -> float:
    """--interval: a finite number (the sampler says how small it may be)."""
    seconds = _number(text)
    if not math.isfinite(seconds):
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text}")
    return seconds


def _positive_mib(text: str) -> float:
    """--max-file-mb: a size above 0 MiB, finite, of a byte at least (a smaller one was 0 bytes,
    every file over it)."""
    mib = _number(text)
    # (the bound before the bytes: 1e308 MiB in bytes is no int, a traceback)
    if not 0 < mib < math.inf or (mib <= MAX_MIB and int(mib * (1 << 20)) < 1):
        raise argparse.ArgumentTypeError(f"not a number of MiB above 0 (a byte at least): {text}")
    return _at_most(mib, MAX_MIB, "MiB (1 TiB)", text)


def _spool_mib(text: str) -> float:
    """--spool-max-mb: 0 (no bound) or a size in MiB, finite."""
    mib = _number(text)
    if not 0 <= mib < math.inf:
        raise argparse.ArgumentTypeError(f"not a number of MiB, 0 (no bound) or more: {text}")
    return _at_most(mib, MAX_MIB, "MiB (1 TiB)", text)


def _port(text: str) -> int:
    port = _whole(text)
    if port is None or port > 65535:
        raise argparse.ArgumentTypeError(f"not a port number (0 to 65535): {text}")
    return port


def _whole(text: str) -> int | None:
    """``text`` as a whole number (ASCII digits only), else None. Past 18 digits it is 10**18, above
    every bound here: int() refuses a text of over 4,300 digits."""
    if not (text.isascii() and text.isdigit()):
        return None
    digits = text.lstrip("0") or "0"
    return int(digits) if len(digits) <= 18 else 10**18


def _time_limit(text: str) -> float:
    """A read's --timeout, ingest's --every: above 0, at most MAX_LIMIT_SECONDS (`--every 1e9`
    was one run, then a sleep for ever)."""
    return _at_most(_positive_seconds(text), MAX_LIMIT_SECONDS, "seconds (about 23 days)", text)


def _days(text: str) -> int:
    days = _whole(text)
    if days is None:
        raise argparse.ArgumentTypeError(f"not a whole number of days (0 or more): {text}")
    return _at_most(days, MAX_KEEP_DAYS, "days (100 years; 0 keeps everything)", text)


def _path(text: str) -> Path:
    """A file or folder named on the command line: not blank (``Path("")`` is the current folder,
    which no one means by an empty word: an unset shell variable), valid UTF-8."""
    _not_blank(text, "name a file or folder")
    if not _utf8(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not valid UTF-8: rename it, or name another")
    return Path(text)


def _listen_host(text: str) -> str:
    """serve --host: not blank (uvicorn listens on every interface for an empty host)."""
    return _not_blank(text, "name an interface (127.0.0.1, 0.0.0.0, ...)")


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # the bytes of a non-UTF-8 argument, as Python keeps them (surrogates)
        return False
    return True


def check_text_arguments(args: argparse.Namespace) -> None:
    """UserError (exit 2) for an argument that is not valid UTF-8 (a job id, a host, a query, a
    warehouse): no job, file name or value stored can hold it (they were tracebacks, session 26)."""
    from .errors import UserError

    for name, value in vars(args).items():
        if name == "command":  # sample's command to run: its arguments are its own
            continue
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str) and not _utf8(text):
                raise UserError(f"the {name.replace('_', '-')} argument {text!r} is not valid UTF-8")


def _readable_dir(text: str) -> Path:
    path = _path(text).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"not a folder: {text}")
    return path


def check_warehouse_named(args: argparse.Namespace) -> None:
    """UserError (exit 2) for a blank --db, --stage or $RUNLYTICS_DB of a command that takes one:
    each named a file " " in the current folder (an empty $RUNLYTICS_DB is unset, as shells have it)."""
    from runlytics.warehouse import db

    from .errors import UserError

    if not hasattr(args, "db"):  # sample: no warehouse
        return
    for option in ("db", "stage"):
        given = getattr(args, option, None)
        if given is not None and not given.strip():
            raise UserError(f"--{option} {given!r} is blank: name a warehouse file or a postgresql:// URL")
    named = os.environ.get(db.ENV_DB)
    if args.db is None and named and not named.strip():
        raise UserError(f"${db.ENV_DB} {named!r} is blank: name a warehouse file or a postgresql:// URL, or unset it")
    if args.db is None and named and not _utf8(named):
        raise UserError(f"${db.ENV_DB} {named!r} is not valid UTF-8: name another warehouse")
