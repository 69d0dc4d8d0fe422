#!/usr/bin/env bash
# device_check.sh: run `runlytics sample` against the real GPUs of this machine and check what it
# read, field by field, against nvidia-smi (docs/sampler.md, "What a device run should check").
# Installs nothing, needs no network, changes no GPU setting; a load of 4 GiB held on CUDA device
# 0 (through libcuda, with memsets) runs while the sampler does, when libcuda is there.
#
#   bash bench/device_check.sh [SECONDS]     (from the repository root, with its .venv; default 20)
#
# Prints a Markdown report on stdout, for docs/sampler.md; the raw files stay in the folder named at
# its end. Exit code: 0 when every reading agrees with nvidia-smi's, 1 on a wrong reading (a field
# off by more than its tolerance, null where nvidia-smi has a figure, a GPU not sampled, a
# traceback, a sampler exit code other than 0). Typical run time: SECONDS + 35 s (a MIG GPU: + 15 s);
# every step is bounded by `timeout`.
set -u
SECONDS_RUN=${1:-20}
PY=${PY:-.venv/bin/python}
RL=${RL:-.venv/bin/runlytics}
OUT=$(mktemp -d "${TMPDIR:-/tmp}/rl-devcheck.XXXXXX")
FAIL=0
[ -x "$PY" ] && [ -x "$RL" ] || { echo "run me from the repository root: no $PY or $RL" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }
SMI_PID=""
LOAD_PID=""
# Only what this script started is stopped, by its process id.
trap '[ -n "$SMI_PID" ] && kill "$SMI_PID" 2>/dev/null; [ -n "$LOAD_PID" ] && kill "$LOAD_PID" 2>/dev/null' EXIT

echo "# runlytics sample on a real GPU ($(date -u +%Y-%m-%dT%H:%MZ), $(hostname))"
echo
echo '```'
echo "uid $(id -u) ($(id -un)); python $($PY -c 'import sys; print(sys.version.split()[0])'); nvidia-ml-py $($PY -c 'from importlib.metadata import version; print(version("nvidia-ml-py"))' 2>&1)"
echo "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-<unset>} NVIDIA_VISIBLE_DEVICES=${NVIDIA_VISIBLE_DEVICES-<unset>}"
if have nvidia-smi; then
  timeout 30 nvidia-smi --query-gpu=index,name,uuid,driver_version,pci.bus_id,persistence_mode,mig.mode.current \
    --format=csv 2>&1
  timeout 30 nvidia-smi -L 2>&1 | tee "$OUT/smi-L.txt"
else
  echo "nvidia-smi: not found"
fi
echo '```'

# --- 1. every NVML call the sampler makes, straight through pynvml: value or error class ---------
echo
echo "## 1. The sampler's NVML calls through pynvml (value, or the error class raised)"
echo
echo '```'
timeout 45 "$PY" - <<'EOF' 2>&1
import pynvml as m


def call(name, *args, **kw):
    fn = getattr(m, name, None)
    if fn is None:
        return "(not in this pynvml)"
    try:
        v = fn(*args, **kw)
    except m.NVMLError as e:
        return f"{type(e).__name__} ({e})"
    except Exception as e:  # not an NVMLError: the sampler would log a traceback
        return f"!! {type(e).__name__}: {e}"
    if hasattr(v, "_fields_"):
        return type(v).__name__ + "(" + ", ".join(f"{f[0]}={getattr(v, f[0])!r}" for f in v._fields_) + ")"
    return f"{v!r} ({type(v).__name__})"


try:
    m.nvmlInit()
except m.NVMLError as e:
    raise SystemExit(f"nvmlInit: {type(e).__name__}: {e}")
print("driver", call("nvmlSystemGetDriverVersion"), "| NVML", call("nvmlSystemGetNVMLVersion"),
      "| nvmlDeviceGetCount", call("nvmlDeviceGetCount"))


