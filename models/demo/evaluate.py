"""Evaluate a served variant (or a bare preset) on the shapes world: the body of `fluxgate eval`.

The variant is loaded exactly as the worker loads it (checkpoints -> load_pipeline),
and sampled at the catalog's default steps and guidance unless overridden, so the numbers are the
ones a user of `fluxgate serve` gets.
"""

from __future__ import annotations

from typing import Any

import torch

from models.demo.metrics import evaluate, evaluate_captioning
from models.demo.prompts import DEFAULT_EVAL_SEED, eval_prompts
from models.interface import ImageRequest


def evaluate_variant(
    spec: dict[str, Any],
    n: int | None = 270,
    language: str = "en",
    steps: int | None = None,
    guidance: float | None = None,
    batch_size: int = 8,
    seed: int = DEFAULT_EVAL_SEED,
    threads: int | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Alignment accuracy (overall, per attribute, seen/unseen) and seconds per image. `spec` says
    what to load: family, preset, checkpoints, steps, guidance, size (cli/eval.py resolves a catalog
    variant into one; models/ never reads the catalog itself)."""
    from models.loading import load_pipeline

    if threads:
        torch.set_num_threads(threads)
    pipe = load_pipeline(spec["family"], spec["preset"], spec["checkpoints"])
    steps = spec["steps"] if steps is None else steps
    guidance = spec["guidance"] if guidance is None else guidance
    size = spec["size"]

    made: list[tuple[str, Any]] = []  # (prompt, image) for the caption model's own view below

    def generate(items: list[tuple[str, int]]) -> list:
        reqs = [ImageRequest(prompt=p, seed=s, width=size, height=size, steps=steps, guidance=guidance)
                for p, s in items]
        images = pipe.generate(reqs)
        made.extend(zip([p for p, _ in items], images, strict=True))
        return images

    prompts = eval_prompts(n, seed)
    report = evaluate(generate, prompts, language=language, batch_size=batch_size, progress=progress)
    if hasattr(pipe, "cap_loss") and hasattr(pipe, "caption"):
        # A model that captions (CogView) also reports CapLoss: the per-token caption loss of each
        # prompt given the image made for it (lower: the model itself sees its prompt in the image),
        # and how often its captions of fresh renders parse to the right attributes.
        losses = [pipe.cap_loss(p, [im])[0] for p, im in made if im is not None]
        report["cap_loss"] = sum(losses) / max(len(losses), 1)

        def caption(images: list) -> list[str]:
            return pipe.caption(images, language, list(range(len(images))))

        report["captioning"] = evaluate_captioning(caption, prompts, size=size, batch_size=batch_size)
    report.update(variant=spec.get("name", spec["preset"]), preset=spec["preset"], steps=steps, guidance=guidance,
                  size=size, batch_size=batch_size, threads=torch.get_num_threads())
    return report
