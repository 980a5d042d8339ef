"""`fluxgate accounts`: create accounts, set tiers, add credits, read balances and usage."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis-url", help="Redis URL (default: FLUXGATE_REDIS_URL)")
    sub = parser.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create", help="create an account")
    create.add_argument("--name", default="")
    create.add_argument("--tier", default="free")
    create.add_argument("--credits", type=int, default=0, help="initial balance in milli-credits")
    sub.add_parser("list", help="every account with its balance")
    tier = sub.add_parser("set-tier", help="move an account to another tier")
    tier.add_argument("account")
    tier.add_argument("tier")
    credits = sub.add_parser("add-credits", help="add (or with a negative amount remove) milli-credits")
    credits.add_argument("account")
    credits.add_argument("amount", type=int)
    usage = sub.add_parser("usage", help="the account's usage events (JSON lines)")
    usage.add_argument("account")
    usage.add_argument("--days", type=float, default=30, help="how far back (default 30 days)")


def run(args: argparse.Namespace) -> int:
    import time

    from cli.admin_store import with_accounts
    from store.tiers import load_tiers

    tiers = load_tiers()

    async def action(accounts):  # noqa: ANN001, ANN202
        if args.action in ("create", "set-tier") and args.tier not in tiers:
            print(f"unknown tier {args.tier!r}; tiers: {', '.join(tiers)}")
            return 2
        if args.action == "create":
            print(json.dumps((await accounts.create_account(args.name, args.tier, args.credits)).__dict__))
        elif args.action == "list":
            for account in await accounts.list_accounts():
                print(json.dumps(account.__dict__))
        elif args.action == "set-tier":
            await accounts.set_tier(args.account, args.tier)
        elif args.action == "add-credits":
            print(await accounts.add_credits(args.account, args.amount))
        else:
            now_ms = int(time.time() * 1000)
            async for event in accounts.usage(args.account, now_ms - int(args.days * 86400_000), now_ms):
                print(json.dumps({"cursor": event.id, **event.fields}))
        return 0

    return with_accounts(args.redis_url, action)
