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


def resolve(con: duckdb.DuckDBPyConnection, values: list[str]) -> list[str]:
    """The ids ``values`` name, blanks dropped, each once, in the order given (an unknown id is
    kept as written, for the caller's error to name it)."""
    runs = [run for value in values for run in _runs(value)]
    singles = [f.strip() for run in runs if not run.quoted for f in run.fields if f.strip()]
    unknown = set(export.unknown_jobs(con, singles)) if singles else set()
    candidates = {
        _joined(run.fields[i:j])
        for run in runs
        if not run.quoted
        for i, field in enumerate(run.fields)
        if field.strip() in unknown
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
            if run.fields[i].strip() in unknown:
                ends = range(min(len(run.fields), i + MAX_JOINED), i + 1, -1)
                taken = next((j - i for j in ends if _joined(run.fields[i:j]) in known), 1)
            ids.append(_joined(run.fields[i : i + taken]))
            i += taken
    return list(dict.fromkeys(j for j in ids if j))


@dataclass(frozen=True)
class _Run:
    fields: list[str]  # raw, unquoted: the text between commas; quoted: the one field, unquoted
    quoted: bool


def _runs(value: str) -> list[_Run]:
    """``value`` split on the commas outside double quotes: runs of plain fields, and quoted
    fields one by one (a quote that is never closed is plain text)."""
    runs: list[_Run] = []
    plain: list[str] = []
    for field in _fields(value):
        text = field.strip()
        if len(text) >= 2 and text[0] == text[-1] == '"':
            if plain:
                runs.append(_Run(plain, False))
                plain = []
            runs.append(_Run([text[1:-1].replace('""', '"')], True))
        else:
            plain.append(field)
    if plain:
        runs.append(_Run(plain, False))
    return runs


def _fields(value: str) -> list[str]:
    fields, start, quoted = [], 0, False
    for i, char in enumerate(value):
        if char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            fields.append(value[start:i])
            start = i + 1
    fields.append(value[start:])
    if quoted:  # an unclosed quote: commas split as if there were no quotes
        return value.split(",")
    return fields


def _joined(fields: list[str]) -> str:
    return ",".join(fields).strip()
