"""nvidia-smi CSV logs (inputs.md section 2): the pure parser, on the real files and on made-up ones.

Row counts below were counted independently of the parser, in a shell:
    grep -vc '^timestamp' FILE                                   (header lines left out)
    iconv -f UTF-16 -t UTF-8 utf16le-bom-windows.csv | grep -vc '^timestamp'
    grep -c ', 0, NVIDIA' a6000x2-looped.csv / grep -c ', 1, NVIDIA' ...   (per GPU)
and the first and last values read off the files' first and last sample lines.
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from pathlib import Path

import pytest
from conftest import REALDATA, Engine, Lab
from hypothesis import given, settings
from hypothesis import strategies as st

from runlytics.ingest.nvidia_smi import NotNvidiaSmiCsv, Parsed, parse

SMI = REALDATA / "nvidia_smi_csv"
OTHER = REALDATA / "gpu_other"
# the keys of a parsed row, in order: a GPU sample's fields (docs/views.md, table gpu_samples)
# less the job and host, which the import names; written out here, not read from the parser
ROW_KEYS = (
    "gpu_index", "ts", "gpu_uuid", "utilization_percent", "memory_used_mb", "memory_total_mb", "temperature_c",
    "power_w", "sm_clock_mhz", "clocks_event_reasons",
)  # fmt: skip
NOHEADER_COLUMNS = [
    "timestamp",
    "utilization.gpu",
    "utilization.memory",
    "memory.used",
    "memory.free",
    "temperature.gpu",
    "power.draw",
]


def read(path: Path, **kwargs: object) -> Parsed:
    return parse(path.read_bytes(), **kwargs)  # type: ignore[arg-type]


def row(ts: datetime, gpu_index: int = 0, **values: float | str | None) -> dict[str, object]:
    """An expected row: every key present, the ones not named None."""
    return {**dict.fromkeys(ROW_KEYS), "ts": ts, "gpu_index": gpu_index, **values}


def smi(*lines: str) -> bytes:
    return "".join(line + "\n" for line in lines).encode()


# --- the real files: every file in nvidia_smi_csv/, exact counts, first and last rows ---------------

# file -> (rows, first row, last row); timestamps as written, since the default zone is UTC
REAL = {
    "rtx2070-looped.csv": (
        232,  # grep -vc '^timestamp': 233 lines, one header
        row(datetime(2023, 6, 22, 18, 53, 36, 635000), utilization_percent=16.0, memory_used_mb=754.0,
            memory_total_mb=8192.0),
        row(datetime(2023, 6, 22, 19, 0, 45, 23000), utilization_percent=3.0, memory_used_mb=604.0,
            memory_total_mb=8192.0),
    ),
    "rtx2070-repeated-headers.csv": (
        224,  # grep -vc '^timestamp': 448 lines, of which 224 headers
        row(datetime(2023, 6, 22, 18, 56, 56, 252000), utilization_percent=22.0, memory_used_mb=841.0,
            memory_total_mb=8192.0),
        row(datetime(2023, 6, 22, 19, 0, 45, 23000), utilization_percent=3.0, memory_used_mb=604.0,
            memory_total_mb=8192.0),
    ),
    "power-only-50ms.csv": (
        73,  # grep -vc '^timestamp': 74 lines, one header
        row(datetime(2024, 10, 30, 18, 42, 33, 189000), power_w=22.89),
        row(datetime(2024, 10, 30, 18, 42, 36, 813000), power_w=22.63),
    ),
    "a6000x2-looped.csv": (
        946,  # grep -vc '^timestamp': 947 lines, one header; 473 per GPU
        row(datetime(2024, 11, 23, 12, 23, 29, 950000), 0, utilization_percent=92.0, memory_used_mb=25073.0,
            memory_total_mb=49140.0),
        row(datetime(2024, 11, 23, 12, 31, 28, 635000), 1, utilization_percent=0.0, memory_used_mb=15.0,
            memory_total_mb=49140.0),
    ),
    "utf16le-bom-windows.csv": (
        434,  # iconv -f UTF-16 | grep -vc '^timestamp': 435 lines, one header
        row(datetime(2026, 8, 1, 3, 59, 40, 361000), utilization_percent=100.0, memory_used_mb=10549.0,
            memory_total_mb=11264.0),
        row(datetime(2026, 8, 1, 4, 6, 58, 68000), utilization_percent=2.0, memory_used_mb=321.0,
            memory_total_mb=11264.0),
    ),
}  # fmt: skip


def test_every_real_file_is_covered() -> None:
    assert sorted(p.name for p in SMI.iterdir()) == sorted(REAL)


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_file_counts_and_end_rows(name: str) -> None:
    count, first, last = REAL[name]
    parsed = read(SMI / name)
    assert parsed.warnings == []
    assert len(parsed.rows) == count
    assert parsed.rows[0] == first
    assert parsed.rows[-1] == last
    assert all(set(r) == set(ROW_KEYS) for r in parsed.rows)


def test_repeated_headers_give_the_same_samples_as_the_looped_log() -> None:
    # both files are the same logger's output over overlapping times: the 224 samples of the
    # header-before-every-line file are the looped file's last 224 (232 - 8), value for value
    looped = read(SMI / "rtx2070-looped.csv").rows
    repeated = read(SMI / "rtx2070-repeated-headers.csv").rows
    assert len(repeated) == 224 == len(looped) - 8
    assert repeated == looped[8:]


def test_utf16_file_decodes() -> None:
    data = (SMI / "utf16le-bom-windows.csv").read_bytes()
    assert data[:2] == b"\xff\xfe" and "\r\n".encode("utf-16-le") in data
    rows = parse(data).rows
    assert len(rows) == 434
    assert {r["memory_total_mb"] for r in rows} == {11264.0}


def test_power_only_file_is_gpu_0_with_power_and_nothing_else() -> None:
    rows = read(SMI / "power-only-50ms.csv").rows
    assert {r["gpu_index"] for r in rows} == {0}
    assert all(isinstance(r["power_w"], float) and 20 < r["power_w"] < 30 for r in rows)  # type: ignore[operator]
    others = set(ROW_KEYS) - {"ts", "gpu_index", "power_w"}
    assert all(r[k] is None for r in rows for k in others)


def test_a6000_two_gpus_interleaved_and_real_zeros() -> None:
    rows = read(SMI / "a6000x2-looped.csv").rows
    gpu0 = [r for r in rows if r["gpu_index"] == 0]
    gpu1 = [r for r in rows if r["gpu_index"] == 1]
    assert len(gpu0) == len(gpu1) == 473
    assert [r["gpu_index"] for r in rows[:4]] == [0, 1, 0, 1]
    # GPU 1 idles: 0 % is a reading, not a missing value (3 of its samples show 1 %)
    utilization = [r["utilization_percent"] for r in gpu1]
    assert utilization.count(0.0) == 470 and utilization.count(1.0) == 3
    assert {r["memory_used_mb"] for r in gpu1} == {15.0}


# --- time zones ---------------------------------------------------------------------------------------


def test_timezone_shifts_local_times_to_utc() -> None:
    # June in Berlin is CEST (UTC+2), November is CET (UTC+1)
    summer = read(SMI / "rtx2070-looped.csv", timezone="Europe/Berlin").rows[0]
    winter = read(SMI / "a6000x2-looped.csv", timezone="Europe/Berlin").rows[0]
    assert summer["ts"] == datetime(2023, 6, 22, 16, 53, 36, 635000)
    assert winter["ts"] == datetime(2024, 11, 23, 11, 23, 29, 950000)
    assert read(SMI / "power-only-50ms.csv", timezone="America/New_York").rows[0]["ts"] == datetime(
        2024, 10, 30, 22, 42, 33, 189000
    )


def test_unknown_timezone_is_a_clear_value_error() -> None:
    for name in ("Mars/Olympus", "", "../etc/passwd"):
        with pytest.raises(ValueError, match="unknown timezone"):
            parse(smi("timestamp, power.draw [W]"), timezone=name)


def test_the_hour_the_clocks_go_back_stays_in_order() -> None:
    # Berlin, 2024-10-27: 02:00-02:59 local happens twice (CEST, then CET); a log runs forward
    data = smi(
        "timestamp, power.draw [W]",
        "2024/10/27 02:30:00.000, 1 W",  # first pass: 00:30 UTC
        "2024/10/27 02:59:30.000, 2 W",  # 00:59:30 UTC
        "2024/10/27 02:00:00.000, 3 W",  # second pass: 01:00 UTC
        "2024/10/27 02:30:00.000, 4 W",  # 01:30 UTC
        "2024/10/27 03:00:00.000, 5 W",  # 02:00 UTC
    )
    times = [r["ts"] for r in parse(data, timezone="Europe/Berlin").rows]
    assert times == [
        datetime(2024, 10, 27, h, m, s) for h, m, s in [(0, 30, 0), (0, 59, 30), (1, 0, 0), (1, 30, 0), (2, 0, 0)]
    ]


def test_gpus_stamped_out_of_order_in_that_hour_stay_in_the_first_pass() -> None:
    data = smi(
        "timestamp, index, power.draw [W]",
        "2024/10/27 02:30:00.020, 0, 1 W",
        "2024/10/27 02:30:00.010, 1, 1 W",  # a few ms before GPU 0's: still the first pass (00:30 UTC)
    )
    times = [r["ts"] for r in parse(data, timezone="Europe/Berlin").rows]
    assert times == [datetime(2024, 10, 27, 0, 30, 0, 20000), datetime(2024, 10, 27, 0, 30, 0, 10000)]


def test_own_offset_wins_over_the_timezone() -> None:
    # the h100x8 file writes ISO-8601 with +08:00: --timezone does not apply to it
    berlin = read(OTHER / "h100x8-nounits-own-header.csv", timezone="Europe/Berlin").rows
    assert berlin[0]["ts"] == datetime(2025, 9, 8, 9, 26, 50)


# --- values -------------------------------------------------------------------------------------------


def test_missing_markers_are_none_never_zero() -> None:
    data = smi(
        "timestamp, index, uuid, utilization.gpu [%], memory.used [MiB], temperature.gpu, power.draw [W], "
        "clocks.sm [MHz]",
        "2024/01/01 00:00:00.000, 0, GPU-abc, [N/A], [Not Supported], N/A, , 1350 MHz",
        "2024/01/01 00:00:01.000, 1, [N/A], 98 %, 17200 MiB, 68, 301.20 W, [Not Supported]",
    )
    parsed = parse(data)
    assert parsed.warnings == []
    assert parsed.rows == [
        row(datetime(2024, 1, 1), 0, gpu_uuid="GPU-abc", sm_clock_mhz=1350.0),
        row(datetime(2024, 1, 1, 0, 0, 1), 1, utilization_percent=98.0, memory_used_mb=17200.0, temperature_c=68.0,
            power_w=301.2),
    ]  # fmt: skip


def test_columns_in_any_order_with_unknown_ones_ignored() -> None:
    data = smi(
        "name, Power.Draw [W], fan.speed [%], pstate, TIMESTAMP, clocks.current.sm [MHz], utilization.memory [%], "
        "index",
        "NVIDIA H100, 301.20 W, [N/A], P0, 2024/01/01 00:00:00.000, 1980 MHz, 55 %, 3",
    )
    assert parse(data).rows == [row(datetime(2024, 1, 1), 3, power_w=301.2, sm_clock_mhz=1980.0)]


def test_bad_value_drops_only_that_value() -> None:
    data = smi(
        "timestamp, index, utilization.gpu [%], memory.used [MiB], power.draw [W]",
        "2024/01/01 00:00:00.000, 0, lots, 17 GiB, 300 W",
        "2024/01/01 00:00:01.000, 0, 140 %, 10 MiB, [Unknown Error]",
    )
    parsed = parse(data)
    assert parsed.rows == [
        row(datetime(2024, 1, 1), power_w=300.0),
        row(datetime(2024, 1, 1, 0, 0, 1), memory_used_mb=10.0),
    ]
    assert len(parsed.warnings) == 4
    assert parsed.warnings[0].startswith("line 2: utilization.gpu")
    assert parsed.warnings[1].startswith("line 2: memory.used")
    assert parsed.warnings[2].startswith("line 3: utilization.gpu") and "out of range" in parsed.warnings[2]
    assert parsed.warnings[3].startswith("line 3: power.draw")


def test_bad_lines_are_skipped_with_their_line_numbers() -> None:
    data = smi(
        "timestamp, index, power.draw [W]",
        "2024/01/01 00:00:00.000, 0, 300 W",
        "yesterday, 0, 300 W",
        "2024/01/01 00:00:01.000, x, 300 W",
        "",
        "No devices were found",
        "2024/01/01 00:00:02.000, 0, 30",  # cut short: the logger was killed mid-line
    ).rstrip(b"\n")
    parsed = parse(data)
    assert [r["ts"] for r in parsed.rows] == [datetime(2024, 1, 1), datetime(2024, 1, 1, 0, 0, 2)]
    assert [w.split(":")[0] for w in parsed.warnings] == ["line 3", "line 4", "line 6"]


def test_cut_short_sample_line_is_skipped() -> None:
    data = smi("timestamp, index, utilization.gpu [%], power.draw [W]", "2024/01/01 00:00:00.000, 0, 5 %, 1 W")
    parsed = parse(data + b"2024/01/01 00:00:01.000, 0, 9")
    assert len(parsed.rows) == 1
    assert parsed.warnings == ["line 3: 3 fields where the header has 4; skipped"]


@pytest.mark.parametrize(
    "encode",
    [
        lambda text: text.encode(),
        lambda text: text.encode("utf-8-sig"),
        lambda text: text.encode("utf-16"),  # BOM, native order
        lambda text: b"\xfe\xff" + text.encode("utf-16-be"),
        lambda text: b"\xff\xfe" + text.replace("\n", "\r\n").encode("utf-16-le"),  # PowerShell's
    ],
)
def test_encodings_and_line_ends(encode: object) -> None:
    text = "timestamp, power.draw [W]\n2024/01/01 00:00:00.000, 1 W\n2024/01/01 00:00:01.000, 2 W"
    parsed = parse(encode(text))  # type: ignore[operator]
    assert [r["power_w"] for r in parsed.rows] == [1.0, 2.0] and parsed.warnings == []


def test_invalid_utf8_is_not_a_log() -> None:
    with pytest.raises(NotNvidiaSmiCsv, match="not UTF-8"):
        parse(b"timestamp, power.draw [W]\n\xff\xff\n")


def test_a_changed_header_is_followed_with_a_warning() -> None:
    data = smi(
        "timestamp, power.draw [W]",
        "2024/01/01 00:00:00.000, 1 W",
        "timestamp, index, utilization.gpu [%]",
        "2024/01/01 00:00:01.000, 2, 50 %",
    )
    parsed = parse(data)
    assert parsed.rows == [row(datetime(2024, 1, 1), power_w=1.0), row(datetime(2024, 1, 1, 0, 0, 1), 2,
                           utilization_percent=50.0)]  # fmt: skip
    assert parsed.warnings == ["line 3: a different header; the lines after it are read by it"]


# --- gpu_other: headerless, user-written header, no timestamp, not nvidia-smi at all ---------------------


def test_noheader_log_with_named_columns() -> None:
    parsed = read(OTHER / "noheader-temp-power.csv", columns=NOHEADER_COLUMNS)
    assert parsed.warnings == []
    assert len(parsed.rows) == 1923  # grep -vc '^timestamp' (no header lines at all) = wc -l
    assert parsed.rows[0] == row(datetime(2026, 4, 25, 16, 6, 6, 780000), utilization_percent=0.0,
                                 memory_used_mb=2.0, temperature_c=27.0, power_w=11.64)  # fmt: skip
    assert parsed.rows[-1] == row(datetime(2026, 4, 25, 18, 46, 43, 733000), utilization_percent=0.0,
                                  memory_used_mb=2.0, temperature_c=27.0, power_w=11.28)  # fmt: skip


def test_noheader_log_without_columns_says_to_name_them() -> None:
    with pytest.raises(NotNvidiaSmiCsv, match="no header line with a timestamp column; name the columns"):
        read(OTHER / "noheader-temp-power.csv")


def test_columns_must_include_timestamp() -> None:
    with pytest.raises(NotNvidiaSmiCsv, match="no timestamp"):
        read(OTHER / "noheader-temp-power.csv", columns=["utilization.gpu", "power.draw"])


def test_h100_gpu_column_is_the_gpu_index() -> None:
    rows = read(OTHER / "h100x8-nounits-own-header.csv").rows
    # 43 sample lines (grep -vc '^timestamp'): five full samples of 8 GPUs, the last one cut to GPUs 0-2
    assert len(rows) == 43
    assert [sum(r["gpu_index"] == g for r in rows) for g in range(8)] == [6, 6, 6, 5, 5, 5, 5, 5]
    assert rows[0] == row(datetime(2025, 9, 8, 9, 26, 50), 0, memory_used_mb=4.0, memory_total_mb=81559.0,
                          power_w=74.01, temperature_c=33.0)  # fmt: skip
    assert rows[-1] == row(datetime(2025, 9, 8, 9, 26, 58), 2, memory_used_mb=4.0, memory_total_mb=81559.0,
                           power_w=72.96, temperature_c=35.0)  # fmt: skip


def test_p100_header_without_timestamp_is_refused() -> None:
    with pytest.raises(NotNvidiaSmiCsv, match="no timestamp column"):
        read(OTHER / "p100-nounits-na-fan.csv")


def test_codecarbon_csv_is_not_an_nvidia_smi_log() -> None:
    # it has a timestamp column, but nothing a GPU sample is made of
    with pytest.raises(NotNvidiaSmiCsv, match="not an nvidia-smi"):
        read(OTHER / "codecarbon-emissions-a100.csv")


@pytest.mark.parametrize(
    "header",
    ["timestamp", "timestamp, name", "timestamp, pci.bus_id, driver_version, pstate, fan.speed [%]",
     "name, timestamp, clocks_event_reasons.active, memory.free [MiB], utilization.memory [%]"],
)  # fmt: skip
def test_a_timestamp_with_only_other_query_fields_is_a_log_without_readings(header: str) -> None:
    """inputs.md: "any subset that includes timestamp": samples of GPU 0, every reading missing."""
    values = {"timestamp": "2026/01/05 08:00:00.000", "name": "NVIDIA H100", "pci.bus_id": "00000000:01:00.0",
              "driver_version": "550.90", "pstate": "P0", "fan.speed [%]": "30 %", "memory.free [MiB]": "100 MiB",
              "clocks_event_reasons.active": "0x0000", "utilization.memory [%]": "4 %"}  # fmt: skip
    names = header.split(", ")
    line = ", ".join(values[n] for n in names)
    later = line.replace("08:00:00.000", "08:00:05.000")
    assert parse(smi(header, line, later)) == Parsed(
        [row(datetime(2026, 1, 5, 8, 0, 0)), row(datetime(2026, 1, 5, 8, 0, 5))], []
    )


@pytest.mark.parametrize(
    "header", ["timestamp, project_name, duration", "timestamp, name, gpu_model", "timestamp, x.y"]
)
def test_a_timestamp_beside_foreign_columns_is_still_refused(header: str) -> None:
    with pytest.raises(NotNvidiaSmiCsv, match="not an nvidia-smi --query-gpu log"):
        parse(smi(header, "2026/01/05 08:00:00.000, a, b"))


def test_a_timestamp_only_log_is_imported_as_gpu_0_without_readings(tmp_path: Path, ingest_engine: Engine) -> None:
    from runlytics.ingest.pipeline import CsvImport

    lab = Lab(tmp_path, ingest_engine)
    lab.write_job("j", {"job_id": "j", "status": "running", "history": [{"step": 1, "loss": 1.0}]})
    log = tmp_path / "t.csv"
    log.write_bytes(smi("timestamp", "2026/01/05 08:00:00.000", "2026/01/05 08:00:05.000"))
    summary = lab.ingest(csv_imports=[CsvImport(log, "j", "UTC", "ws-1")])
    assert summary.failed == 0
    rows = lab.query(
        "SELECT host, gpu_index, ts, utilization_percent, memory_used_mb, temperature_c FROM gpu_samples ORDER BY ts"
    )
    assert rows == [
        ("ws-1", 0, datetime(2026, 1, 5, 8, 0, 0), None, None, None),
        ("ws-1", 0, datetime(2026, 1, 5, 8, 0, 5), None, None, None),
    ]
    job = lab.analytics("j")
    assert job is not None and job["resource_utilization"]["average_gpu_utilization"] is None


@pytest.mark.parametrize("name", ["a100-sxm4-mig.nvidia-smi-q-x.xml", "rtx4090-driver535.nvidia-smi-q-x.xml"])
@pytest.mark.parametrize("columns", [None, ["timestamp", "utilization.gpu"]])
def test_an_nvidia_smi_xml_report_is_named_as_xml_not_sent_to_columns(name: str, columns: list[str] | None) -> None:
    """The real ``nvidia-smi -q -x`` reports (``<?xml version="1.0" ?>`` then ``<nvidia_smi_log>``):
    the reason says XML and how to log a CSV, never "name the columns with --columns", which can't
    read XML (with --columns given, neither)."""
    data = (OTHER / name).read_bytes()
    assert data.startswith(b'<?xml version="1.0" ?>') and b"<nvidia_smi_log>" in data[:200]
    with pytest.raises(NotNvidiaSmiCsv) as caught:
        parse(data, columns=columns)
    reason = str(caught.value)
    assert reason.startswith("an XML document (nvidia-smi -q -x output?), not an nvidia-smi --query-gpu CSV log")
    assert "--columns" not in reason and "--query-gpu=timestamp," in reason


def test_empty_and_header_only_logs_have_no_samples() -> None:
    assert parse(b"") == Parsed([], [])
    assert parse(b"\r\n\n") == Parsed([], [])
    assert parse(smi("timestamp, index, power.draw [W]")) == Parsed([], [])


# --- garbage never crashes ------------------------------------------------------------------------------

HEADER = "timestamp, index, uuid, utilization.gpu [%], memory.used [MiB], temperature.gpu, power.draw [W]\n"
PIECES = ["2024/01/01 00:00:00.000", "2025-09-08T17:26:50+08:00", "0001-01-01T00:00:00+08:00", "9999/12/31 23:59:59",
          ", ", ",", "[N/A]", "[Not Supported]", " %", " MiB", " W", "0", "98", "1e400", "9" * 400, "-1", ".", "\n",
          "\r\n", "timestamp", "\ufeff", "\x00", "é"]  # fmt: skip


def check(parsed: Parsed) -> None:
    for r in parsed.rows:
        assert tuple(r) == ROW_KEYS
        assert isinstance(r["ts"], datetime) and r["ts"].tzinfo is None
        assert isinstance(r["gpu_index"], int)
    assert all(w.startswith("line ") for w in parsed.warnings)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_garbage_bytes_parse_or_are_not_an_nvidia_smi_csv(data: bytes) -> None:
    # the only refusal of a whole file is "not an nvidia-smi CSV"; a bad line is a warning
    with contextlib.suppress(NotNvidiaSmiCsv):
        check(parse(data))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=60).map("".join), st.sampled_from(["UTC", "Europe/Berlin"]))
def test_garbage_after_a_header_never_raises(body: str, timezone: str) -> None:
    check(parse((HEADER + body).encode(), timezone=timezone))
    check(parse(body.encode(), timezone=timezone, columns=["timestamp", "gpu", "power.draw"]))
