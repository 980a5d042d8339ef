"""`fluxgate gateway`: the HTTP gateway (uvicorn) against FLUXGATE_REDIS_URL. Never imports torch."""

from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--redis-url", help="Redis URL (default: FLUXGATE_REDIS_URL)")
    parser.add_argument("--catalog", help="catalog name or TOML path (default: FLUXGATE_CATALOG or demo)")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (default 1)")


def run(args: argparse.Namespace) -> int:
    import uvicorn

    # Settings flow through the environment so every uvicorn worker process sees the same ones.
    if args.redis_url:
        os.environ["FLUXGATE_REDIS_URL"] = args.redis_url
    if args.catalog:
        os.environ["FLUXGATE_CATALOG"] = args.catalog
    # Keep-alive longer than a load balancer's idle timeout (60 s is common): otherwise the server may
    # close a connection just as the balancer or a client sends the next request on it.
    uvicorn.run("app.main:create_app", factory=True, host=args.host, port=args.port,
                workers=args.workers, log_level="warning", access_log=False, timeout_keep_alive=65)
    return 0
