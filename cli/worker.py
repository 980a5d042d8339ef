"""`fluxgate worker`: one worker process against FLUXGATE_REDIS_URL."""

from __future__ import annotations

import argparse
import logging


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis-url", help="Redis URL (default: FLUXGATE_REDIS_URL)")
    parser.add_argument("--catalog", help="catalog name (demo, real) or TOML path (default: FLUXGATE_CATALOG)")
    parser.add_argument("--device", help="torch device, e.g. cpu, cuda:0 (default: FLUXGATE_DEVICE or cpu)")
    parser.add_argument("--variants", help="comma-separated variants to serve (default: all in the catalog)")


def run(args: argparse.Namespace) -> int:
    from workers.main import run_worker
    from workers.settings import WorkerSettings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    overrides = {
        "redis_url": args.redis_url, "catalog": args.catalog, "device": args.device,
        "worker_variants": args.variants,
    }
    settings = WorkerSettings(**{k: v for k, v in overrides.items() if v is not None})
    run_worker(settings)
    return 0
