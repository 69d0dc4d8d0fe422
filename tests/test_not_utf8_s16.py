"""Bytes that are not UTF-8 in a progress.json or a trainer_state.json (inputs.md's preamble: skip
what cannot be read, say why, go on). Such a byte (a Latin-1 ``é`` in a model name, a metric's
name) was stored as U+FFFD in silence, where a Lightning CSV's or a spool line's is named. The
file is still read with U+FFFD in each such byte's place, now with one warning naming the first
one's line and column in characters (as an editor shows them) and how many more the file has.

A progress.json holding one takes the repair road whatever road it started on (DuckDB refuses
the file, or the fast road's rest of it): read whole, or in pieces when large. Every test that
ingests runs on both engines (``ingest_engine``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import Engine, Lab
from file_times import write

from runlytics.ingest import fast, json_text

STEPS = "SELECT step, loss FROM steps WHERE job_id = $j ORDER BY step"
UUIDS = "SELECT step, gpu_uuid FROM step_gpus WHERE job_id = $j ORDER BY step"
VALUES = "SELECT name, step, value FROM metric_values WHERE job_id = $j ORDER BY name, step"
MODEL = "SELECT model_name FROM jobs WHERE job_id = $j"

# config's "é" is UTF-8 (one column), the byte after "caf" is Latin-1's é; a key nobody reads in
# the history and a GPU's uuid hold two more
LATIN1 = (
    b'{"job_id": "lat", "status": "running",\n'
    b' "config": {"team": "\xc3\xa9", "model_name": "caf\xe9"},\n'
    b' "history": [{"step": 1, "loss": 2.0, "note": "\xff"},\n'
    b'             {"step": 2, "loss": 1.0, "gpus": [{"index": 0, "uuid": "GPU-\xfe", "utilization_percent": 50}]}]}\n'
)
LATIN1_WARNING = (
    "line 2: not valid UTF-8 (byte 0xe9 at column 44), read with U+FFFD in its place (and 2 more in the file)"
)


def warnings_of(summary: Any, lab: Lab) -> dict[str, list[str]]:
    """The run's warnings by file, as paths below the root."""
    out: dict[str, list[str]] = {}
    for path, message in summary.listed_warnings:
        out.setdefault(Path(path).relative_to(lab.root.resolve()).as_posix(), []).append(message)
    return out


def ledger_warnings(lab: Lab, kind: str) -> dict[str, list[str]]:
    """Each file's warnings as the ledger (ingest_files) keeps them, by path below the root."""
    rows = lab.own_query("SELECT path, warnings FROM ingest_files WHERE kind = ?", [kind])
    root = lab.root.resolve()
    return {Path(path).relative_to(root).as_posix(): json.loads(w) if w else [] for path, w in rows}


@pytest.fixture
def lab(tmp_path: Path, ingest_engine: Engine) -> Lab:
    return Lab(tmp_path, ingest_engine)


