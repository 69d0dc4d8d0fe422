"""The C history reader (ingest/_history.c) on ``\\u`` escapes and empty strings (issue #15, point 9).

DuckDB refuses a document with an invalid ``\\u`` escape (not four hex digits, or a surrogate
that is not a high one followed by a low one), wherever it is. The C reader used to skip such a
value inside the history (a field the warehouse does not read) and take the file, so the fast
road ingested a file the careful read fails: it must give up instead, and both roads then give
the same ledger. tests/fuzz_history.py runs the reader under ASan and UBSan.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Lab
from depth import DEEP

from runlytics.ingest import fast

pytestmark = pytest.mark.skipif(not fast.AVAILABLE and not os.environ.get("CI"), reason="C reader not built")

# escape -> whether DuckDB reads a string holding it
ESCAPES = {
    rb"\u0041": True,
    rb"\u00e9": True,
    rb"\u0000": True,
    rb"\ud83d\ude00": True,  # a surrogate pair
    rb"\uD83D\uDE00": True,
    rb"\u12G4": False,  # not hex
    rb"\u12": False,  # too short
    rb"\ud800": False,  # a high surrogate alone
    rb"\ud800x": False,
    rb"\ud800\u0041": False,  # followed by no low one
    rb"\ud800\ud800": False,
    rb"\udc00": False,  # a low surrogate alone
    rb"\udc00\ud800": False,
}
# the escapes DuckDB refuses but Python's json reads (a lone surrogate): the careful read takes
# such a file from a repaired copy (U+FFFD in the surrogate's place, with a warning)
REPAIRED = {e for e in ESCAPES if not ESCAPES[e] and e.lower().startswith((rb"\ud8", rb"\udc"))}
PLACES = {
    "entry": b'{"job_id": "J", "history": [{"step": 1, "loss": 0.5, "note": "a%sb"}]}',
    "gpu": b'{"job_id": "J", "history": [{"step": 1, "gpus": [{"index": 0, "clock": "%s"}]}]}',
    "nested": b'{"job_id": "J", "history": [{"step": 1, "extra": {"k": ["%s"]}}]}',
    "top": b'{"job_id": "J", "notes": "%s", "history": [{"step": 1}]}',
}
CASES = [(place, escape) for place in PLACES for escape in ESCAPES]
# ingested both ways: every escape in one place (the places taken in turn) in an ordinary run, in
# every place in deep runs (52 files, 12 s of CI's time); the reader's own test takes every case
INGESTED = CASES if DEEP else [(list(PLACES)[i % len(PLACES)], escape) for i, escape in enumerate(ESCAPES)]


def document(place: str, escape: bytes, job_id: str = "J") -> bytes:
    return PLACES[place].replace(b"%s", escape).replace(b'"J"', b'"%s"' % job_id.encode())


@pytest.mark.parametrize(("place", "escape"), CASES, ids=[f"{p}-{e.decode()}" for p, e in CASES])
def test_the_reader_gives_up_on_escapes_duckdb_refuses(place: str, escape: bytes) -> None:
    parsed = fast.parse(document(place, escape), 0)
    assert (parsed is not None) is ESCAPES[escape]
    if parsed is not None:
        assert parsed.history_entries == 1


def ingest_both_ways(tmp: Path, docs: list[bytes], monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Per road: the ledger (by folder) and the steps of these documents, each in its own folder."""
    found = []
    for road in ("fast", "careful"):
        (tmp / road).mkdir()
        lab = Lab(tmp / road)
        past = time.time() - 3600  # written an hour ago: a refused file is failed, not caught mid-write
        for i, data in enumerate(docs):
            path = lab.write_job(f"job-{i:02d}", None, raw=data)
            os.utime(path, (past, past))
        with monkeypatch.context() as m:
            if road == "careful":
                m.setattr(fast, "_history", None)
            lab.ingest()
        ledger = lab.query(
            "SELECT regexp_extract(path, 'job-[0-9]+'), outcome, error, warning_count, warnings FROM ingest_files"
        )
        steps = lab.query("SELECT job_id, step, loss FROM steps ORDER BY ALL")
        found.append({"ledger": sorted(ledger), "steps": steps})
    return found


def test_both_roads_give_the_same_for_every_escape(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = [document(place, escape, f"j{i:02d}") for i, (place, escape) in enumerate(INGESTED)]
    fast_road, careful = ingest_both_ways(tmp_path, docs, monkeypatch)
    assert fast_road == careful
    outcomes = {folder: outcome for folder, outcome, *_ in fast_road["ledger"]}
    for i, (_, escape) in enumerate(INGESTED):
        assert outcomes[f"job-{i:02d}"] == ("ingested" if ESCAPES[escape] or escape in REPAIRED else "failed")
    # the files DuckDB reads, and the repaired ones, keep their rows
    assert len(fast_road["steps"]) == sum(ESCAPES[e] or e in REPAIRED for _, e in INGESTED)


def test_an_empty_first_uuid_is_an_empty_string() -> None:
    # the first string of the column is empty: nothing to copy into a buffer not yet allocated
    # (with an index: a blank uuid alone, or `{}`, is no GPU, and the fast road leaves the file)
    parsed = fast.parse(
        b'{"history": [{"step": 3, "gpus": [{"uuid": "", "index": 0}, {"uuid": "GPU-1"}, {"index": 2}]}]}', 0
    )
    assert parsed is not None
    assert parsed.gpus.column("gpu_uuid").to_pylist() == ["", "GPU-1", None]
    assert parsed.gpus.column("step").to_pylist() == [3, 3, 3]


def test_numbers_with_very_many_digits_give_up_or_read_right() -> None:
    zeros = b"0" * 100_000
    for text, expected in [
        (b"0." + zeros + b"1", None),  # below the smallest double the reader takes: careful read
        (b"1" + zeros, None),
        (b"0." + zeros + b"1e100010", None),  # exponent digits past what the reader counts
        (b"0.00000000000000000000001e20", 1e-3),
        (b"1234567890123456789012e-20", 12.34567890123456789012),
    ]:
        parsed = fast.parse(b'{"history": [{"step": 0, "loss": %s}]}' % text, 0)
        loss = None if parsed is None else parsed.entries.column("loss")[0].as_py()
        assert loss == expected, text[:40]
