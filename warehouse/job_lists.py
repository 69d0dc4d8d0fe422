"""Lists of job ids as people write them: ``a,b``, given once or repeated, and ids that hold a comma.

A job id may hold a comma (a sweep folder named like Hydra's ``override_dirname``,
``bs=8,lr=1e-4``). In a list, a field in double quotes is taken whole (``"bs=8,lr=1e-4",plain``,
CSV's quoting, ``""`` for a quote), and unquoted fields that name no job are joined with the
fields after them (up to MAX_JOINED) when the join names one, so ``bs=8,lr=1e-4,plain`` is those
two jobs. A field that names a job is never joined: with jobs ``a``, ``b`` and ``a,b``, ``a,b``
asks for two jobs and ``"a,b"`` for one. Used by the API's comparison and export, and by
``runlytics export --jobs``.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from . import export

MAX_JOINED = 16  # fields joined back into one id at most
# The blanks around an id or a quoted field: ASCII's (Python's string.whitespace), as the dashboard's
# twin (api/static/common.js BLANK) reads them; any other character (a no-break space, a byte order
# mark, U+0085, U+001C) is part of the id, so both sides read a list alike.
BLANKS = " \t\n\r\f\v"


def resolve(con: duckdb.DuckDBPyConnection, values: list[str]) -> list[str]:
    """The ids ``values`` name, blanks dropped, each once, in the order given (an unknown id is
    kept as written, for the caller's error to name it)."""
    runs = [run for value in values for run in _runs(value)]
    singles = [f.strip(BLANKS) for run in runs if not run.quoted for f in run.fields if f.strip(BLANKS)]
    unknown = set(export.unknown_jobs(con, singles)) if singles else set()
    candidates = {
        _joined(run.fields[i:j])
        for run in runs
        if not run.quoted
        for i, field in enumerate(run.fields)
        if field.strip(BLANKS) in unknown
        for j in range(i + 2, min(len(run.fields), i + MAX_JOINED) + 1)
    }
    known = candidates - set(export.unknown_jobs(con, sorted(candidates))) if candidates else set()
    ids: list[str] = []
    for run in runs:
        if run.quoted:
            ids += run.fields
            continue
        i = 0
        while i < len(run.fields):
            taken = 1
            if run.fields[i].strip(BLANKS) in unknown:
                ends = range(min(len(run.fields), i + MAX_JOINED), i + 1, -1)
                taken = next((j - i for j in ends if _joined(run.fields[i:j]) in known), 1)
            ids.append(_joined(run.fields[i : i + taken]))
            i += taken
    return list(dict.fromkeys(j for j in ids if j))


def names_any(value: str) -> bool:
    """Whether ``value`` names at least one id as ``resolve`` reads it (a quoted field, or a plain
    one with more than blanks), without asking a warehouse."""
    return any(text if quoted else text.strip(BLANKS) for text, quoted in _fields(value))


@dataclass(frozen=True)
class _Run:
    fields: list[str]  # raw, unquoted: the text between commas; quoted: the one field, unquoted
    quoted: bool


def _runs(value: str) -> list[_Run]:
    """``value`` split on its commas as CSV splits a line (``_fields``): runs of plain fields,
    and quoted fields one by one."""
    runs: list[_Run] = []
    plain: list[str] = []
    for text, quoted in _fields(value):
        if quoted:
            if plain:
                runs.append(_Run(plain, False))
                plain = []
            runs.append(_Run([text], True))
        else:
            plain.append(text)
    if plain:
        runs.append(_Run(plain, False))
    return runs


def _fields(value: str) -> list[tuple[str, bool]]:
    """The fields of ``value`` as CSV reads them, each with whether it was quoted: a ``"`` opens a
    quoted field only at the start of a field (after blanks); inside it ``""`` is a quote, and
    the field ends at the next lone ``"``, which only blanks may follow before the comma (or the
    end). A ``"`` anywhere else is a plain character (``q"uote``), and so is a quote that is
    never closed, or is followed by more text (``"a,b`` is the fields ``"a`` and ``b``)."""
    fields: list[tuple[str, bool]] = []
    start = 0
    while True:
        quoted = _quoted_field(value, start)
        if quoted is not None:
            text, end = quoted
            fields.append((text, True))
        else:
            comma = value.find(",", start)
            end = len(value) if comma < 0 else comma
            fields.append((value[start:end], False))
        if end >= len(value):
            return fields
        start = end + 1


def _quoted_field(value: str, start: int) -> tuple[str, int] | None:
    """The quoted field at ``start`` (unquoted, and where its comma or the end is), or None when
    the field there is not one."""
    i = start
    while i < len(value) and value[i] in BLANKS:
        i += 1
    if i == len(value) or value[i] != '"':
        return None
    parts: list[str] = []
    i += 1
    while True:
        close = value.find('"', i)
        if close < 0:
            return None  # never closed
        parts.append(value[i:close])
        if value.startswith('"', close + 1):  # "" is a quote
            parts.append('"')
            i = close + 2
            continue
        end = close + 1
        while end < len(value) and value[end] in BLANKS:
            end += 1
        if end < len(value) and value[end] != ",":
            return None  # more text after the closing quote
        return "".join(parts), end


def _joined(fields: list[str]) -> str:
    return ",".join(fields).strip(BLANKS)
