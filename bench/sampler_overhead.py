"""Benchmark: the CPU the NVML sampler costs, as a share of one core.

    .venv/bin/python bench/sampler_overhead.py [--seconds 20] [--gpus 8] [--interval 1] [--call-us 0 100]
    .venv/bin/python bench/sampler_overhead.py --real      # on a GPU machine: the real NVML, every GPU

Runs the sampling loop (sampler.loop.run, until-stopped mode, spool in a temporary folder) for
``--seconds`` against the tests' fake NVML (tests/fake_nvml.py) with ``--gpus`` GPUs, once per
``--call-us``: the CPU time every fake NVML call burns. A real NVML call is mostly the driver's
ioctl, which counts as this process's (system) CPU time; 50-100 µs a call is the assumption, so
100 µs is the pessimistic case, and 0 µs isolates the sampler's own cost (threads, JSON, write).
A reading is 6 calls (utilization, memory, temperature, power, SM clock, clocks-event reasons).
With ``--real`` the real pynvml is used instead, on every GPU of the machine.

The CPU time is the process's user + system time (resource.getrusage, every thread) over the
run, divided by its wall time. Prints a Markdown table; docs/benchmark.md holds the figures.
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from fake_nvml import FakeNvml, gpus  # noqa: E402

from runlytics.sampler import loop as sampler  # noqa: E402

TARGET_PERCENT = 1.0


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(n_gpus: int, interval: float, seconds: float, call_us: float | None) -> dict[str, Any]:
    """One run; ``call_us`` None: the real NVML."""
    fake = None if call_us is None else FakeNvml(gpus(n_gpus), cost=call_us / 1e6)
    with tempfile.TemporaryDirectory() as tmp:
        options = sampler.Options(job_id="bench", spool=Path(tmp), interval=interval, host="bench")
        stop = threading.Event()
        timer = threading.Timer(seconds, stop.set)
        cpu0, wall0 = cpu_seconds(), time.monotonic()
        timer.start()
        try:
            code = sampler.run(options, nvml_module=fake, stop=stop, env={})
        finally:
            timer.cancel()
        cpu, wall = cpu_seconds() - cpu0, time.monotonic() - wall0
        lines = sum(len(p.read_bytes().splitlines()) for p in Path(tmp).glob("*.jsonl"))
    assert code == 0
    calls = "" if fake is None else f"{fake.calls}"
    cost = "real NVML" if call_us is None else f"{call_us:g} µs"
    return {"cost": cost, "wall": wall, "cpu": cpu, "lines": lines, "calls": calls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--call-us", type=float, nargs="+", default=[0.0, 100.0])
    parser.add_argument("--real", action="store_true", help="sample the machine's GPUs through the real NVML")
    args = parser.parse_args()
    costs: list[float | None] = [None] if args.real else list(args.call_us)

    what = "every real GPU" if args.real else f"{args.gpus} fake GPUs"
    print(f"{what}, {args.interval:g} s interval, {args.seconds:g} s per run")
    print(f"Python {platform.python_version()}, {platform.machine()}, {platform.system()}\n")
    print("| NVML call cost | wall | CPU time | lines | NVML calls | CPU, % of one core | target | met |")
    print("|---:|---:|---:|---:|---:|---:|---|---|")
    for call_us in costs:
        try:
            r = measure(args.gpus, args.interval, args.seconds, call_us)
        except sampler.NvmlUnavailable as error:
            sys.exit(f"sampler_overhead: {error}")
        percent = 100 * r["cpu"] / r["wall"]
        met = "yes" if percent < TARGET_PERCENT else "no"
        print(
            f"| {r['cost']} | {r['wall']:.1f} s | {1000 * r['cpu']:.0f} ms | {r['lines']} "
            f"| {r['calls']} | {percent:.3f} % | < {TARGET_PERCENT:g} % | {met} |"
        )


if __name__ == "__main__":
    main()
