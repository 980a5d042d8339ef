"""The `fluxgate` command. Each subcommand lives in its own module, imported only when it runs,
so `fluxgate gateway` never pulls in torch and `fluxgate presets` never pulls in fastapi."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module under cli/, one-line help). A module exposes `add_arguments(parser)` and
# `run(args) -> int`.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("cli.serve", "run Redis, the gateway and a worker on this machine"),
    "gateway": ("cli.gateway", "run the HTTP gateway against FLUXGATE_REDIS_URL"),
    "worker": ("cli.worker", "run a worker process against FLUXGATE_REDIS_URL"),
    "keys": ("cli.keys", "create, list and revoke API keys"),
    "accounts": ("cli.accounts", "accounts: tiers, credits, usage"),
    "presets": ("cli.presets", "list model presets with their parameter counts"),
    "checkpoint": ("cli.checkpoint", "inspect a checkpoint file against the presets"),
    "eval": ("cli.eval", "measure a demo variant on the shapes world"),
    "generate": ("cli.generate", "generate an image through a running server"),
    "jobs": ("cli.jobs", "list your recent jobs, show or cancel one"),
    "usage": ("cli.usage", "your account's balance, remaining quota and usage"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="fluxgate", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] not in SUBCOMMANDS:
        args = parser.parse_args(argv)  # prints usage or an "invalid choice" error
        parser.print_help()
        return 2
    name = argv[0]
    module = importlib.import_module(SUBCOMMANDS[name][0])
    sub_parser = argparse.ArgumentParser(prog=f"fluxgate {name}", description=SUBCOMMANDS[name][1])
    module.add_arguments(sub_parser)
    args = sub_parser.parse_args(argv[1:])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
