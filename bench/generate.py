"""Generate a folder of synthetic training jobs (progress.json + checkpoint folders).

    python bench/generate.py OUT --jobs 1000 --steps 1000 --gpus 2 [--checkpoint-folders]

``--checkpoint-folders`` also makes the ``checkpoint-<step>/`` folder of each checkpoint the job
lists (four per job), holding one small file, as a trainer leaves them.

Deterministic for a given --seed, so benchmark runs are comparable.
"""

from __future__ import annotations

import argparse
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

STATUSES = ["completed", "completed", "completed", "running", "failed", "cancelled", "queued", "paused"]
MODELS = ["llama-3-8b", "mistral-7b", "qwen2-1.5b", "gpt2", "phi-3-mini"]
EPOCH0 = datetime(2026, 1, 1, tzinfo=UTC)


def make_job(index: int, steps: int, gpus: int, rng: random.Random, log_every: int = 1) -> dict:
    job_id = f"job-{index:06d}"
    batch = rng.choice([8, 16, 32, 64])
    started = EPOCH0 + timedelta(minutes=index * 7)
    status = rng.choice(STATUSES)
    loss = rng.uniform(2.0, 4.0)
    t = started
    history = []
    for step in range(log_every, steps + 1, log_every):
        it = rng.uniform(0.2, 0.6)
        t = t + timedelta(seconds=it * log_every)
        loss = max(0.05, loss * rng.uniform(0.995, 1.0005))
        history.append(
            {
                "step": step,
                "timestamp": t.isoformat(),
                "loss": round(loss, 5),
                "learning_rate": 2e-5,
                "samples_per_second": round(batch / it, 3),
                "iteration_time": round(it, 4),
                "samples": batch * log_every,
                "gpus": [
                    {
                        "index": g,
                        "uuid": f"GPU-{index:06d}-{g}",
                        "utilization_percent": round(rng.uniform(60, 100), 1),
                        "memory_used_mb": round(rng.uniform(10000, 70000), 1),
                        "memory_total_mb": 81559.0,
                        "temperature_c": round(rng.uniform(40, 85), 1),
                        "power_w": round(rng.uniform(150, 700), 1),
                    }
                    for g in range(gpus)
                ],
            }
        )
    save_steps = max(1, steps // 4)
    doc = {
        "job_id": job_id,
        "status": status,
        "created_at": (started - timedelta(minutes=1)).isoformat(),
        "started_at": started.isoformat(),
        "updated_at": t.isoformat(),
        "config": {
            "model_name": MODELS[index % len(MODELS)],
            "batch_size": batch,
            "max_steps": steps,
            "save_steps": save_steps,
            "target_samples_per_second": 100.0,
            "gpu_count": gpus,
        },
        "current_step": steps,
        "total_steps": steps,
        "history": history,
        "checkpoints": [{"step": s, "path": f"checkpoint-{s}"} for s in range(save_steps, steps + 1, save_steps)],
    }
    if status in ("completed", "failed", "cancelled"):
        doc["ended_at"] = (t + timedelta(seconds=30)).isoformat()
    return doc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--gpus", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-folders", action="store_true", help="make each listed checkpoint's folder")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    for i in range(args.jobs):
        job = make_job(i, args.steps, args.gpus, rng)
        folder = args.out / job["job_id"]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "progress.json").write_text(json.dumps(job))
        if args.checkpoint_folders:
            for checkpoint in job["checkpoints"]:
                saved = folder / checkpoint["path"]
                saved.mkdir(exist_ok=True)
                (saved / "config.json").write_text(json.dumps(job["config"]))
    print(f"wrote {args.jobs} jobs x {args.steps} steps x {args.gpus} GPUs to {args.out}")


if __name__ == "__main__":
    main()
