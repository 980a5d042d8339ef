"""`fluxgate checkpoint inspect PATH`: what a checkpoint is and whether it matches its preset.

Prints family, detected variant, layout, parameter count, dtype and any missing, unexpected or
mis-shaped tensors. Exit status: 0 on a match, 1 on a mismatch, 2 if the file is not recognised.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    inspect = sub.add_parser("inspect", help="inspect a .safetensors file, an index.json or a model folder")
    inspect.add_argument("path")
    inspect.add_argument("--json", action="store_true", help="print the report as JSON")


def _listing(label: str, items: list, limit: int = 30) -> list[str]:
    if not items:
        return []
    lines = [f"{label} ({len(items)}):"]
    for item in items[:limit]:
        if isinstance(item, list | tuple):
            lines.append(f"  {item[0]}: expected {item[1]}, found {item[2]}")
        else:
            lines.append(f"  {item}")
    if len(items) > limit:
        lines.append(f"  ... {len(items) - limit} more")
    return lines


def run(args: argparse.Namespace) -> int:
    from models.presets import inspect_checkpoint

    try:
        report = inspect_checkpoint(args.path)
    except (OSError, ValueError) as exc:
        print(f"error: cannot read {args.path}: {exc}")
        return 2
    if report is None:
        print(f"error: {args.path} is not a checkpoint of any known family")
        return 2
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"path:       {report['path']}")
        print(f"family:     {report['family']}")
        print(f"component:  {report['component']}")
        print(f"variant:    {report['variant'] or 'unknown'}")
        print(f"layout:     {report['layout']}")
        print(f"parameters: {report['parameters']:,}")
        print(f"dtype:      {report['dtype']}")
        print(f"files:      {report['files']}")
        lines = _listing("missing tensors", report["missing"])
        lines += _listing("unexpected tensors", report["unexpected"])
        lines += _listing("mis-shaped tensors", report["mis_shaped"])
        for line in lines:
            print(line)
        print("status:     " + ("OK" if report["ok"] else "MISMATCH"))
    return 0 if report["ok"] else 1
