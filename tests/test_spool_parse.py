"""The spool's fast road (DuckDB) against the careful one (Python's parse_line) on random lines.

The reference is the reader every spool went through before the fast road: each line of
``bytes.splitlines`` through ``gpu_samples.parse_line``, its warnings worded there.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pytest
from depth import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runlytics.ingest import gpu_samples
from runlytics.ingest.gpu_samples import Piece

if TYPE_CHECKING:
    from tests.conftest import Engine

T0 = 1_793_610_000.0  # 2026-11-02T09:00:00Z


def reference(data: bytes, first_line: int) -> tuple[list[tuple[Any, ...]], list[str]]:
    """Rows (in read order, seq = line index) and warnings as the careful road alone gives them."""
    rows, warnings = [], []
    if data.startswith(gpu_samples.BOM):  # the file's byte order mark: no part of its first line
        data = b"   " + data[len(gpu_samples.BOM) :]
    for k, line in enumerate(data.splitlines(), start=1):
        number = first_line + k - 1
        if not line.strip():
            continue
        try:
            row, problems = gpu_samples.parse_line(line)
        except ValueError as error:
            warnings.append(f"line {number}: {error}, skipped")
            continue
        rows.append(_key(*(row[c] for c in gpu_samples.COLUMNS), k))
        warnings.extend(f"line {number}: {problem}, dropped" for problem in problems)
    return rows, warnings


# One in-memory database for the module; each staging gets a connection of its own (a cursor: its
# own temporary tables, which is all stage() writes) instead of a new database, 30 ms each
_MEMORY = duckdb.connect()


def staged(pieces: list[Piece], roads: list[str] | None = None) -> tuple[list[tuple[Any, ...]], list[str], list[int]]:
    """Rows, warnings and rows per piece as the fast roads stage them; ``roads`` hears each piece's road."""
    con = _MEMORY.cursor()
    try:
        got = gpu_samples.stage(con, pieces)
        if roads is not None:
            roads.extend(g.road for g in got)
        columns = ", ".join(gpu_samples.COLUMNS)
        rows = [_key(*r) for r in con.execute(f"SELECT {columns}, seq FROM batch_gpu_samples ORDER BY seq").fetchall()]
    finally:
        con.close()
    return rows, [w for g in got for w in g.warnings], [g.rows for g in got]


def fast_parse(con: duckdb.DuckDBPyConnection, data: bytes) -> None:
    """The fast road's parse of one piece, to see which lines it takes (spool_parsed.clean)."""
    params = {"texts": [data[:-1].decode()], "pieces": [0], "bases": [0], "plain": [True]}
    con.execute(gpu_samples.SPLIT, params)
    con.execute(gpu_samples.FAST_PARSE)


def _key(*values: Any) -> tuple[Any, ...]:
    # floats by repr: NaN equals NaN, -0.0 differs from 0.0
    return tuple(repr(v) if isinstance(v, float) else v for v in values)


def check(data: bytes, first_line: int = 1) -> str:
    """Every fast road (the text road; on the file, DuckDB's JSON reader where it may take it, and
    its CSV reader) gives the reference; returns the road the file took."""
    expected_rows, expected_warnings = reference(data, first_line)
    rows, warnings, counts = staged([Piece(0, first_line, data)])
    assert rows == expected_rows
    assert warnings == expected_warnings
    assert counts == [len(expected_rows)]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "node-01-2026110209.jsonl"
        path.write_bytes(data)
        pieces = list(gpu_samples.read_pieces(path, 0, first_line))
        assert [p.path for p in pieces] == [path]  # the whole file, for DuckDB's readers
        roads: list[str] = []
        assert staged(pieces, roads) == (expected_rows, expected_warnings, [len(expected_rows)])
        if roads == ["json"]:  # the CSV road on the same file gives the same
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(gpu_samples, "_json_readable", lambda data: False)
                assert staged(pieces) == (expected_rows, expected_warnings, [len(expected_rows)])
        return roads[0]


