"""`fluxgate usage`: the caller's account (tier, balance, what remains of its limits) and its usage."""

from __future__ import annotations

import argparse
import json
import sys

from cli.generate import add_connection_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="start", help="ISO 8601 date or unix seconds (default: 30 days ago)")
    parser.add_argument("--to", dest="end", help="ISO 8601 date or unix seconds (default: now)")
    parser.add_argument("--by", choices=["day", "variant"], default="day", help="group by (default day)")
    parser.add_argument("--json", action="store_true", help="print the API's JSON")
    add_connection_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from client import Client, FluxgateError

    try:
        with Client(args.url, args.key) as fg:
            account = fg.account()
            usage = fg.usage(args.start, args.end, args.by)
    except (FluxgateError, ValueError) as err:
        print(f"fluxgate usage: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"account": account, "usage": usage}, indent=2))
        return 0
    remaining = ", ".join(f"{name} {'unlimited' if left is None else left}"
                          for name, left in account["remaining"].items())
    print(f"account {account['id']}  tier {account['tier']}  balance {account['balance']} milli-credits  "
          f"(reserved {account['reserved']}, spent {account['spent']})")
    print(f"remaining: {remaining}")
    print(f"\n{args.by:<12} {'jobs':>6} {'images':>7} {'megapixels':>11} {'credits':>10}")
    for group in [*usage["groups"], usage["total"]]:
        print(f"{group['group']:<12} {group['jobs']:>6} {group['images']:>7} {group['megapixels']:>11.3f} "
              f"{group['credits']:>10}")
    return 0
