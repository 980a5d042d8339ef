"""`fluxgate keys`: create, list and revoke API keys. A key is printed once; Redis keeps its hash."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis-url", help="Redis URL (default: FLUXGATE_REDIS_URL)")
    sub = parser.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create", help="create an API key")
    create.add_argument("--name", default="", help="a label for the key")
    create.add_argument("--account", help="account id the key belongs to (default: a new account)")
    create.add_argument("--tier", default="free", help="tier of the new account (default free)")
    create.add_argument("--admin", action="store_true", help="an admin key (admin routes)")
    listing = sub.add_parser("list", help="list an account's keys (never the keys themselves)")
    listing.add_argument("account")
    revoke = sub.add_parser("revoke", help="revoke a key by its id (key_...)")
    revoke.add_argument("key_id")


def run(args: argparse.Namespace) -> int:
    from cli.admin_store import with_accounts

    async def action(accounts):  # noqa: ANN001, ANN202
        if args.action == "create":
            account_id = args.account or (await accounts.create_account(args.name, args.tier)).id
            key, record = await accounts.create_key(account_id, args.name, admin=args.admin)
            print(key)
            print(f"(id {record.id}, account {account_id}; the key is shown only now)")
            return 0
        if args.action == "list":
            for record in await accounts.list_keys(args.account):
                print(json.dumps(record))
            return 0
        if not await accounts.revoke_key(args.key_id):
            print(f"no key {args.key_id}")
            return 1
        print(f"revoked {args.key_id}")
        return 0

    return with_accounts(args.redis_url, action)