def read(h, label):
    print(f"--- {label}")
    print("  nvmlDeviceGetUUID", call("nvmlDeviceGetUUID", h))
    print("  nvmlDeviceGetMemoryInfo v1", call("nvmlDeviceGetMemoryInfo", h))
    print("  nvmlDeviceGetMemoryInfo v2", call("nvmlDeviceGetMemoryInfo", h, version=getattr(m, "nvmlMemory_v2", None)))
    print("  nvmlDeviceGetUtilizationRates", call("nvmlDeviceGetUtilizationRates", h))
    print("  nvmlDeviceGetTemperatureV", call("nvmlDeviceGetTemperatureV", h, m.NVML_TEMPERATURE_GPU))
    print("  nvmlDeviceGetTemperature", call("nvmlDeviceGetTemperature", h, m.NVML_TEMPERATURE_GPU))
    print("  nvmlDeviceGetPowerUsage (mW)", call("nvmlDeviceGetPowerUsage", h))
    print("  nvmlDeviceGetClockInfo SM (MHz)", call("nvmlDeviceGetClockInfo", h, m.NVML_CLOCK_SM))
    print("  nvmlDeviceGetCurrentClocksEventReasons", call("nvmlDeviceGetCurrentClocksEventReasons", h))
    print("  nvmlDeviceGetCurrentClocksThrottleReasons", call("nvmlDeviceGetCurrentClocksThrottleReasons", h))


for i in range(m.nvmlDeviceGetCount()):
    try:
        h = m.nvmlDeviceGetHandleByIndex(i)
    except m.NVMLError as e:
        print(f"=== GPU {i}: nvmlDeviceGetHandleByIndex {type(e).__name__} ({e})")
        continue
    print(f"=== GPU {i}: {call('nvmlDeviceGetName', h)}, nvmlDeviceGetIndex {call('nvmlDeviceGetIndex', h)}, "
          f"nvmlDeviceGetMigMode {call('nvmlDeviceGetMigMode', h)}")
    read(h, f"GPU {i} (whole)")
    try:
        mig = m.nvmlDeviceGetMigMode(h)[0] == 1
    except m.NVMLError:
        mig = False
    if mig:  # the whole card's answers above are those of a GPU in MIG mode (docs: not yet verified)
        n = m.nvmlDeviceGetMaxMigDeviceCount(h)
        print(f"  nvmlDeviceGetMaxMigDeviceCount {n}")
        for k in range(n):
            try:
                mh = m.nvmlDeviceGetMigDeviceHandleByIndex(h, k)
            except m.NVMLError as e:
                print(f"  MIG slot {k}: {type(e).__name__} ({e})")
                continue
            read(mh, f"GPU {i} MIG slot {k}: GI {call('nvmlDeviceGetGpuInstanceId', mh)}, "
                     f"CI {call('nvmlDeviceGetComputeInstanceId', mh)}")
m.nvmlShutdown()
EOF
echo '```'

# --- 2. a load to measure: GPU memory held and memsets, through the CUDA driver (ctypes) -------
cat > "$OUT/load.py" <<'EOF'
import ctypes, sys, time
end = time.monotonic() + float(sys.argv[1])
cu = ctypes.CDLL("libcuda.so.1")
def ok(r, what):
    if r != 0:
        raise SystemExit(f"load: {what} failed ({r})")
ok(cu.cuInit(0), "cuInit")
dev, ctx, ptr = ctypes.c_int(), ctypes.c_void_p(), ctypes.c_uint64()
ok(cu.cuDeviceGet(ctypes.byref(dev), 0), "cuDeviceGet")
ok(cu.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev), "cuDevicePrimaryCtxRetain")
ok(cu.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")
size = 4 << 30  # 4 GiB held: memory_used_mb should rise by about 4096 on CUDA device 0
ok(cu.cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(size)), "cuMemAlloc")
print("load: 4 GiB held on CUDA device 0, memsets until the end", file=sys.stderr, flush=True)
n = 0
while time.monotonic() < end:
    ok(cu.cuMemsetD8_v2(ptr, ctypes.c_ubyte(n & 0xFF), ctypes.c_size_t(size)), "cuMemsetD8")
    ok(cu.cuCtxSynchronize(), "cuCtxSynchronize")
    n += 1
EOF
if "$PY" -c 'import ctypes; ctypes.CDLL("libcuda.so.1")' 2>/dev/null; then
  timeout $((SECONDS_RUN + 20)) "$PY" "$OUT/load.py" $((SECONDS_RUN + 6)) 2>"$OUT/load.log" &
  LOAD_PID=$!
  sleep 3  # the context and the allocation in place before sampling starts
else
  echo "load: no libcuda.so.1; sampling an idle machine" >"$OUT/load.log"
fi

