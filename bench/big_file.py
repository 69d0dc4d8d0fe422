"""Peak memory of ``runlytics ingest`` for one very large progress.json, on either road.

    python bench/generate.py /tmp/big/fast --jobs 1 --steps 2000000 --gpus 2   # ~980 MiB
    python bench/big_file.py /tmp/big/fast/job-000000/progress.json

Copies the file into a second job folder with one value to warn about (the first history
entry's loss becomes ``"x"``), so that the fast road refuses it and the careful road reads it
(in pieces: ingest/fast.py, ``split``). Each road is ingested into an empty warehouse in a
fresh process, one after the other, under ``/usr/bin/time -v`` (peak RSS of the whole process).
Prints a Markdown table for docs/benchmark.md, "One very large file". The copies and
warehouses live in a temporary folder next to the file, deleted at the end.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LIMIT_GIB = 3.0  # issue 15: a 1 GiB file ingests within 3 GiB on either road


def careful_copy(source: Path, target: Path) -> None:
    """``source`` with its first history entry's loss written as the string "x"."""
    data = source.read_bytes()
    at = data.index(b'"history"')
    match = re.compile(rb'"loss": *(-?[0-9.eE+-]+)').search(data, at)
    if match is None:
        raise SystemExit("no numeric loss in the history")
    target.parent.mkdir(parents=True)
    with target.open("wb") as out:
        out.write(data[: match.start(1)])
        out.write(b'"x"')
        out.write(data[match.end(1) :])


def measure(folder: Path, warehouse: Path) -> tuple[float, float]:
    """Peak RSS in GiB and wall seconds of one ingest."""
    start = time.perf_counter()
    result = subprocess.run(
        ["/usr/bin/time", "-v", sys.executable, "-m", "runlytics", "ingest", str(folder), "--db", str(warehouse),
         "--json"],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    if result.returncode not in (0, 1):
        raise SystemExit(f"ingest failed:\n{result.stderr[-2000:]}")
    peak_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))  # type: ignore[union-attr]
    return peak_kib / (1 << 20), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", type=Path, help="a generated progress.json the fast road takes")
    parser.add_argument("--road", choices=("fast", "careful"), help="measure this road only")
    args = parser.parse_args()
    size_gib = args.file.stat().st_size / (1 << 30)
    with tempfile.TemporaryDirectory(dir=args.file.parent.parent.parent) as tmp:
        roots = {"fast (C reader)": Path(tmp) / "fast", "careful (DuckDB's reader, in pieces)": Path(tmp) / "careful"}
        (roots["fast (C reader)"] / "job").mkdir(parents=True)
        shutil.copyfile(args.file, roots["fast (C reader)"] / "job" / "progress.json")
        careful_copy(args.file, roots["careful (DuckDB's reader, in pieces)"] / "job" / "progress.json")
        time.sleep(2.5)  # settled, as between cron runs
        print(f"| file | road | peak RSS | RSS / file | wall | within {LIMIT_GIB:g} GiB |")
        print("|---|---|---:|---:|---:|---|")
        for road, root in roots.items():
            if args.road and not road.startswith(args.road):
                continue
            peak, seconds = measure(root, Path(tmp) / f"{root.name}.duckdb")
            print(
                f"| {size_gib * 1024:,.0f} MiB | {road} | {peak:.2f} GiB | {peak / size_gib:.1f}x | {seconds:.1f} s "
                f"| {'yes' if peak <= LIMIT_GIB else 'no'} |"
            )
            shutil.rmtree(root)  # one copy on disk at a time besides the source


if __name__ == "__main__":
    main()
