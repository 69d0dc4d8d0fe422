"""``runlytics sample``."""

from __future__ import annotations

import argparse
import logging
import sys


def run_sample(args: argparse.Namespace) -> int:
    from runlytics.sampler import loop as sampler

    if not logging.getLogger().handlers:
        logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="runlytics sample: %(message)s")
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    options = sampler.Options(
        job_id=args.job_id,
        spool=args.spool,
        interval=args.interval,
        gpus=args.gpus,
        spool_max_bytes=int(args.spool_max_mb * 2**20) if args.spool_max_mb > 0 else None,
        command=command,
    )
    if args.host:
        options.host = args.host
    # no NVML (NvmlUnavailable): exit 3; a bad option (SamplerError): exit 2 (cli/errors.py)
    return sampler.run(options)
