"""`fluxgate eval --model VARIANT [--n N] [--catalog demo]`: a variant's shapes-world scores.

Prints alignment accuracy (all four attributes right), per attribute, seen vs unseen (held-out)
prompts, and seconds per image at the variant's defaults (override with --steps/--guidance).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="catalog variant (dev, schnell, klein, ...) or a preset")
    parser.add_argument("--n", type=int, default=270, help="prompts from the seeded set (270 = every combination)")
    parser.add_argument("--catalog", default="demo", help="built-in catalog name or a TOML path")
    parser.add_argument("--language", choices=["en", "zh"], default="en")
    parser.add_argument("--steps", type=int, default=None, help="default: the variant's default_steps")
    parser.add_argument("--guidance", type=float, default=None, help="default: the variant's default_guidance")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")


def _fmt(x: float | None) -> str:
    return "  -  " if x is None else f"{x:.3f}"


def resolve_variant(variant_or_preset: str, catalog: str = "demo") -> dict[str, Any]:
    """Catalog variant -> family, preset, absolute checkpoints, defaults. A name that is no
    variant of the catalog is taken as a FLUX preset (demo presets build random weights)."""
    from store.catalog import load_catalog

    cat = load_catalog(catalog)
    variant = cat.get(variant_or_preset)
    if variant is not None:
        return {"name": variant.name, "family": variant.family, "preset": variant.preset,
                "checkpoints": cat.checkpoint_paths(variant), "steps": variant.default_steps,
                "guidance": variant.default_guidance, "size": variant.default_width}
    from models.flux.presets import get_preset

    p = get_preset(variant_or_preset)  # KeyError names the known presets
    return {"name": p.name, "family": "flux", "preset": p.name, "checkpoints": {}, "steps": p.steps,
            "guidance": p.guidance, "size": 64}


def run(args: argparse.Namespace) -> int:
    from models.demo.evaluate import evaluate_variant

    def progress(done: int, total: int) -> None:
        print(f"\r{done}/{total}", end="", file=sys.stderr, flush=True)

    report = evaluate_variant(resolve_variant(args.model, args.catalog), args.n, language=args.language,
                              steps=args.steps,
                              guidance=args.guidance, batch_size=args.batch_size, threads=args.threads,
                              progress=progress)
    print(file=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{report['variant']} ({report['preset']}): {report['n']} prompts, {args.language}, "
          f"{report['steps']} steps, guidance {report['guidance']}, {report['size']} px")
    print(f"alignment accuracy  {_fmt(report['accuracy'])}")
    print("per attribute       " + "  ".join(f"{k} {_fmt(v)}" for k, v in report["per_attribute"].items()))
    for part in ("seen", "unseen"):
        print(f"{part:<6} (n={report[part]['n']:>3})     {_fmt(report[part]['accuracy'])}")
    print(f"seconds per image   {report['seconds_per_image']:.4f} (batch {report['batch_size']}, "
          f"{report['threads']} threads)")
    if "cap_loss" in report:
        cap = report["captioning"]
        print(f"CapLoss             {report['cap_loss']:.3f} (the model's caption loss of each prompt on its "
              f"image; lower is better)")
        print(f"captions parse      {_fmt(cap['accuracy'])} (fresh renders, {args.language}; "
              f"{cap['seconds_per_image']:.3f} s per image)")
    if report["failed"]:
        print(f"failed generations  {report['failed']}")
    return 0