# --- 3. nvidia-smi beside the sampler, UTC timestamps, the inputs.md section 2 columns ---------
if have nvidia-smi; then
  TZ=UTC nvidia-smi --query-gpu=timestamp,index,uuid,utilization.gpu,memory.used,memory.total,temperature.gpu,power.draw \
    --format=csv -l 1 >"$OUT/smi.csv" 2>"$OUT/smi.err" &
  SMI_PID=$!
fi

# --- 4. the sampler, around a command, as a user runs it: every GPU NVML sees ------------------
START=$("$PY" -c 'import time; print(time.time())')
env -u CUDA_VISIBLE_DEVICES -u NVIDIA_VISIBLE_DEVICES timeout $((SECONDS_RUN + 25)) \
  "$RL" sample --job-id devcheck --interval 1 --spool "$OUT/spool" -- sleep "$SECONDS_RUN" 2>"$OUT/sample.log"
RC=$?
END=$("$PY" -c 'import time; print(time.time())')
[ -n "$SMI_PID" ] && { kill "$SMI_PID" 2>/dev/null; wait "$SMI_PID" 2>/dev/null; SMI_PID=""; }
[ -n "$LOAD_PID" ] && { wait "$LOAD_PID" 2>/dev/null; LOAD_PID=""; }
[ "$RC" = 0 ] || FAIL=1

# --- 4b. a MIG instance, named by CUDA_VISIBLE_DEVICES, then by NVIDIA_VISIBLE_DEVICES alone (as
# NVIDIA's container toolkit sets it); only on a machine with a MIG instance ---------------------
MIG_UUID=$(sed -n 's/.*(UUID: \(MIG-[^)]*\)).*/\1/p' "$OUT/smi-L.txt" 2>/dev/null | head -1)
if [ -n "$MIG_UUID" ]; then
  env -u NVIDIA_VISIBLE_DEVICES CUDA_VISIBLE_DEVICES="$MIG_UUID" timeout 20 "$RL" sample --job-id devcheck-mig \
    --interval 1 --spool "$OUT/spool" -- sleep 6 2>"$OUT/sample-mig.log"
  echo "(exit $?)" >>"$OUT/sample-mig.log"
  env -u CUDA_VISIBLE_DEVICES NVIDIA_VISIBLE_DEVICES="$MIG_UUID" timeout 20 "$RL" sample --job-id devcheck-mig-nvd \
    --interval 1 --spool "$OUT/spool" -- sleep 6 2>"$OUT/sample-mig-nvd.log"
  echo "(exit $?)" >>"$OUT/sample-mig-nvd.log"
fi

echo
echo "## 2. \`runlytics sample --job-id devcheck --interval 1 -- sleep $SECONDS_RUN\`: exit $RC, $("$PY" -c "print(f'{$END - $START:.1f}')") s"
echo
echo '```'
cat "$OUT/load.log" "$OUT/sample.log"
if [ -n "$MIG_UUID" ]; then
  echo "--- CUDA_VISIBLE_DEVICES=$MIG_UUID"
  cat "$OUT/sample-mig.log"
  echo "--- NVIDIA_VISIBLE_DEVICES=$MIG_UUID (CUDA_VISIBLE_DEVICES unset)"
  cat "$OUT/sample-mig-nvd.log"
fi
echo '```'

# --- 5. the spool as written (every field, the ones ingest does not store too) ----------------
echo
echo "## 3. The spool lines, per job, GPU and field (non-null count / lines; min .. max)"
echo
timeout 30 "$PY" - "$OUT/spool" <<'EOF'
import glob, json, sys
from collections import defaultdict
FIELDS = ["utilization_percent", "memory_used_mb", "memory_total_mb", "memory_reserved_mb", "temperature_c",
          "power_w", "sm_clock_mhz", "clocks_event_reasons", "mig_parent_uuid", "mig_gi_id", "mig_ci_id"]
rows, bad, extra = defaultdict(list), 0, set()
for path in sorted(glob.glob(sys.argv[1] + "/*.jsonl")):
    for line in open(path, "rb"):
        try:
            d = json.loads(line)
        except ValueError:
            bad += 1
            continue
        rows[(d.get("job_id"), d.get("gpu_index"), d.get("gpu_uuid"))].append(d)
        extra |= set(d) - set(FIELDS) - {"ts", "host", "job_id", "gpu_index", "gpu_uuid"}