# --- random lines -------------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False)
numbers = st.one_of(
    st.floats(min_value=-1e4, max_value=1e6),
    st.integers(min_value=-10, max_value=10**6),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),  # NaN, infinities, huge
    st.booleans(),
    st.none(),
    st.text(max_size=4),
)
texts = st.one_of(st.text(max_size=8), st.sampled_from(["node-01", "job-1", "GPU-5c1e", "", "é", "a\\b", "x:inf"]))
iso = st.builds(
    lambda y, mo, d, h, mi, s, frac, sep, zone: f"{y:04d}-{mo:02d}-{d:02d}{sep}{h:02d}:{mi:02d}:{s:02d}{frac}{zone}",
    st.integers(0, 9999), st.integers(0, 13), st.integers(0, 32), st.integers(0, 25), st.integers(0, 61),
    st.integers(0, 61), st.sampled_from(["", ".1", ".123", ".123456", ".1234567", ",5"]),
    st.sampled_from(["T", " ", "t"]), st.sampled_from(["", "Z", "+00:00", "+02:00", "-05:30", "z"]),
)  # fmt: skip
timestamps = st.one_of(
    st.floats(min_value=0, max_value=4e9),
    st.floats(min_value=T0, max_value=T0 + 86400).map(lambda t: round(t, 3)),
    st.integers(min_value=-(10**12), max_value=10**12),
    iso,
    st.floats(),
    st.booleans(),
    st.none(),
    st.text(max_size=5),
)
index = st.one_of(
    st.integers(0, 16), st.integers(-3, 2**31 - 1), st.floats(0, 8), st.booleans(), st.none(), st.text(max_size=2)
)
reasons = st.one_of(st.integers(0, 2**40), st.integers(-(2**63), 2**63 - 1), st.floats(0, 8), st.booleans(), st.none())


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    fields: dict[str, st.SearchStrategy[Any]] = {
        "ts": timestamps, "host": st.one_of(texts, numbers, st.lists(st.integers(), max_size=1)), "job_id": texts,
        "gpu_index": index, "index": index, "gpu_uuid": st.one_of(texts, numbers),
        **dict.fromkeys(gpu_samples.RANGES, numbers), "clocks_event_reasons": reasons,
        "extra": st.one_of(numbers, st.lists(st.integers(), max_size=2)),
    }  # fmt: skip
    for name, values in fields.items():
        if draw(st.booleans()) or name in ("ts", "job_id") and draw(st.booleans()):
            doc[name] = draw(values)
    if draw(st.integers(0, 4)) == 0:  # mostly a sample the sampler would write
        return doc
    return {
        "ts": draw(st.floats(T0, T0 + 86400).map(lambda t: round(t, 3))),
        "host": "node-01",
        "job_id": draw(st.sampled_from(["job-1", "job-2"])),
        "gpu_index": draw(st.integers(0, 7)),
        "gpu_uuid": draw(st.sampled_from(["GPU-a", "GPU-b", None])),
        **{name: draw(st.floats(0, 100)) for name in gpu_samples.RANGES},
        "clocks_event_reasons": draw(st.sampled_from([0, 1, 4, 64, None])),
        **dict(list(doc.items())[: draw(st.integers(0, 2))]),  # a field or two of any kind
    }


def encode(doc: dict[str, Any], style: int) -> bytes:
    text = json.dumps(doc, separators=((",", ":") if style % 2 else (", ", ": ")), ensure_ascii=style % 3 == 0)
    return text.encode()


MUTATIONS: list[Any] = [
    lambda b: b,
    lambda b: b,
    lambda b: b[: len(b) // 2],  # cut short
    lambda b: b[:-1] + b",}",  # trailing comma
    lambda b: b[:-1] + b', "ts": 1}',  # a repeated key
    lambda b: b[:-1] + b', "gpu_index": null}',
    lambda b: b[:-1] + b', "extra": NaN}',
    lambda b: b[:-1] + b', "extra": -Infinity}',
    lambda b: b[:-1] + b', "extra": nan}',
    lambda b: b"\xef\xbb\xbf" + b,  # BOM
    lambda b: b.replace(b"node", b"n\xffde"),  # not UTF-8
    lambda b: b.replace(b"node", b"n\x00de"),
    lambda b: b.replace(b"job", b"j\tob"),
    lambda b: b" \t" + b + b"  ",
    lambda b: b"[" + b + b"]",
    lambda b: b"\x0b" + b,
    lambda b: b.replace(b'"ts"', b'"t\\u0073"'),
]
blank = st.sampled_from([b"", b"   ", b"\t", b" \x0c "])
mutation = st.one_of(st.just(0), st.integers(0, len(MUTATIONS) - 1))  # half of the lines as encoded
encoded = st.builds(lambda doc, style, m: MUTATIONS[m](encode(doc, style)), documents(), st.integers(0, 5), mutation)
line = st.one_of(
    encoded,
    encoded,
    encoded,
    blank,
    st.binary(max_size=12),
    st.sampled_from([b"not json", b"{}", b"null", b"17", b'"s"', b"{"]),
)  # fmt: skip
breaks = st.sampled_from([b"\n", b"\n", b"\n", b"\r\n"])


@settings(max_examples=examples(60, 240), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(line, breaks), min_size=1, max_size=12), st.integers(1, 10**6))
def test_the_fast_road_gives_what_the_careful_road_gives(lines: list[tuple[bytes, bytes]], first_line: int) -> None:
    data = b"".join(text.replace(b"\n", b"").replace(b"\r", b"") + end for text, end in lines)
    check(data, first_line)


