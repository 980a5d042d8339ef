"""Evaluate a served variant (or a bare preset) on the shapes world: the body of `fluxgate eval`.

The variant is loaded exactly as the worker loads it (catalog -> checkpoints -> load_pipeline),
and sampled at the catalog's default steps and guidance unless overridden, so the numbers are the
ones a user of `fluxgate serve` gets.
"""

from __future__ import annotations

from typing import Any

import torch

from models.demo.metrics import evaluate
from models.demo.prompts import DEFAULT_EVAL_SEED, eval_prompts
from models.interface import ImageRequest


def resolve(variant_or_preset: str, catalog: str = "demo") -> dict[str, Any]:
    """Catalog variant -> family, preset, absolute checkpoints, defaults. A name that is no
    variant of the catalog is taken as a FLUX preset (demo presets build random weights)."""
    from store.catalog import load_catalog

    cat = load_catalog(catalog)
    variant = cat.get(variant_or_preset)
    if variant is not None:
        return {"family": variant.family, "preset": variant.preset, "checkpoints": cat.checkpoint_paths(variant),
                "steps": variant.default_steps, "guidance": variant.default_guidance,
                "size": variant.default_width}
    from models.flux.presets import get_preset

    p = get_preset(variant_or_preset)  # KeyError names the known presets
    return {"family": "flux", "preset": p.name, "checkpoints": {}, "steps": p.steps, "guidance": p.guidance,
            "size": 64}


def evaluate_variant(
    variant_or_preset: str,
    n: int | None = 270,
    catalog: str = "demo",
    language: str = "en",
    steps: int | None = None,
    guidance: float | None = None,
    batch_size: int = 8,
    seed: int = DEFAULT_EVAL_SEED,
    threads: int | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Alignment accuracy (overall, per attribute, seen/unseen) and seconds per image."""
    from models.loading import load_pipeline

    if threads:
        torch.set_num_threads(threads)
    spec = resolve(variant_or_preset, catalog)
    pipe = load_pipeline(spec["family"], spec["preset"], spec["checkpoints"])
    steps = spec["steps"] if steps is None else steps
    guidance = spec["guidance"] if guidance is None else guidance
    size = spec["size"]

    def generate(items: list[tuple[str, int]]) -> list:
        reqs = [ImageRequest(prompt=p, seed=s, width=size, height=size, steps=steps, guidance=guidance)
                for p, s in items]
        return pipe.generate(reqs)

    report = evaluate(generate, eval_prompts(n, seed), language=language, batch_size=batch_size,
                      progress=progress)
    report.update(variant=variant_or_preset, preset=spec["preset"], steps=steps, guidance=guidance,
                  size=size, batch_size=batch_size, threads=torch.get_num_threads())
    return report
