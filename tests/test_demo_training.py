"""The demo training scripts' shared run state (EmaRun): a run stopped hard and started again ends
exactly where an uninterrupted one does (the data of step k depends only on (seed, k))."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from models.demo.train_common import EmaRun, step_rng

TOTAL = 200


def train(run: Path, stop_at: int = TOTAL) -> EmaRun:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    r = EmaRun(run, model, lr=1e-2, total=TOTAL, warmup=10, ema_cap=0.99)
    for step in range(r.step, stop_at):
        x = torch.from_numpy(step_rng(7, step).standard_normal((8, 3)).astype("float32"))
        r.update(step, (model(x) - x[:, :2]).pow(2).mean())
    return r


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path: Path) -> None:
    straight = train(tmp_path / "straight")
    train(tmp_path / "stopped", stop_at=150)  # killed at 150: the last save was at step 100
    resumed = train(tmp_path / "stopped")
    assert resumed.step == straight.step == TOTAL
    for a, b in zip([*straight.model.parameters(), *straight.ema.parameters()],
                    [*resumed.model.parameters(), *resumed.ema.parameters()], strict=True):
        assert torch.equal(a, b)
    assert resumed.wall > 0
