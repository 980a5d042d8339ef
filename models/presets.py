"""One registry of model presets across families (FLUX, and CogView when it is installed).

A family module (models.flux.presets, models.cogview.presets) exposes:

- `PRESETS: dict[str, config]`: preset name -> that family's frozen config object. Names are
  unique across families. A config may have a `demo: bool` attribute (small shipped model).
- `build_model(name, device="meta") -> nn.Module`: the preset's main network (the part whose size
  names the model), built without allocating memory on the meta device.
- `inspect_checkpoint(path) -> CheckpointReport | None`: None when the file is not of this family.

CheckpointReport is a plain dict with exactly these keys:

    path: str           the path inspected
    family: str         "flux" | "cogview"
    component: str      which network the file holds, e.g. "transformer", "autoencoder", "vqvae"
    variant: str | None the matching preset (or "<preset> autoencoder"); None if nothing fits
    layout: str         the key layout, e.g. "bfl" | "diffusers" for FLUX, "original" for CogView
    parameters: int     parameters in the file (BatchNorm statistics excluded)
    dtype: str          tensor dtypes in the file, comma-separated
    files: int          number of safetensors files read (sharded checkpoints have several)
    missing: list[str]      tensors the preset's model has and the file lacks
    unexpected: list[str]   tensors the file has and the model does not
    mis_shaped: list[[str, list[int], list[int]]]   [name, expected shape, shape in the file]
    ok: bool            variant found and no missing / unexpected / mis-shaped tensors
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from torch import nn

CheckpointReport = dict[str, Any]

FAMILY_MODULES = ("models.flux.presets", "models.cogview.presets")


@dataclass(frozen=True)
class PresetInfo:
    name: str
    family: str
    demo: bool
    config: Any


def families() -> dict[str, ModuleType]:
    """family name -> module, for every family module that imports (CogView may be absent)."""
    out: dict[str, ModuleType] = {}
    for mod_name in FAMILY_MODULES:
        try:
            mod = importlib.import_module(mod_name)
        except ImportError:
            continue
        if hasattr(mod, "PRESETS") and hasattr(mod, "build_model"):
            out[mod_name.split(".")[1]] = mod
    return out


def all_presets() -> dict[str, PresetInfo]:
    out: dict[str, PresetInfo] = {}
    for family, mod in families().items():
        for name, config in mod.PRESETS.items():
            out[name] = PresetInfo(name, family, bool(getattr(config, "demo", name.startswith("demo"))), config)
    return out


def build_model(name: str, device: str = "meta") -> nn.Module:
    presets = all_presets()
    if name not in presets:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(presets)}")
    return families()[presets[name].family].build_model(name, device=device)


def parameter_count(name: str) -> int:
    """Parameters of the preset's main network, counted on the meta device (no memory used)."""
    return sum(p.numel() for p in build_model(name, "meta").parameters())


def inspect_checkpoint(path: str) -> CheckpointReport | None:
    """Ask each family in turn; the first that recognises the file answers."""
    for mod in families().values():
        inspect = getattr(mod, "inspect_checkpoint", None)
        if inspect is None:
            continue
        try:
            report = inspect(path)
        except Exception:  # noqa: BLE001  a file of another family's format: not this family's to judge
            continue
        if report is not None:
            return report
    return None
