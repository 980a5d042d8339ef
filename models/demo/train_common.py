"""Shared plumbing of the demo training scripts: resumable checkpoints, seeded data, logging.

Every script here must survive a hard stop (the machines are shared and sessions end without
warning), so state goes to disk atomically every few minutes and the data stream of step k is a
pure function of (seed, k): a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import copy
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


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
        pe.lerp_(pm, 1 - decay)


class EmaRun:
    """A resumable run of AdamW on `model` with gradient clipping, a cosine learning rate and an EMA
    of the weights (the EMA is what gets evaluated and shipped). `run`/state.pt holds the model,
    EMA, optimiser, next step and training seconds; it is rewritten every 100 steps and at the end,
    so a stopped run continues with `for step in range(r.step, total)` where it left off."""

    def __init__(self, run: Path, model: torch.nn.Module, lr: float, total: int, warmup: int, ema_cap: float,
                 weight_decay: float = 0.01) -> None:
        self.path = run / "state.pt"
        self.model, self.lr, self.total, self.warmup, self.ema_cap = model, lr, total, warmup, ema_cap
        self.ema = copy.deepcopy(model)
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.99))
        self.step, self.wall = 0, 0.0
        state = load_state(self.path)
        if state is not None:
            model.load_state_dict(state["model"])
            self.ema.load_state_dict(state["ema"])
            self.opt.load_state_dict(state["opt"])
            self.step, self.wall = state["step"], state["wall"]
        self._clock = time.time()

    def update(self, step: int, loss: torch.Tensor) -> None:
        """One optimiser step on `loss` at `step`, then the EMA; saves the state when it is due."""
        for group in self.opt.param_groups:
            group["lr"] = cosine_lr(step, self.total, self.lr, warmup=self.warmup)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        ema_update(self.ema, self.model, min(self.ema_cap, (1 + step) / (10 + step)))
        now = time.time()
        self.wall += now - self._clock
        self._clock = now
        self.step = step + 1
        if self.step % 100 == 0 or self.step == self.total:
            save_state(self.path, {"model": self.model.state_dict(), "ema": self.ema.state_dict(),
                                   "opt": self.opt.state_dict(), "step": self.step, "wall": self.wall})

    def restart_clock(self) -> None:
        """Call after an evaluation: its time is not training time."""
        self._clock = time.time()
