"""`fluxgate keys create`: make an API key (printed once; Redis keeps only its hash)."""

from __future__ import annotations

import argparse
import asyncio


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create", help="create an API key")
    create.add_argument("--name", default="", help="a label for the key")
    create.add_argument("--account", help="account the key belongs to (default: a new one)")
    create.add_argument("--admin", action="store_true", help="an admin key (can create keys)")
    create.add_argument("--redis-url", help="Redis URL (default: FLUXGATE_REDIS_URL)")


def run(args: argparse.Namespace) -> int:
    from store.jobstore import JobStore
    from store.settings import CommonSettings

    settings = CommonSettings(**({"redis_url": args.redis_url} if args.redis_url else {}))

    async def create() -> str:
        store = JobStore(settings.redis_url, settings.retention_s)
        try:
            key, _ = await store.create_key(args.name, account=args.account, admin=args.admin)
        finally:
            await store.close()
        return key

    print(asyncio.run(create()))
    return 0
