"""Shared plumbing of the demo training scripts: resumable checkpoints, seeded data, logging.

Every script here must survive a hard stop (the machines are shared and sessions end without
warning), so state goes to disk atomically every few minutes and the data stream of step k is a
pure function of (seed, k): a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from models.demo.captions import caption
from models.demo.world import Attributes, sample_batch

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def step_rng(seed: int, step: int, stream: int = 0) -> np.random.Generator:
    """The generator for one training step: depends on nothing but (seed, step, stream)."""
    return np.random.default_rng([seed, step, stream])


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [-1, 1], the pipeline's pixel convention."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def batch(n: int, rng: np.random.Generator, size: int = 64) -> tuple[torch.Tensor, list[Attributes]]:
    images, attrs = sample_batch(n, size, rng)  # never yields held-out combinations
    return images_to_tensor(images), attrs


def captions_for(attrs: list[Attributes], rng: np.random.Generator, p_drop: float) -> list[str]:
    """A random language per sample (so EN and ZH prompts both work) and "" with p_drop (for CFG)."""
    langs = rng.random(len(attrs)) < 0.5
    drops = rng.random(len(attrs)) < p_drop
    return ["" if d else caption(a, "zh" if z else "en") for a, z, d in zip(attrs, langs, drops, strict=True)]


def cosine_lr(step: int, total: int, peak: float, warmup: int = 50, floor: float = 0.05) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    frac = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * frac)))


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write-then-rename so a kill mid-write never leaves a truncated checkpoint behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_state(path: Path) -> dict[str, Any] | None:
    return torch.load(path, map_location="cpu", weights_only=False) if path.exists() else None


def export(module: torch.nn.Module, path: Path, dtype: torch.dtype = torch.float16) -> None:
    """Ship weights as safetensors; floating tensors in `dtype` (fp16 halves the repo size)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in module.state_dict().items()
    }
    save_file(state, str(path))


class Logger:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.t0 = time.time()

    def __call__(self, **fields: Any) -> None:
        fields = {"wall_s": round(time.time() - self.t0, 1), **fields}
        line = json.dumps(fields)
        print(line, flush=True)
        with self.path.open("a") as fh:
            fh.write(line + "\n")
