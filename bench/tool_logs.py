"""Benchmark: ingest of TensorBoard event files against TensorBoard's own EventAccumulator.

    python bench/tool_logs.py [--runs 40 --steps 5000 --tags 4] [--repeat 3]

Writes ``--runs`` run folders of one event file each (``--tags`` scalar tags logged at every one
of ``--steps`` steps, framed by TensorBoard's ``RecordWriter``), plus a copy of the real event
files of ``shared/realdata/tool_logs2/tfevents``, then measures, the median of ``--repeat``
repetitions, each measuring (a) to (d) one after the other (side by side on a shared machine):

- (a) ``EventAccumulator`` (scalars and tensors kept whole, no purge) loading every run folder
  and taking every scalar's points out (``Scalars(tag)`` for each tag) — what a program that
  reads event files with TensorBoard's reader does;
- (b) ``runlytics ingest`` of the same root into a warehouse already migrated (so the figure is
  the reading, checking, staging and merging, not the schema's creation);
- (c) the same ingest again with nothing new, the full road (``pipeline.ingest``: the warehouse
  opened, every file's size and time compared with the ledger, the run recorded);
- (c') the same re-run as ``runlytics ingest ROOT`` makes it: its no-op shortcut first
  (``quick.nothing_to_do``: the heartbeat's digest of the files, without opening the
  warehouse), the full road only if that says so (the benchmark checks it did not);
- (d) runlytics' reading alone: every event file through ``formats.tensorboard.parse`` (framing,
  both CRCs, Event decoding, scalars out), the part of (b) that does what (a) does.

The files' times are set a minute back once written, as a re-run finds files that their writers
are done with (a file changed in the last 2 s is read again by design: a writer may be at it).
Wall seconds are the figures; the CPU seconds of (a) and (b) (the process's, DuckDB's threads
included) are printed too, steadier than wall time on a shared machine.

Prints a Markdown table; docs/benchmark.md ("## Trainers' own logs") holds the figures.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

from runlytics.ingest import quick
from runlytics.ingest.formats import tensorboard
from runlytics.ingest.pipeline import ingest
from runlytics.warehouse import db, migrate

REPO = Path(__file__).resolve().parent.parent
REAL = REPO.parent / "shared" / "realdata" / "tool_logs2" / "tfevents"


def write_runs(root: Path, runs: int, steps: int, tags: int) -> int:
    """The runs' event files; the number of scalar points written."""
    for r in range(runs):
        folder = root / "runs" / f"run{r:03d}"
        folder.mkdir(parents=True)
        buffer = io.BytesIO()
        writer = RecordWriter(buffer)
        writer.write(event_pb2.Event(wall_time=1.7e9, file_version="brain.Event:2").SerializeToString())
        for step in range(1, steps + 1):
            values = [
                summary_pb2.Summary.Value(tag=f"train/metric_{t}", simple_value=1.0 / (step + t)) for t in range(tags)
            ]
            event = event_pb2.Event(wall_time=1.7e9 + step, step=step, summary=summary_pb2.Summary(value=values))
            writer.write(event.SerializeToString())
        (folder / f"events.out.tfevents.1700000000.bench.{r}.0").write_bytes(buffer.getvalue())
    if REAL.is_dir():
        shutil.copytree(REAL, root / "real", ignore=shutil.ignore_patterns("hf-lfs-pointer"))
    past = time.time() - 60
    for path in root.rglob("*"):
        os.utime(path, (past, past))
    return runs * steps * tags


