"""Build a ready pipeline for a catalog variant, whatever its family (the worker's one entry point)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from models.interface import Pipeline


def load_pipeline(
    family: str, preset: str, checkpoints: Mapping[str, str], device: str = "cpu", dtype: torch.dtype = torch.float32
) -> Pipeline:
    # Imported per family so a worker serving only FLUX never loads CogView code, and vice versa.
    if family == "flux":
        from models.flux.pipeline import load_flux_pipeline

        return load_flux_pipeline(preset, checkpoints, device=device, dtype=dtype)
    if family == "cogview":
        from models.cogview.pipeline import load_cogview_pipeline

        return load_cogview_pipeline(preset, checkpoints, device=device, dtype=dtype)
    raise ValueError(f"unknown model family {family!r} (expected 'flux' or 'cogview')")
