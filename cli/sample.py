"""``runlytics sample``."""

from __future__ import annotations

import argparse
import logging
import sys

from .exits import EXIT_NO_NVML, EXIT_USAGE


def _sample(args: argparse.Namespace) -> int:
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
    try:
        return sampler.run(options)
    except sampler.NvmlUnavailable as error:
        print(f"runlytics sample: {error}", file=sys.stderr)
        return EXIT_NO_NVML
    except sampler.SamplerError as error:
        print(f"runlytics sample: {error}", file=sys.stderr)
        return EXIT_USAGE