def accumulate(root: Path) -> int:
    """Every scalar point of every run folder under root, through EventAccumulator."""
    points = 0
    folders = sorted({p.parent for p in root.rglob("events.out.tfevents.*")})
    for folder in folders:
        ea = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0}, purge_orphaned_data=False)
        ea.Reload()
        for tag in ea.Tags()["scalars"]:
            points += len(ea.Scalars(tag))
        for tag in ea.Tags()["tensors"]:
            if ea.SummaryMetadata(tag).plugin_data.plugin_name == "scalars":
                points += len(ea.Tensors(tag))
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--tags", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "logs"
        written = write_runs(root, args.runs, args.steps, args.tags)
        size = sum(p.stat().st_size for p in root.rglob("events.out.tfevents.*"))
        ea_seconds: list[float] = []
        ea_cpu: list[float] = []
        ingest_seconds: list[float] = []
        ingest_cpu: list[float] = []
        again_seconds: list[float] = []
        command_seconds: list[float] = []
        parse_seconds: list[float] = []
        files = sorted(root.rglob("events.out.tfevents.*"))
        ea_points = stored = 0
        for i in range(args.repeat):
            started, cpu = time.perf_counter(), time.process_time()
            ea_points = accumulate(root)
            ea_seconds.append(time.perf_counter() - started)
            ea_cpu.append(time.process_time() - cpu)
            started = time.perf_counter()
            parsed = sum(tensorboard.parse(path.read_bytes()).count for path in files)
            parse_seconds.append(time.perf_counter() - started)
            assert parsed == ea_points, (parsed, ea_points)
            warehouse = Path(tmp) / f"w{i}.duckdb"
            migrate.upgrade(warehouse)
            started, cpu = time.perf_counter(), time.process_time()
            first = ingest(warehouse, [root])
            ingest_seconds.append(time.perf_counter() - started)
            ingest_cpu.append(time.process_time() - cpu)
            started = time.perf_counter()
            again = ingest(warehouse, [root])
            again_seconds.append(time.perf_counter() - started)
            assert again.ingested == 0 and first.failed == 0, (first.as_dict(), again.as_dict())
            started = time.perf_counter()
            shortcut = quick.nothing_to_do(warehouse, [root])  # what `runlytics ingest` runs first
            command = shortcut or ingest(warehouse, [root])
            command_seconds.append(time.perf_counter() - started)
            assert shortcut is not None and command.ingested == 0, command.as_dict()
            with db.connection(warehouse, read_only=True) as con:
                stored = con.execute("SELECT count(*) FROM metric_points").fetchone()[0]  # type: ignore[index]
        a, b, c, c2, d = (
            statistics.median(x) for x in (ea_seconds, ingest_seconds, again_seconds, command_seconds, parse_seconds)
        )
        a_cpu, b_cpu = statistics.median(ea_cpu), statistics.median(ingest_cpu)
        print(f"{args.runs} generated runs x {args.steps} steps x {args.tags} tags ({written:,} points) + the real "
              f"event files: {size / 2**20:.1f} MiB of event files; EventAccumulator: {ea_points:,} points, "
              f"metric_points: {stored:,} rows (distinct (name, step))\n")  # fmt: skip
        print("| measure | seconds | | CPU seconds | |")
        print("|---|---:|---|---:|---|")
        print(f"| (a) EventAccumulator, every scalar of every run | {a:.2f} | | {a_cpu:.2f} | |")
        print(f"| (b) runlytics ingest (warehouse migrated) | {b:.2f} | {a / b:.1f}x faster than (a) "
              f"| {b_cpu:.2f} | {a_cpu / b_cpu:.1f}x less than (a) |")  # fmt: skip
        print(f"| (c) runlytics ingest again, nothing new: the full road | {c:.3f} | {100 * c / b:.1f} % of (b) | | |")
        print(f"| (c') the same re-run as `runlytics ingest` makes it (shortcut) | {c2:.3f} | "
              f"{100 * c2 / b:.1f} % of (b) | | |")  # fmt: skip
        print(f"| (d) runlytics reading alone (tensorboard.parse) | {d:.2f} | {a / d:.1f}x faster than (a) | | |")
        ratios = ", ".join(f"{x / y:.1f}x" for x, y in zip(ea_seconds, ingest_seconds, strict=True))
        print(f"\nmedians of {args.repeat} repetitions; (a)/(b) in each repetition: {ratios}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