@pytest.fixture(params=["fast", "careful"])
def road(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The histories' fast road (the C reader) as built, or the careful read alone."""
    if request.param == "careful":
        monkeypatch.setattr(fast, "_history", None)
    return str(request.param)


# --- 1. progress.json read whole ------------------------------------------------------------------


def test_a_progress_file_not_utf8_is_read_with_u_fffd_and_one_warning(lab: Lab, road: str) -> None:
    """The job is ingested as before, every such byte read as U+FFFD, and one warning names the
    first byte, its line and its column in characters (the "é" before it is one column), and
    how many more the file holds."""
    write(lab.root / "lat" / "progress.json", LATIN1)
    write(
        lab.root / "ok" / "progress.json",
        json.dumps({"job_id": "ok", "status": "running", "history": [{"step": 1, "loss": 1.0}]}),
    )
    summary = lab.ingest()
    assert (summary.ingested, summary.failed, summary.pending) == (2, 0, 0)
    assert lab.query(MODEL, {"j": "lat"}) == [("caf\ufffd",)]
    assert lab.query(STEPS, {"j": "lat"}) == [(1, 2.0), (2, 1.0)]
    assert lab.query(UUIDS, {"j": "lat"}) == [(2, "GPU-\ufffd")]
    assert warnings_of(summary, lab) == {"lat/progress.json": [LATIN1_WARNING]}
    assert ledger_warnings(lab, "progress") == {"lat/progress.json": [LATIN1_WARNING], "ok/progress.json": []}
    # an unchanged file is not read again: its warning stays in the ledger, unrepeated
    again = lab.ingest()
    assert (again.ingested, again.warnings, again.listed_warnings) == (0, 0, [])
    assert ledger_warnings(lab, "progress")["lat/progress.json"] == [LATIN1_WARNING]


def test_one_byte_alone_says_no_more_and_other_warnings_follow(lab: Lab, road: str) -> None:
    """One byte: no count. The file's other warnings (a lone surrogate escape, a value dropped)
    follow the encoding's, which is the file's first."""
    raw = (
        b'{"job_id": "one", "config": {"model_name": "caf\xe9", "output_dir": "/d\\udcff"},'
        b' "history": [{"step": 1, "loss": "x"}]}'
    )
    write(lab.root / "one" / "progress.json", raw)
    summary = lab.ingest()
    assert summary.ingested == 1
    assert warnings_of(summary, lab)["one/progress.json"] == [
        "line 1: not valid UTF-8 (byte 0xe9 at column 48), read with U+FFFD in its place",
        "config.output_dir: '/d\\udcff' holds a lone surrogate escape (not valid Unicode): replaced by U+FFFD",
        "no status: kept as unknown",
        'history[0] (step 1): loss "x" is not a number, dropped',
    ]
    assert lab.query(MODEL, {"j": "one"}) == [("caf\ufffd",)]


def test_utf8_files_with_or_without_a_bom_stay_warning_free(lab: Lab, road: str) -> None:
    """Characters written as UTF-8, with or without a byte order mark, warn of nothing; a byte that
    is not UTF-8 after a BOM is read as without one (the BOM is no column: an editor hides it).
    A UTF-16 file fails as before (not JSON), with no warning."""
    doc = {"job_id": "X", "status": "running", "config": {"model_name": "café µ"}, "history": [{"step": 1}]}
    text = json.dumps(doc, ensure_ascii=False)
    write(lab.root / "plain" / "progress.json", text.replace("X", "plain").encode())
    write(lab.root / "bom" / "progress.json", b"\xef\xbb\xbf" + text.replace("X", "bom").encode())
    latin1 = text.replace("X", "bad").encode()[:-1] + b', "x": "\xe9"}'  # after the é and µ of UTF-8
    write(lab.root / "bad" / "progress.json", b"\xef\xbb\xbf" + latin1)
    write(lab.root / "u16" / "progress.json", text.replace("X", "u16").encode("utf-16"))
    summary = lab.ingest()
    assert (summary.ingested, summary.failed) == (3, 1)
    assert warnings_of(summary, lab) == {
        "bad/progress.json": ["line 1: not valid UTF-8 (byte 0xe9 at column 108), read with U+FFFD in its place"]
    }
    assert [p["path"].rsplit("/", 2)[-2] for p in summary.problems] == ["u16"]
    assert sorted(lab.query("SELECT job_id, model_name FROM jobs")) == [
        ("bad", "café µ"),
        ("bom", "café µ"),
        ("plain", "café µ"),
    ]


# --- 2. progress.json read in pieces --------------------------------------------------------------


@pytest.mark.skipif(not fast.AVAILABLE, reason="the C reader is not built")
def test_a_large_file_read_in_pieces_names_the_byte_of_the_whole_file(
    lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large file is read as its document without the history plus pieces of entries
    (ingest/fast.py, ``split``): the warning names the place in the file itself, not in a piece or
    in the rest, and counts the bytes of every part; the same as when the file is read whole."""
    write(lab.root / "lat" / "progress.json", LATIN1)
    monkeypatch.setattr(fast, "SPLIT_BYTES", 0)  # every file the fast road refuses: in pieces
    monkeypatch.setattr(fast, "PIECE_BYTES", 1)  # one entry a piece
    split, pieces = fast.split, []

    def spy(path: Path, scratch: Path, name: str) -> fast.Pieces | None:
        result = split(path, scratch, name)
        pieces.append(result is not None and len(result.pieces))
        return result

    monkeypatch.setattr(fast, "split", spy)
    summary = lab.ingest()
    assert pieces == [2]
    assert warnings_of(summary, lab) == {"lat/progress.json": [LATIN1_WARNING]}
    assert lab.query(MODEL, {"j": "lat"}) == [("caf\ufffd",)]
    assert lab.query(STEPS, {"j": "lat"}) == [(1, 2.0), (2, 1.0)]
    assert lab.query(UUIDS, {"j": "lat"}) == [(2, "GPU-\ufffd")]


@pytest.mark.skipif(not fast.AVAILABLE, reason="the C reader is not built")
def test_in_pieces_the_first_byte_may_be_in_a_piece_or_after_the_history(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first byte in a piece (its line within the file, not within the piece), the next one in
    the rest after the history (lines further down than the rest's own)."""
    raw = (
        b'{"job_id": "p", "history": [\n'
        b' {"step": 1, "loss": 2.0},\n'
        b' {"step": 2, "loss": 1.0, "note": "\xc2\xb5 \xe9\xe9"}\n'
        b'], "config": {"model_name": "caf\xe9"}}\n'
    )
    write(lab.root / "p" / "progress.json", raw)
    monkeypatch.setattr(fast, "SPLIT_BYTES", 0)
    monkeypatch.setattr(fast, "PIECE_BYTES", 1)
    summary = lab.ingest()
    assert warnings_of(summary, lab)["p/progress.json"][0] == (
        "line 3: not valid UTF-8 (byte 0xe9 at column 38), read with U+FFFD in its place (and 2 more in the file)"
    )
    assert lab.query(MODEL, {"j": "p"}) == [("caf\ufffd",)]
    assert lab.query(STEPS, {"j": "p"}) == [(1, 2.0), (2, 1.0)]


# --- 3. trainer_state.json ------------------------------------------------------------------------


def test_a_trainer_state_not_utf8_is_read_with_u_fffd_and_one_warning(lab: Lab) -> None:
    """A log_history key with a Latin-1 byte was stored as ``acc_caf\\ufffd`` in silence: it still
    is, with one warning; a state in UTF-8, with a BOM or not, warns of nothing."""
    state = b'{"global_step": 5,\n "log_history": [{"step": 5, "loss": 1.0, "acc_caf\xe9": 0.5, "f1_\xff": 0.25}]}'
    write(lab.root / "tsl" / "checkpoint-5" / "trainer_state.json", state)
    good = '{"global_step": 2, "log_history": [{"step": 2, "loss": 1.0, "acc_café": 0.5}]}'.encode()
    write(lab.root / "ok" / "trainer_state.json", good)
    write(lab.root / "bom" / "trainer_state.json", b"\xef\xbb\xbf" + good)
    summary = lab.ingest()
    assert (summary.ingested, summary.failed) == (3, 0)
    warning = "line 2: not valid UTF-8 (byte 0xe9 at column 51), read with U+FFFD in its place (and 1 more in the file)"
    assert warnings_of(summary, lab) == {"tsl/checkpoint-5/trainer_state.json": [warning]}
    assert ledger_warnings(lab, "trainer_state") == {
        "tsl/checkpoint-5/trainer_state.json": [warning],
        "ok/trainer_state.json": [],
        "bom/trainer_state.json": [],
    }
    assert lab.query(VALUES, {"j": "tsl"}) == [("acc_caf\ufffd", 5, 0.5), ("f1_\ufffd", 5, 0.25), ("loss", 5, 1.0)]
    assert lab.query(VALUES, {"j": "bom"}) == [("acc_café", 2, 0.5), ("loss", 2, 1.0)]


# --- 4. the warning's figures, whatever the slices the bytes are decoded in -------------------------


@pytest.mark.parametrize("slice_bytes", [1, 2, 3, 1 << 20])
def test_the_place_and_count_do_not_depend_on_the_slices(monkeypatch: pytest.MonkeyPatch, slice_bytes: int) -> None:
    """json_text.not_utf8 decodes a slice at a time (a one-line file of a gigabyte is not decoded
    whole): a character cut between two slices is no bad byte, a U+FFFD written as UTF-8 is not
    counted, a truncated character is one place."""
    monkeypatch.setattr(json_text, "_SLICE_BYTES", slice_bytes)
    emoji, euro, fffd = "\U0001f600".encode(), "\u20ac".encode(), "\ufffd".encode()
    assert json_text.not_utf8(b"plain") is None
    assert json_text.not_utf8(b"\xef\xbb\xbf" + emoji + euro + fffd + b"\n" + emoji) is None
    assert json_text.not_utf8(emoji + b"\n" + euro + fffd + b"\xe2\x82" + b"x\xff" + fffd + b"\xe9") == (
        "line 2: not valid UTF-8 (bytes 0xe2 0x82 at column 3), read with U+FFFD in its place (and 2 more in the file)"
    )
    assert json_text.not_utf8(b"\xef\xbb\xbf" + euro + b"\xf0") == (
        "line 1: not valid UTF-8 (byte 0xf0 at column 2), read with U+FFFD in its place"
    )


@pytest.mark.skipif(not fast.AVAILABLE, reason="the C reader is not built")
def test_the_fast_road_gives_up_on_a_rest_that_is_not_utf8() -> None:
    """The C reader takes plain-ASCII histories only, so such bytes are in the rest of the
    document: DuckDB would refuse the batch's file of rests, and every file the fast road took
    would be read again the careful way (2,000 small jobs: 8 s instead of 2). The file alone is."""
    history = b'"history": [{"step": 1, "loss": 2.0}]'
    assert fast.parse(b'{"config": {"model_name": "caf\xc3\xa9"}, ' + history + b"}", 0) is not None
    assert fast.parse(b'{"config": {"model_name": "caf\xe9"}, ' + history + b"}", 0) is None
    assert fast.parse(b'{"config": {"model_name": "cafe"}, ' + history + b"}", 0) is not None
