"""Loading FLUX checkpoints: BFL or diffusers layout, one file or a sharded index (spec §7, §11).

Models are built on the meta device and every tensor is read one at a time, cast to the target
device and dtype, and assigned (`load_state_dict(assign=True)`), so no second full copy of the
weights is ever made. Before loading, the checkpoint is compared with the model the preset
builds, and a mismatch is reported by tensor name.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from torch import Tensor, nn

from models.flux.autoencoder import AutoEncoder, AutoEncoder2, AutoEncoderParams, build_autoencoder
from models.flux.convert import ae_diffusers_to_bfl, transformer_diffusers_to_bfl
from models.flux.model import Flux
from models.flux.model2 import Flux2
from models.flux.presets import PRESETS, FluxPreset, build_transformer

BFL_PREFIXES = ("model.diffusion_model.",)
# Where diffusers-format model folders keep each component.
SUBFOLDERS = {"transformer": "transformer", "autoencoder": "vae"}


@dataclass
class Mismatch:
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mis_shaped: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)  # key, want, got

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mis_shaped)

    def describe(self, limit: int = 20) -> str:
        parts = []
        for label, items in (("missing", self.missing), ("unexpected", self.unexpected)):
            if items:
                shown = ", ".join(items[:limit]) + (f", ... ({len(items)} in all)" if len(items) > limit else "")
                parts.append(f"{label} tensors: {shown}")
        if self.mis_shaped:
            shown = ", ".join(f"{k} (expected {list(a)}, found {list(b)})" for k, a, b in self.mis_shaped[:limit])
            parts.append(f"mis-shaped tensors: {shown}")
        return "; ".join(parts)


class CheckpointError(ValueError):
    def __init__(self, path: str, what: str, mismatch: Mismatch):
        self.mismatch = mismatch
        super().__init__(f"{path} does not match {what}: {mismatch.describe()}")


# ---------------------------------------------------------------- files and keys


def resolve_files(path: str | Path, component: str = "transformer") -> list[Path]:
    """The safetensors files of one component: a file, an index.json, or a folder (which may be a
    diffusers model folder with `transformer/` and `vae/` subfolders)."""
    p = Path(path)
    if p.is_file():
        if p.name.endswith(".index.json"):
            weight_map = json.loads(p.read_text())["weight_map"]
            return [p.parent / f for f in dict.fromkeys(weight_map.values())]
        return [p]
    if not p.is_dir():
        raise FileNotFoundError(f"no checkpoint at {p}")
    indexes = sorted(p.glob("*.safetensors.index.json"))
    if indexes:
        return resolve_files(indexes[0])
    files = sorted(p.glob("*.safetensors"))
    if files:
        return files
    sub = p / SUBFOLDERS.get(component, component)
    if sub.is_dir():
        return resolve_files(sub, component)
    raise FileNotFoundError(f"no .safetensors files in {p}")


def _strip(key: str) -> str:
    for prefix in BFL_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def read_shapes(files: Iterable[Path]) -> dict[str, tuple[tuple[int, ...], str]]:
    """key -> (shape, dtype name) without reading any tensor data."""
    out: dict[str, tuple[tuple[int, ...], str]] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as fh:
            for k in fh.keys():
                sl = fh.get_slice(k)
                out[_strip(k)] = (tuple(sl.get_shape()), str(sl.get_dtype()))
    return out


def read_tensors(files: Iterable[Path], device: str | torch.device, dtype: torch.dtype | None) -> dict[str, Tensor]:
    """Every tensor, each moved to device/dtype as soon as it is read (integers keep their dtype)."""
    out: dict[str, Tensor] = {}
    for f in files:
        with safe_open(str(f), framework="pt", device="cpu") as fh:
            for k in fh.keys():
                t = fh.get_tensor(k)
                out[_strip(k)] = t.to(device=device, dtype=dtype if dtype and t.is_floating_point() else None)
    return out


def detect_component(keys: Iterable[str]) -> str | None:
    ks = set(keys)
    if {"img_in.weight", "x_embedder.weight"} & ks:
        return "transformer"
    if any(k.startswith(("encoder.", "decoder.")) for k in ks):
        return "autoencoder"
    return None


def detect_layout(keys: Iterable[str]) -> str:
    ks = set(keys)
    if "x_embedder.weight" in ks or any(".down_blocks." in k or ".up_blocks." in k for k in ks):
        return "diffusers"
    return "bfl"


def is_flux2(keys: Iterable[str]) -> bool:
    ks = set(keys)
    return "single_stream_modulation.lin.weight" in ks or "single_stream_modulation.linear.weight" in ks


def _shapes_to_bfl(shapes: dict[str, tuple[tuple[int, ...], str]], component: str, arch: str) -> dict[str, tuple]:
    """Convert a key -> shape map to BFL names by converting meta tensors (no data is read)."""
    metas = {k: torch.empty(s, device="meta") for k, (s, _) in shapes.items()}
    conv = transformer_diffusers_to_bfl(metas, arch) if component == "transformer" else ae_diffusers_to_bfl(metas)
    return {k: tuple(v.shape) for k, v in conv.items()}


def compare(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]]) -> Mismatch:
    m = Mismatch()
    m.missing = sorted(k for k in expected if k not in found and not k.endswith("num_batches_tracked"))
    m.unexpected = sorted(k for k in found if k not in expected)
    m.mis_shaped = sorted((k, expected[k], found[k]) for k in expected if k in found and expected[k] != found[k])
    return m


def _expected(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


# ---------------------------------------------------------------- variant detection


def detect_transformer_variant(bfl_shapes: dict[str, tuple[int, ...]]) -> str | None:
    """The preset whose transformer is closest to these BFL tensor shapes (fewest missing,
    unexpected and mis-shaped tensors); an exact match gives a clean report. Presets with equal
    shapes (dev and kontext-dev) resolve to the first listed."""
    arch = "flux2" if "single_stream_modulation.lin.weight" in bfl_shapes else "flux1"
    best: tuple[int, str] | None = None
    for name, preset in PRESETS.items():
        if preset.arch != arch:
            continue
        m = compare(_expected(build_transformer(preset.transformer)), bfl_shapes)
        score = len(m.missing) + len(m.unexpected) + len(m.mis_shaped)
        if best is None or score < best[0]:
            best = (score, name)
    return best[1] if best else None


# ---------------------------------------------------------------- loading


def _assign(model: nn.Module, state: dict[str, Tensor], path: str, what: str) -> None:
    expected = _expected(model)
    mismatch = compare(expected, {k: tuple(v.shape) for k, v in state.items()})
    if not mismatch.ok:
        raise CheckpointError(path, what, mismatch)
    for k in expected:  # buffers a checkpoint may omit (BatchNorm's counter)
        if k not in state and k.endswith("num_batches_tracked"):
            state[k] = torch.zeros((), dtype=torch.long)
    model.load_state_dict(state, strict=True, assign=True)


def load_transformer(
    path: str | Path, preset: FluxPreset, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> Flux | Flux2:
    files = resolve_files(path, "transformer")
    state = read_tensors(files, device, dtype)
    if detect_layout(state) == "diffusers":
        state = transformer_diffusers_to_bfl(state, preset.arch)
    model = build_transformer(preset.transformer, "meta")
    try:
        _assign(model, state, str(path), f"the {preset.name} transformer")
    except CheckpointError as err:
        guess = detect_transformer_variant({k: tuple(v.shape) for k, v in state.items()})
        if guess and guess != preset.name:
            raise CheckpointError(str(path), f"the {preset.name} transformer (it looks like {guess})",
                                  err.mismatch) from None
        raise
    return model.eval()


def load_autoencoder(
    path: str | Path, params: AutoEncoderParams, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> AutoEncoder | AutoEncoder2:
    files = resolve_files(path, "autoencoder")
    state = read_tensors(files, device, dtype)
    if detect_layout(state) == "diffusers":
        state = ae_diffusers_to_bfl(state)
    with torch.device("meta"):
        model = build_autoencoder(params)
    _assign(model, state, str(path), "the FLUX.2 autoencoder" if params.flux2 else "the FLUX.1 autoencoder")
    # BatchNorm statistics stay fp32 for the normalisation's accuracy; they are tiny.
    if isinstance(model, AutoEncoder2):
        model.bn.float()
    return model.eval()


# ---------------------------------------------------------------- inspection


def inspect_flux_checkpoint(path: str | Path) -> dict[str, object] | None:
    """A report on any FLUX transformer or AE checkpoint (shape in models/presets.py), or None."""
    try:
        files = resolve_files(path, "transformer")
    except FileNotFoundError:
        return None
    raw = read_shapes(files)
    component = detect_component(raw)
    if component is None and Path(path).is_dir():
        try:
            files = resolve_files(Path(path) / SUBFOLDERS["autoencoder"], "autoencoder")
        except FileNotFoundError:
            return None
        raw = read_shapes(files)
        component = detect_component(raw)
    if component is None:
        return None
    layout = detect_layout(raw)
    arch = "flux2" if is_flux2(raw) or "bn.running_mean" in raw else "flux1"
    shapes = _shapes_to_bfl(raw, component, arch) if layout == "diffusers" else {k: s for k, (s, _) in raw.items()}
    if component == "transformer":
        variant = detect_transformer_variant(shapes)
        expected = _expected(build_transformer(PRESETS[variant].transformer)) if variant else {}
    else:
        variant, expected = _detect_ae(shapes, arch)
    mismatch = compare(expected, shapes)
    params = sum(_numel(s) for k, (s, _) in raw.items() if not k.endswith(("running_mean", "running_var",
                                                                          "num_batches_tracked")))
    return {
        "path": str(path),
        "family": "flux",
        "component": component,
        "variant": variant,
        "layout": layout,
        "parameters": params,
        "dtype": ",".join(sorted({d for _, d in raw.values()})),
        "files": len(files),
        "missing": mismatch.missing,
        "unexpected": mismatch.unexpected,
        "mis_shaped": [[k, list(a), list(b)] for k, a, b in mismatch.mis_shaped],
        "ok": bool(variant) and mismatch.ok,
    }


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _detect_ae(shapes: dict[str, tuple[int, ...]], arch: str) -> tuple[str | None, dict[str, tuple[int, ...]]]:
    """AEs are shared by presets; name the first preset whose AE matches (full-size ones first)."""
    fallback: tuple[str | None, dict[str, tuple[int, ...]]] = (None, {})
    for name, preset in PRESETS.items():
        if (preset.autoencoder.flux2) != (arch == "flux2"):
            continue
        with torch.device("meta"):
            expected = _expected(build_autoencoder(preset.autoencoder))
        if compare(expected, shapes).ok:
            return f"{name} autoencoder", expected
        if fallback[0] is None and not preset.demo:
            fallback = (f"{name} autoencoder", expected)
    return fallback