print(f"{sum(map(len, rows.values()))} lines, {bad} not JSON; fields beyond the expected: {sorted(extra) or 'none'}\n")
print("| job | gpu_index | gpu_uuid | lines | ts gaps (s) | " + " | ".join(FIELDS) + " |")
print("|---" * (5 + len(FIELDS)) + "|")
for (job, index, uuid), ds in sorted(rows.items(), key=lambda kv: str(kv[0])):
    cells = []
    for f in FIELDS:
        vals = [d.get(f) for d in ds if d.get(f) is not None]
        if not vals:
            cell = "null"
        elif isinstance(vals[0], str):
            cell = f"{len(vals)}/{len(ds)} {sorted(set(vals))[0][:24]}"
        elif f == "clocks_event_reasons":
            cell = f"{len(vals)}/{len(ds)} " + ",".join(hex(v) for v in sorted(set(vals)))
        else:
            cell = f"{len(vals)}/{len(ds)} {min(vals):g} .. {max(vals):g}"
        cells.append(cell)
    ts = sorted(d["ts"] for d in ds)
    gaps = [b - a for a, b in zip(ts, ts[1:])]
    gap = f"{min(gaps):.3f} .. {max(gaps):.3f}" if gaps else "-"
    print(f"| {job} | {index} | {uuid} | {len(ds)} | {gap} | " + " | ".join(cells) + " |")
EOF

# --- 6. ingested: what the warehouse stores, beside nvidia-smi's own figures -------------------
DB="$OUT/check.duckdb"
timeout 60 "$RL" ingest --db "$DB" --spool "$OUT/spool" >"$OUT/ingest.log" 2>&1 || FAIL=1
if [ -s "$OUT/smi.csv" ]; then
  timeout 60 "$RL" ingest --db "$DB" --nvidia-smi-csv "$OUT/smi.csv" --job-id devcheck-smi --timezone UTC \
    --host "$(hostname)" >>"$OUT/ingest.log" 2>&1 || echo "(nvidia-smi CSV ingest failed)" >>"$OUT/ingest.log"
fi
echo
echo "## 4. Ingested (\`runlytics ingest --spool\`, and nvidia-smi's CSV of the same seconds as job devcheck-smi)"
echo
echo '```'
cat "$OUT/ingest.log"
timeout 30 "$RL" sql --db "$DB" "
SELECT job_id, gpu_index, gpu_uuid, count(*) AS n,
       count(utilization_percent) AS util_n, round(avg(utilization_percent), 1) AS util,
       count(memory_used_mb) AS mem_n, round(avg(memory_used_mb), 1) AS mem_used, max(memory_total_mb) AS mem_total,
       count(temperature_c) AS temp_n, round(avg(temperature_c), 1) AS temp,
       count(power_w) AS power_n, round(avg(power_w), 1) AS power,
       count(sm_clock_mhz) AS sm_n, round(avg(sm_clock_mhz)) AS sm,
       count(clocks_event_reasons) AS reasons_n, bit_or(clocks_event_reasons) AS reasons_or
FROM gpu_samples GROUP BY ALL ORDER BY gpu_uuid, job_id" 2>&1
echo '```'

# --- 7. verdict: the sampler's readings against nvidia-smi's, paired by UUID and time -----------
echo
echo "## 5. Verdict"
echo
timeout 30 "$PY" - "$OUT" "$SECONDS_RUN" "$MIG_UUID" <<'EOF' || FAIL=1
import csv, glob, json, re, statistics, sys
from datetime import datetime, timezone

out, seconds, mig_uuid = sys.argv[1], int(sys.argv[2]), sys.argv[3]
lines = [json.loads(l) for p in glob.glob(out + "/spool/*.jsonl") for l in open(p) if l.strip()]
main = [d for d in lines if d["job_id"] == "devcheck"]
log = open(out + "/sample.log").read()
problems, notes = [], []
# Tolerances: the two tools read at different instants of the same second.
TOLERANCE = {"memory_used_mb": lambda v: 32.0, "temperature_c": lambda v: 2.0,
             "power_w": lambda v: max(20.0, 0.15 * v), "utilization_percent": lambda v: 15.0}
COLUMN = {"memory_used_mb": "memory.used [MiB]", "temperature_c": "temperature.gpu",
          "power_w": "power.draw [W]", "utilization_percent": "utilization.gpu [%]"}


