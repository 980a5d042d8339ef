"""`fluxgate presets`: every model preset with its parameter count (built on the meta device)."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object per preset")
    parser.add_argument("--family", help="only this family (flux, cogview)")


def run(args: argparse.Namespace) -> int:
    from models.presets import all_presets, parameter_count

    rows = []
    for name, info in all_presets().items():
        if args.family and info.family != args.family:
            continue
        rows.append({"name": name, "family": info.family, "demo": info.demo, "parameters": parameter_count(name)})
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    width = max((len(r["name"]) for r in rows), default=4)
    print(f"{'preset':<{width}}  {'family':<8} {'kind':<5} {'parameters':>16}")
    for r in rows:
        kind = "demo" if r["demo"] else "full"
        print(f"{r['name']:<{width}}  {r['family']:<8} {kind:<5} {r['parameters']:>16,}")
    return 0
