"""Reading CogView checkpoints (spec §6, §2): DeepSpeed `mp_rank_00_model_states.pt` and safetensors.

The DeepSpeed file holds the model under 'module' plus client state (iteration, RNG states).
It is read with `torch.load(weights_only=True)`: nothing is unpickled but tensors, containers
and, for the saved numpy RNG state, numpy arrays and dtypes (data only, no code).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

PathLike = str | os.PathLike[str]


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model: names every missing, extra or mis-shaped tensor."""

    def __init__(self, path: PathLike, missing: list[str], unexpected: list[str], mismatched: list[str]) -> None:
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched
        parts = []
        for label, names in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", mismatched)):
            if names:
                shown = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
                parts.append(f"{label}: {shown}")
        super().__init__(f"{path} does not match the model; " + "; ".join(parts))


def _numpy_safe_globals() -> list:
    """numpy objects a DeepSpeed client state pickles for np.random.get_state()."""
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    names = ("numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct")
    out: list = [np.ndarray, np.dtype, *((_reconstruct, n) for n in names)]
    out += [type(np.dtype(t)) for t in (np.uint32, np.int64, np.float64)]
    return out


def torch_load(path: PathLike) -> object:
    with torch.serialization.safe_globals(_numpy_safe_globals()):
        try:  # memory-map zip-format files: a 7.9 GB checkpoint is not read twice
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:
            return torch.load(path, map_location="cpu", weights_only=True)


def read_state_dict(path: PathLike, rename: bool = True) -> tuple[dict[str, Tensor], str]:
    """Returns (state dict with CogView's key names, layout: 'safetensors'|'deepspeed'|'state_dict')."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(p))
        return (normalize_keys(sd) if rename else sd), "safetensors"
    obj = torch_load(p)
    layout = "state_dict"
    if isinstance(obj, Mapping) and "module" in obj and isinstance(obj["module"], Mapping):
        obj, layout = obj["module"], "deepspeed"
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{p} is not a state dict of tensors (nor a DeepSpeed file with 'module')")
    return (normalize_keys(obj) if rename else dict(obj)), layout


def read_shapes(path: PathLike) -> tuple[dict[str, tuple[tuple[int, ...], torch.dtype]], str, str]:
    """Names (CogView's), shapes and dtypes without materialising tensors where the format allows.

    Returns (shapes, container: 'safetensors'|'deepspeed'|'state_dict', key layout: 'original'|'sat').
    """
    p = Path(path)
    if p.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(p), framework="pt") as f:
            raw = {}
            for k in f.keys():
                sl = f.get_slice(k)
                raw[k] = (tuple(sl.get_shape()), _st_dtype(sl.get_dtype()))
        container = "safetensors"
    else:
        sd, container = read_state_dict(p, rename=False)
        raw = {k: (tuple(v.shape), v.dtype) for k, v in sd.items()}
    layout = "sat" if any(k.removeprefix("module.") == _SAT_EMBEDDING for k in raw) else "original"
    return {_rename(k): v for k, v in raw.items()}, container, layout


def _st_dtype(name: str) -> torch.dtype:
    return {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}.get(
        name, torch.float32
    )


_SAT_EMBEDDING = "transformer.word_embeddings.weight"


def _rename(k: str) -> str:
    k = k.removeprefix("module.")
    # SwissArmyTransformer moved the embedding under transformer.; CogView has it at the top.
    return "word_embeddings.weight" if k == _SAT_EMBEDDING else k


def normalize_keys(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {_rename(k): v for k, v in sd.items()}


def compare(
    expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]]
) -> tuple[list[str], list[str], list[str]]:
    missing = sorted(k for k in expected if k not in found)
    unexpected = sorted(k for k in found if k not in expected)
    mismatched = sorted(
        f"{k} {list(found[k])} != {list(expected[k])}"
        for k in expected
        if k in found and tuple(found[k]) != tuple(expected[k])
    )
    return missing, unexpected, mismatched


def expected_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def load_into(
    model: nn.Module, path: PathLike, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"
) -> str:
    """Strictly load `path` into `model` (which may live on the meta device). Returns the layout.

    Floating tensors are cast to `dtype`; VQ codebook buffers stay fp32 so code assignment
    does not change with the serving precision.
    """
    sd, layout = read_state_dict(path)
    missing, unexpected, mismatched = compare(expected_shapes(model), {k: tuple(v.shape) for k, v in sd.items()})
    if missing or unexpected or mismatched:
        raise CheckpointError(path, missing, unexpected, mismatched)
    cast = {}
    for k, v in sd.items():
        keep_fp32 = k.startswith("quantize_t.")
        t = dtype if (dtype is not None and v.is_floating_point() and not keep_fp32) else v.dtype
        cast[k] = v.to(device=device, dtype=torch.float32 if keep_fp32 else t)
    model.load_state_dict(cast, strict=True, assign=True)
    return layout
