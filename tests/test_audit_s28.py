"""Audit 28: what independent readers of the contracts found, and what earlier sessions left.

1. ``sql``'s plain table (and ``insights``' table) printed a text's line break as it was: a job id
   or a config text holding one split its row over two lines, under the columns of no row.
"""

from __future__ import annotations

import pytest

from runlytics.cli.output import _write_rows


def test_a_table_row_stays_one_line_whatever_its_text_holds(capsys: pytest.CaptureFixture[str]) -> None:
    _write_rows(["job_id", "n"], [("a\nb", 1), ("tab\there\r", 2), ("esc\x1b\u2028\x85", None)], "table")
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "job_id             n   ",
        "-----------------  ----",
        "a\\nb               1   ",
        "tab\\there\\r        2   ",
        "esc\\x1b\\u2028\\x85  NULL",
        "(3 rows)",
    ]

    _write_rows(["a\nb"], [("x",)], "table")
    assert capsys.readouterr().out.splitlines() == ["a\\nb", "----", "x   ", "(1 row)"]