def number(text):
    text = (text or "").strip()
    if not text or text.startswith("[") or text.upper().startswith("N/A"):
        return None
    return float(text.split()[0])


smi = []
try:
    with open(out + "/smi.csv", newline="") as f:
        for row in csv.DictReader(f, skipinitialspace=True):
            ts = datetime.strptime(row["timestamp"].strip(), "%Y/%m/%d %H:%M:%S.%f").replace(tzinfo=timezone.utc)
            smi.append((row["uuid"].strip(), int(row["index"]), ts.timestamp(), row))
except (OSError, KeyError, ValueError) as error:
    problems.append(f"no nvidia-smi figures to compare with ({type(error).__name__}: {error})")

if "Traceback" in log:
    problems.append("a traceback in the sampler's log")
smi_uuids = {u: i for u, i, _, _ in smi}
sampled = {d["gpu_uuid"] for d in main}
for uuid, index in sorted(smi_uuids.items()):
    if uuid not in sampled:
        problems.append(f"{uuid} (nvidia-smi's GPU {index}) was not sampled")
for uuid in sorted(sampled):
    ds = sorted((d for d in main if d["gpu_uuid"] == uuid), key=lambda d: d["ts"])
    if len(ds) < seconds // 2:
        problems.append(f"{uuid}: {len(ds)} lines in {seconds} s")
    if smi and uuid not in smi_uuids:
        problems.append(f"{uuid}: sampled, but not a GPU nvidia-smi lists")
        continue
    if uuid in smi_uuids and any(d["gpu_index"] != smi_uuids[uuid] for d in ds):
        problems.append(f"{uuid}: gpu_index {ds[0]['gpu_index']}, nvidia-smi's index {smi_uuids[uuid]}")
    pairs = []  # (sampler line, nvidia-smi row) within 0.6 s of each other
    for u, _, ts, row in smi:
        if u == uuid and ds:
            near = min(ds, key=lambda d: abs(d["ts"] - ts))
            if abs(near["ts"] - ts) <= 0.6:
                pairs.append((near, row))
    for field, column in COLUMN.items():
        ours = [(d[field], number(row.get(column))) for d, row in pairs]
        both = [(a, b) for a, b in ours if a is not None and b is not None]
        null_ours = sum(a is None and b is not None for a, b in ours)
        zero_ours = sum(a == 0 and b is None for a, b in ours)
        if null_ours:
            problems.append(f"{uuid} {field}: null in {null_ours} of {len(ours)} lines where nvidia-smi has a figure")
        if zero_ours:
            problems.append(f"{uuid} {field}: 0 in {zero_ours} lines where nvidia-smi has none (a null written as 0?)")
        if both:
            diff = statistics.median(abs(a - b) for a, b in both)
            limit = TOLERANCE[field](statistics.median(b for _, b in both))
            verdict = "ok" if diff <= limit else "WRONG"
            notes.append(f"{uuid} {field}: median |sampler - nvidia-smi| {diff:.2f} over {len(both)} pairs (tolerance {limit:.1f}): {verdict}")
            if diff > limit:
                problems.append(f"{uuid} {field}: off by {diff:.2f} (median) from nvidia-smi's {column}")
if mig_uuid:
    for job in ("devcheck-mig", "devcheck-mig-nvd"):
        ds = [d for d in lines if d["job_id"] == job]
        if not ds or any(d["gpu_uuid"] != mig_uuid for d in ds):
            problems.append(f"{job}: expected lines of {mig_uuid} only, got {sorted({d['gpu_uuid'] for d in ds}) or 'none'}")
        elif any(d["power_w"] is not None or d["mig_parent_uuid"] is None or d["mig_gi_id"] is None for d in ds):
            problems.append(f"{job}: a MIG instance's line with power or without its parent, GI, CI")
fallbacks = [l for l in log.splitlines() if " comes from " in l or " come from " in l]
notes += [f"fallback logged: {l}" for l in fallbacks] or ["no fallback to an older NVML call logged"]
for n in notes:
    print(f"- {n}")
print("\n**Verdict:** " + ("WRONG: " + "; ".join(problems) if problems
                           else f"every reading agrees with nvidia-smi ({len(sampled)} GPUs sampled), no traceback"))
sys.exit(1 if problems else 0)
EOF
echo
echo "_Raw files: $OUT (spool/, sample*.log, smi.csv, check.duckdb)._"
exit $FAIL
