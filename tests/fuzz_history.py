"""Fuzz the C history reader (ingest/_history.c) built with AddressSanitizer and UBSan.

    .venv/bin/python tests/fuzz_history.py [--seconds 30] [--seed N]     (make fuzz; .ci/run)

The reader runs on every progress.json an ingest meets, so a read past a buffer or an undefined
operation on hostile bytes must never happen. tests/test_fast_path.py compares its answers with
DuckDB's; this checks its memory and arithmetic: it compiles _history.c with
``-fsanitize=address,undefined`` into a temporary folder, then runs itself again in a child
with libasan preloaded (Python is not built with it) and every sanitizer report fatal, which
parses mutated documents until the time is up. The seed corpus: the sample jobs, the odd
documents of tests/test_fast_path.py, histories made of the real trainer states under
shared/realdata (when that folder is there), escapes, and one long generated history.

Exit 0: no report, and every answer had the shape fast.py expects. Otherwise the child's exit
status, its report on stderr, and the input that caused it saved under test-artifacts/.
Without a C compiler or libasan it says so and exits 0, except under CI (.ci/run sets CI).
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "ingest" / "_history.c"
REALDATA = REPO.parent / "shared" / "realdata"
ARTIFACTS = Path(os.environ.get("RUNLYTICS_ARTIFACTS", REPO / "test-artifacts")) / "fuzz_history"
FLAGS = ["-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]
SANITIZER_ENV = {
    "ASAN_OPTIONS": "halt_on_error=1:detect_leaks=0:abort_on_error=0:exitcode=86",
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
    "PYTHONMALLOC": "malloc",  # Python's objects (the bytes handed in and out) in ASan's view too
}
# byte strings the mutations splice in: JSON's structure, the reader's keys, numbers and
# escapes at the edges of what it accepts
TOKENS = [
    b"{", b"}", b"[", b"]", b'"', b",", b":", b"\\", b" ", b"\n", b"\x00", b"\xff", b"\xc3\xa9",
    b'"history"', b'"step"', b'"gpus"', b'"timestamp"', b'"uuid"', b'"index"', b'"loss"', b'"Loss"',
    b'"samples"', b'"__runlytics_file__"', b'"utilization_percent"', b'"temperature_c"',
    b"0", b"-0", b"1e308", b"1e309", b"-1e-400", b"5e-324", b"NaN", b"-NaN", b"Infinity", b"-Infinity",
    b"1.", b"01", b"+1", b"18446744073709551616", b"0.30000000000000004441", b"1e99999", b"1E-99999",
    b"99999999999999999999999999999", b"0." + b"0" * 200 + b"1", b"1" * 130,
    b"true", b"false", b"null", b"\\u", b"\\u12G4", b"\\ud800", b"\\udc00", b"\\ud83d\\ude00", b"\\u0000",
    b'"2026-01-01T00:00:00Z"', b'"2024-02-29 23:59:59.999999+14:00"', b'"0001-01-01T00:00:00-23:59"',
    b'"9999-12-31T23:59:59.9999999"', b"1e11", b"-99999999999.5",
    b'"2026-01-01 00:00:00 UTC"', b'"2026-01-01T00:00:00.5GMT"', b" UTC", b"GMT",
]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30, help="how long to fuzz (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: from the clock, printed)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)  # the sanitized module's folder
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else time.time_ns() % 2**32
    if args.child:
        return fuzz(load(args.child), args.seconds, seed, args.child / "input.json")
    return build_and_run(args.seconds, seed)


def build_and_run(seconds: float, seed: int) -> int:
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    libasan = _libasan(cc) if cc else None
    if not cc or not libasan:
        print(f"fuzz_history: skipped: {'no C compiler' if not cc else 'no libasan'}", file=sys.stderr)
        return 1 if os.environ.get("CI") else 0
    with tempfile.TemporaryDirectory(prefix="fuzz_history-") as tmp:
        folder = Path(tmp)
        target = folder / f"_history{sysconfig.get_config_var('EXT_SUFFIX')}"
        include = sysconfig.get_paths()["include"]
        built = subprocess.run(
            [cc, "-shared", "-fPIC", *FLAGS, f"-I{include}", str(SOURCE), "-o", str(target), "-lm"],
            capture_output=True,
            text=True,
        )
        if built.returncode != 0:
            print(f"fuzz_history: the sanitizer build failed:\n{built.stderr}", file=sys.stderr)
            return built.returncode
        env = {**os.environ, **SANITIZER_ENV, "LD_PRELOAD": libasan}
        child = [sys.executable, __file__, "--child", str(folder), "--seconds", str(seconds), "--seed", str(seed)]
        done = subprocess.run(child, env=env)
        if done.returncode != 0:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            saved = ARTIFACTS / f"failure-seed-{seed}.json"
            shutil.copyfile(folder / "input.json", saved)
            print(f"fuzz_history: FAILED (exit {done.returncode}, seed {seed}); the input: {saved}", file=sys.stderr)
        return done.returncode


def _libasan(cc: str) -> str | None:
    found = subprocess.run([cc, "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    return found if found and os.path.isabs(found) and os.path.exists(found) else None


def load(folder: Path) -> ModuleType:
    (path,) = folder.glob("_history*.so")
    spec = importlib.util.spec_from_file_location("_history", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fuzz(history: ModuleType, seconds: float, seed: int, last_input: Path) -> int:
    rng = random.Random(seed)
    corpus = seeds()
    # the input in hand is on disk before each call: a sanitizer stops the process with no word
    fd = os.open(last_input, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    runs = taken = 0
    deadline = time.monotonic() + seconds
    for data in corpus:  # every seed as it is, first
        taken += check(history, data, fd)
        runs += 1
    while time.monotonic() < deadline:
        data = mutate(rng, rng.choice(corpus), corpus)
        took = check(history, data, fd)
        taken += took
        runs += 1
        if took and len(corpus) < 5000 and len(data) < 200_000:
            corpus.append(data)  # still valid after the mutation: a seed that reaches deeper
    os.close(fd)
    print(
        f"fuzz_history: {runs} documents in {seconds:g} s (seed {seed}), {taken} taken by the reader, "
        f"{len(corpus)} in the corpus; no sanitizer report"
    )
    return 0


def check(history: ModuleType, data: bytes, fd: int) -> int:
    """Parse one document and check the shape of the answer; 1 when the reader took it."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    pieces = history.split(data)  # the large-file cutter (fast.split): spans in order, inside the list
    if pieces is not None:
        begin, end, raw = pieces
        spans = struct.unpack(f"<{len(raw) // 8}q", raw)
        assert 0 < begin < end <= len(data) and data[begin : begin + 1] == b"[" and data[end - 1 : end] == b"]"
        assert list(spans) == sorted(spans) and all(begin < x < end for x in spans)
        assert all(spans[i] < spans[i + 1] for i in range(0, len(spans), 2))
    result = history.parse(data, 7)
    if result is None:
        return 0
    start, stop, n_entries, entries, n_gpus, gpus = result
    # what the reader takes, the cutter takes too, entry for entry
    assert pieces is not None and pieces[:2] == (start, stop) and len(pieces[2]) == 16 * n_entries
    assert 0 < start < stop <= len(data) and data[start : start + 1] == b"[" and data[stop - 1 : stop] == b"]"
    assert len(entries) == 17 and len(gpus) == 19
    bitmap = (n_entries + 7) // 8
    assert [len(b) for b in entries] == [4 * n_entries, 4 * n_entries, 8 * n_entries] + [bitmap, 8 * n_entries] * 7
    bitmap = (n_gpus + 7) // 8
    offsets = struct.unpack(f"<{n_gpus + 1}i", gpus[7])
    assert offsets[0] == 0 and list(offsets) == sorted(offsets) and offsets[-1] == len(gpus[8])
    sizes = [4 * n_gpus, 4 * n_gpus, 4 * n_gpus, 8 * n_gpus, bitmap, 8 * n_gpus, bitmap, 4 * (n_gpus + 1)]
    assert [len(b) for b in gpus[:8]] + [len(b) for b in gpus[9:]] == sizes + [bitmap, 8 * n_gpus] * 5
    assert struct.unpack(f"<{n_entries}i", entries[0]) == (7,) * n_entries
    # the rest of the document, history emptied, is a document the reader takes with no row
    rest = history.parse(data[:start] + b"[]" + data[stop:], 7)
    assert rest is not None and rest[2] == 0 and rest[4] == 0
    return 1