def _object(text: bytes) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


@settings(max_examples=examples(30, 120), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(encoded.filter(_object), min_size=1, max_size=12), st.integers(1, 10**6))
def test_the_json_road_gives_what_the_careful_road_gives(lines: list[bytes], first_line: int) -> None:
    # lines Python reads as objects (DuckDB's JSON reader then reads the file, unless a check
    # of _json_readable sends it to the CSV road): values to drop, fields of every kind
    data = b"".join(text.replace(b"\n", b"").replace(b"\r", b"") + b"\n" for text in lines)
    check(data, first_line)


def test_the_json_road_takes_the_samplers_files_and_leaves_the_rest() -> None:
    sample = {"ts": T0, "host": "node-01", "job_id": "j", "gpu_index": 0, "gpu_uuid": "GPU-0",
              "utilization_percent": 50.0, "memory_used_mb": 1e3, "memory_total_mb": 8e4, "temperature_c": 60.0,
              "power_w": None, "sm_clock_mhz": 1980.0, "clocks_event_reasons": 4,
              "mig_parent_uuid": None, "mig_gi_id": None, "mig_ci_id": None}  # fmt: skip
    good = encode(sample, 1) + b"\n" + encode({**sample, "gpu_index": 1, "power_w": 250.5}, 0) + b"\n"
    assert check(good) == "json"
    assert check(encode({**sample, "host": "x:nan"}, 1) + b"\n") == "csv"  # looks like NaN: not sure
    assert check(good + b"\n" + good) == "csv"  # a blank line: rows would not be lines
    assert check(good + b"not json\n") == "csv"  # the JSON reader refuses the file
    assert check(good.replace(b'"ts"', b'"ts", "x": [1,]', 1)) == "csv"
    assert check(good + encode({**sample, "gpu_index": -1}, 1) + b"\n") == "json"  # a line left to Python
    huge = encode({**sample, "power_w": 123.25}, 1).replace(b"123.25", b"1e400")  # inf to Python too
    assert check(good + huge + b"\n") == "json"