def mutate(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randint(0, len(buf))
        kind = rng.randrange(7)
        if kind == 0 and buf:  # one byte, any value
            buf[min(at, len(buf) - 1)] = rng.randrange(256)
        elif kind == 1:
            buf[at:at] = rng.choice(TOKENS)
        elif kind == 2:  # a token in place of a few bytes
            buf[at : at + rng.randint(1, 8)] = rng.choice(TOKENS)
        elif kind == 3:
            del buf[at : at + rng.randint(1, 16)]
        elif kind == 4:  # a slice repeated
            piece = buf[at : at + rng.randint(1, 64)]
            buf[at:at] = piece * rng.randint(1, 4)
        elif kind == 5:  # a piece of another document
            other = rng.choice(corpus)
            i = rng.randint(0, len(other))
            buf[at:at] = other[i : i + rng.randint(1, 256)]
        else:
            del buf[at:]
    return bytes(buf)


def seeds() -> list[bytes]:
    corpus = [p.read_bytes() for p in sorted((REPO / "samples" / "jobs").glob("*/progress.json"))]
    corpus += odd_documents()
    for path in sorted(REALDATA.glob("hf_trainer_state/**/trainer_state.json")):
        try:
            state = json.loads(path.read_bytes())
        except ValueError:
            corpus.append(path.read_bytes())  # not JSON at all (a Git LFS pointer)
            continue
        history = [{"step": e.get("step", 0), **e} for e in state.get("log_history", [])]
        corpus.append(json.dumps({"job_id": path.parent.name, "history": history}, allow_nan=True).encode())
    for escape in (rb"\u12G4", rb"\ud800", rb"\udc00", rb"\ud83d\ude00", rb"\ud800\u0041", rb"\u00", rb"\u0000"):
        corpus.append(b'{"history": [{"step": 1, "note": "a%sb", "gpus": [{"x": "%s"}]}]}' % (escape, escape))
    corpus.append(long_history())
    return corpus


def odd_documents() -> list[bytes]:
    """The RAW documents of tests/test_fast_path.py, read without importing it (no DuckDB here)."""
    tree = ast.parse((REPO / "tests" / "test_fast_path.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["RAW"]:
            assert isinstance(node.value, ast.Dict)
            return [_bytes(value) for value in node.value.values]
    return []


def _bytes(node: ast.expr) -> bytes:
    if isinstance(node, ast.Constant) and isinstance(node.value, bytes):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _bytes(node.left) + _bytes(node.right)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "encode":
        return ast.literal_eval(node.func.value).encode()
    raise ValueError(f"not a bytes literal: {ast.dump(node)[:80]}")


def long_history() -> bytes:
    """Enough entries and GPU readings to make every buffer grow a few times."""
    history = [
        {
            "step": step,
            "timestamp": f"2026-01-01T{step // 3600 % 24:02d}:{step // 60 % 60:02d}:{step % 60:02d}.{step:06d}Z",
            "loss": 1 / (step + 1),
            "samples": step * 8,
            "gpus": [
                {"index": i, "uuid": f"GPU-{i}" * (step % 3), "utilization_percent": step % 101} for i in range(4)
            ],
        }
        for step in range(3000)
    ]
    return json.dumps({"job_id": "long", "history": history}).encode()


if __name__ == "__main__":
    sys.exit(main())