def test_files_read_together_keep_their_lines_apart(tmp_path: Path) -> None:
    # several whole files in one batch (one read_json of them all): each line's seq and warning
    # name its own file's line, whatever the files' sizes
    pieces = []
    for k, count in enumerate((7, 3, 12, 1)):
        path = tmp_path / f"node-{k:02d}-2026110209.jsonl"
        lines = [encode({"ts": T0 + i, "host": f"n{k}", "job_id": "j", "gpu_index": i % 4}, 1) for i in range(count)]
        lines[count // 2] = lines[count // 2].replace(b'"job_id":"j"', b'"job_id":""')  # left to Python
        path.write_bytes(b"\n".join(lines) + b"\n")
        pieces += gpu_samples.read_pieces(path, 0, 1)
    con = duckdb.connect()
    got = gpu_samples.stage(con, pieces)
    assert [g.road for g in got] == ["json"] * 4
    rows = con.execute("SELECT host, seq FROM batch_gpu_samples ORDER BY seq").fetchall()
    for k, piece in enumerate(pieces):
        expected_rows, expected_warnings = reference(piece.data, 1)
        assert got[k].warnings == expected_warnings and len(expected_warnings) == 1
        assert got[k].rows == len(expected_rows)
        before = sum(p.lines for p in pieces[:k])  # seq counts on through the batch
        assert [seq for host, seq in rows if host == f"n{k}"] == [before + row[-1] for row in expected_rows]


def test_a_file_appended_to_while_it_is_read_gives_only_what_was_read(tmp_path: Path) -> None:
    path = tmp_path / "node-01-2026110209.jsonl"
    lines = [encode({"ts": T0 + i, "job_id": "j", "gpu_index": 0}, 0) + b"\n" for i in range(5)]
    path.write_bytes(b"".join(lines[:3]))
    pieces = list(gpu_samples.read_pieces(path, 0, 1))
    with path.open("ab") as f:
        f.write(b"".join(lines[3:]))  # complete lines the JSON reader would read too
    con = duckdb.connect()
    (got,) = gpu_samples.stage(con, pieces)
    assert got.rows == 3 and got.road == "csv"
    assert con.execute("SELECT count(*) FROM batch_gpu_samples").fetchone() == (3,)


@settings(max_examples=30, deadline=None)
@given(st.lists(line, min_size=1, max_size=6))
def test_a_lone_carriage_return_breaks_lines_as_python_does(lines: list[bytes]) -> None:
    check(b"\r".join(lines) + b"\n")


def test_the_warnings_name_the_lines_counted_from_where_the_run_resumed() -> None:
    good = encode({"ts": T0, "job_id": "j", "gpu_index": 0, "utilization_percent": 50.0}, 1)
    data = b"\n".join([good, b"not json", b"", good.replace(b"50.0", b"150.0"), good]) + b"\n"
    rows, warnings, counts = staged([Piece(4096, 41, data)])
    assert warnings == [
        "line 42: not JSON (Expecting value: line 1 column 1 (char 0)), skipped",
        "line 44: utilization_percent '150.0' is not a number in range, dropped",
    ]
    assert counts == [3] and [r[-1] for r in rows] == [1, 4, 5]  # seq: the line in the batch
    assert rows[1][5] is None and rows[0][5] == "50.0"


def test_the_clean_lines_of_the_sampler_all_take_the_fast_road() -> None:
    con = duckdb.connect()
    lines = [
        encode({"ts": round(T0 + i * 0.25, 3), "host": "node-01", "job_id": "j", "gpu_index": i % 8,
                "gpu_uuid": f"GPU-{i % 8}", "utilization_percent": float(i % 101), "memory_used_mb": 1e3,
                "memory_total_mb": 8e4, "temperature_c": 60.0, "power_w": 250.5, "sm_clock_mhz": 1980.0,
                "clocks_event_reasons": 4, "mig_parent_uuid": None}, 0)
        for i in range(200)
    ]  # fmt: skip
    fast_parse(con, b"\n".join(lines) + b"\n")
    assert con.execute("SELECT count(*) FILTER (WHERE clean), count(*) FROM spool_parsed").fetchone() == (200, 200)


def test_pieces_end_at_a_line_end_and_a_cut_line_waits(tmp_path: Path) -> None:
    lines = [encode({"ts": T0 + i, "job_id": "j", "gpu_index": i % 3}, 0) + b"\n" for i in range(50)]
    path = tmp_path / "node-2026110209.jsonl"
    path.write_bytes(b"".join(lines) + b'{"ts": 1')
    whole = list(gpu_samples.read_pieces(path, 0, 1))
    small = list(gpu_samples.read_pieces(path, 0, 1, size=100))
    assert len(whole) == 1 and len(small) > 10
    assert b"".join(p.data for p in small) == whole[0].data == b"".join(lines)
    assert [p.first_line for p in small[:3]] == [1, 1 + small[0].lines, 1 + small[0].lines + small[1].lines]
    assert small[-1].end == whole[0].end == len(b"".join(lines))
    # read on from an offset: the lines after it, numbered on
    offset = len(b"".join(lines[:10]))
    (rest,) = gpu_samples.read_pieces(path, offset, 11)
    assert rest.data == b"".join(lines[10:]) and rest.first_line == 11 and rest.lines == 40
    # several pieces stage as one: the same rows in the same order
    assert staged(small)[0] == staged(whole)[0]


@pytest.mark.parametrize("ts", ["2026-11-02T09:00:00", "2026-11-02 09:00:00.5Z", "2026-11-02T09:00:00.123456+00:00"])
def test_plain_iso_timestamps_take_the_fast_road_too(ts: str) -> None:
    data = json.dumps({"ts": ts, "job_id": "j", "gpu_index": 0}).encode() + b"\n"
    check(data)
    con = duckdb.connect()
    fast_parse(con, data)
    assert con.execute("SELECT clean FROM spool_parsed").fetchone() == (True,)


def test_epoch_fractions_round_as_python_rounds() -> None:
    values = [T0 + k / 8 + j * 1e-7 for k in range(8) for j in range(-3, 4)] + [0.5e-6, 1.5e-6, 2.5e-6, 1e9 + 0.9999995]
    values += [9.223372036854776e18, 9223372036855.0, 32503680000.5, 253402300799.0, -1.5, 1e308]  # past the fast road
    data = b"".join(json.dumps({"ts": v, "job_id": "j", "gpu_index": 0}).encode() + b"\n" for v in values)
    check(data)
    assert not any(math.isnan(v) for v in values)


def test_a_spool_read_in_many_small_batches_gives_what_one_batch_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ingest_engine: Engine
) -> None:
    from tests.conftest import Lab

    def spool(folder: Path) -> Path:
        folder.mkdir()
        for host in ("node-01", "node-02"):
            lines = [encode({"ts": T0 + i, "host": host, "job_id": "j", "gpu_index": i % 2, "power_w": 10.0 + i}, 0)
                     for i in range(40)]  # fmt: skip
            lines[7] = b"not json"
            lines[9] = lines[3]  # a sample twice: stored once
            (folder / f"{host}-2026110209.jsonl").write_bytes(b"\n".join(lines) + b"\n" + b'{"ts": 1')
        return folder

    runs = {}
    for name, batch, piece in (("one", 2**27, 2**26), ("many", 700, 500)):
        (tmp_path / name).mkdir()
        lab = Lab(tmp_path / name, ingest_engine)  # on PostgreSQL: a database each, published by ``ingest --db``
        monkeypatch.setattr(gpu_samples, "BATCH_BYTES", batch)
        monkeypatch.setattr(gpu_samples, "PIECE_BYTES", piece)
        summary = lab.ingest(lab.root, spool_root=spool(tmp_path / name / "spool"))
        samples = lab.query(
            "SELECT host, gpu_index, ts, power_w FROM gpu_samples ORDER BY host, gpu_index, ts, power_w"
        )
        spooled = "SELECT rows, read_offset, warnings FROM ingest_files WHERE kind = 'spool' ORDER BY path"
        if ingest_engine.ingests:  # spool files ingested stay in the stage's ledger (docs/postgresql.md, "Ledger")
            assert lab.query(spooled) == []
        ledger = lab.own_query(spooled)  # the warehouse, or the stage
        runs[name] = (summary.gpu_samples, summary.warnings, summary.ingested, samples, ledger)
    assert runs["many"] == runs["one"]
    gpu_samples_read, warnings, ingested, samples, ledger = runs["one"]
    assert (gpu_samples_read, warnings, ingested, len(samples)) == (78, 2, 2, 76)
    assert [json.loads(w) for _, _, w in ledger] == [
        ["line 8: not JSON (Expecting value: line 1 column 1 (char 0)), skipped"]
    ] * 2
    assert {rows for rows, _, _ in ledger} == {40}


def test_a_path_with_glob_characters_is_read_as_itself(tmp_path: Path) -> None:
    decoy = tmp_path / "spool1"
    decoy.mkdir()
    (decoy / "a.jsonl").write_bytes(encode({"ts": T0, "job_id": "decoy", "gpu_index": 0}, 0) + b"\n")
    folder = tmp_path / "spool[1]"  # as a glob, it names the decoy's folder
    folder.mkdir()
    path = folder / "a.jsonl"
    path.write_bytes(encode({"ts": T0, "job_id": "real", "gpu_index": 0}, 0) + b"\n")
    rows, warnings, counts = staged(list(gpu_samples.read_pieces(path, 0, 1)))
    assert [r[0] for r in rows] == ["real"] and counts == [1] and warnings == []
