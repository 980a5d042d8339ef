"""FLUX sampling as plain functions (spec §4, §8, §9, §10.6).

Everything here is per-sample: each image gets its own CPU-seeded noise, its own schedule and its
own guidance value, so one batch can mix requests and an image never depends on its batch-mates.
Convention (flow matching): x_t = (1 - t) * x0 + t * noise, the model predicts noise - x0, and
Euler steps go from t = 1 to t = 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence

import torch
from einops import rearrange
from torch import Tensor

# ---------------------------------------------------------------- noise, packing, ids


def make_noise(seeds: Sequence[int], shape: Sequence[int], dtype: torch.dtype = torch.float32) -> Tensor:
    """(B, *shape) noise; row i comes from a CPU torch.Generator seeded with seeds[i], so it is the
    same on every device and in every batch (spec §4 and DESIGN "Batching")."""
    rows = [torch.randn(*shape, generator=torch.Generator("cpu").manual_seed(int(s)), dtype=dtype) for s in seeds]
    return torch.stack(rows)


def pack(x: Tensor) -> Tensor:
    """FLUX.1 2x2 patchify: (B, C, 2h, 2w) -> (B, h*w, C*4), channel index c*4 + py*2 + px."""
    return rearrange(x, "b c (h ph) (w pw) -> b (h w) (c ph pw)", ph=2, pw=2)


def unpack(x: Tensor, h: int, w: int) -> Tensor:
    """Inverse of pack for a token grid of h x w: (B, h*w, C*4) -> (B, C, 2h, 2w)."""
    return rearrange(x, "b (h w) (c ph pw) -> b c (h ph) (w pw)", h=h, w=w, ph=2, pw=2)


def tokens(x: Tensor) -> Tensor:
    """FLUX.2 (the AE already patchified): (B, C, h, w) -> (B, h*w, C)."""
    return rearrange(x, "b c h w -> b (h w) c")


def untokens(x: Tensor, h: int, w: int) -> Tensor:
    return rearrange(x, "b (h w) c -> b c h w", h=h, w=w)


def image_ids(h: int, w: int, n_axes: int, t: float = 0.0, device: torch.device | str = "cpu") -> Tensor:
    """(1, h*w, n_axes) raster-order ids: FLUX.1 (t, row, col); FLUX.2 (t, row, col, 0).
    t is 0 for the target, 1 for a Kontext reference, 10, 20, ... for FLUX.2 references."""
    ids = torch.zeros(h, w, n_axes, device=device)
    ids[..., 0] = t
    ids[..., 1] = torch.arange(h, device=device)[:, None]
    ids[..., 2] = torch.arange(w, device=device)[None, :]
    return ids.reshape(1, h * w, n_axes)


def text_ids(length: int, n_axes: int, device: torch.device | str = "cpu") -> Tensor:
    """FLUX.1: all zeros (RoPE is the identity on text). FLUX.2: (0, 0, 0, l)."""
    ids = torch.zeros(1, length, n_axes, device=device)
    if n_axes == 4:
        ids[0, :, 3] = torch.arange(length, device=device)
    return ids


# ---------------------------------------------------------------- schedules


def time_shift(mu: float, sigma: float, t: Tensor) -> Tensor:
    return math.exp(mu) / (math.exp(mu) + (1 / t - 1) ** sigma)


def flux1_mu(image_seq_len: int, base_shift: float = 0.5, max_shift: float = 1.15) -> float:
    """mu on the line through (256 tokens, 0.5) and (4096 tokens, 1.15)."""
    m = (max_shift - base_shift) / (4096 - 256)
    return image_seq_len * m + (base_shift - m * 256)


def flux2_mu(image_seq_len: int, num_steps: int) -> float:
    """compute_empirical_mu (spec §10.6): interpolate in N between fits at 10 and 200 steps."""
    a1, b1 = 8.73809524e-05, 1.89833333
    a2, b2 = 0.00016927, 0.45666666
    if image_seq_len > 4300:
        return a2 * image_seq_len + b2
    m_200 = a2 * image_seq_len + b2
    m_10 = a1 * image_seq_len + b1
    a = (m_200 - m_10) / 190.0
    return a * num_steps + (m_200 - 200.0 * a)


def get_schedule(num_steps: int, image_seq_len: int, kind: str) -> list[float]:
    """num_steps + 1 times from 1 to 0. kind: "linear" (schnell), "flux1-shift", "flux2".
    image_seq_len counts target image tokens only (never text or reference tokens)."""
    t = torch.linspace(1, 0, num_steps + 1, dtype=torch.float64)
    if kind == "flux1-shift":
        mu = flux1_mu(image_seq_len)
    elif kind == "flux2":
        mu = flux2_mu(image_seq_len, num_steps)
    elif kind == "linear":
        return t.tolist()
    else:
        raise ValueError(f"unknown schedule kind {kind!r}")
    inner = t[1:-1]  # the end points 1 and 0 are fixed points of the shift
    t[1:-1] = time_shift(mu, 1.0, inner)
    return t.tolist()


# ---------------------------------------------------------------- conditioning


def fill_condition(latents: Tensor, mask: Tensor, ae_downsample: int) -> Tensor:
    """FLUX.1 Fill image conditioning (spec §9): [packed masked-image latents | packed mask].

    latents: AE encoding of image * (1 - mask), (B, C, h, w); mask: (B, 1, H, W) in [0, 1] with 1 =
    repaint. The mask is pixel-unshuffled by the AE factor, then 2x2-packed: 64 + 256 = 320 channels.
    """
    f = ae_downsample
    m = rearrange(mask, "b c (h ph) (w pw) -> b (c ph pw) h w", ph=f, pw=f)
    return torch.cat((pack(latents), pack(m.to(latents.dtype))), dim=-1)  # (B, L, 4C + 4f^2)


# ---------------------------------------------------------------- Euler denoising

# predict(rows, x (b, L, C), t (b,), guidance (b,)) -> velocity (b, L, C), where `rows` indexes
# the original batch: the caller uses it to pick each row's text and conditioning.
Predict = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
# on_step(step, total) -> row indices to stop (e.g. cancelled jobs).
OnStep = Callable[[int, int], Collection[int] | None]


def cfg_predict(predict_cond: Predict, predict_uncond: Predict) -> Predict:
    """True classifier-free guidance for base (non-distilled) models: v_u + g * (v_c - v_u)."""

    def predict(rows: Tensor, x: Tensor, t: Tensor, g: Tensor) -> Tensor:
        v_c = predict_cond(rows, x, t, g)
        v_u = predict_uncond(rows, x, t, g)
        return v_u + g.to(v_c.dtype)[:, None, None] * (v_c - v_u)

    return predict


def denoise(
    predict: Predict,
    x: Tensor,
    schedules: Sequence[Sequence[float]],
    guidance: Sequence[float],
    on_step: OnStep | None = None,
) -> tuple[Tensor, list[bool]]:
    """Euler-integrate every row along its own schedule. x: (B, L, C) noise, updated in place.

    Rows whose schedule is shorter finish early and leave the batch; rows that on_step stops are
    dropped at once. Returns (x, alive), alive[i] False for stopped rows.
    """
    n = x.shape[0]
    device = x.device
    alive = [True] * n
    total = max((len(s) - 1 for s in schedules), default=0)
    sched = [torch.tensor(s, dtype=torch.float64) for s in schedules]
    g_all = torch.tensor(list(guidance), dtype=torch.float32, device=device)
    for step in range(total):
        rows = [i for i in range(n) if alive[i] and step < len(schedules[i]) - 1]
        if not rows:
            break
        full = len(rows) == n
        idx = torch.tensor(rows, device=device)
        t_cur = torch.stack([sched[i][step] for i in rows]).to(device=device, dtype=torch.float32)
        t_next = torch.stack([sched[i][step + 1] for i in rows]).to(device=device, dtype=torch.float32)
        xs = x if full else x[idx]
        v = predict(idx, xs, t_cur, g_all if full else g_all[idx])
        dt = (t_next - t_cur).to(x.dtype)[:, None, None]  # (b, 1, 1)
        if full:
            x.add_(dt * v.to(x.dtype))
        else:
            x[idx] = xs + dt * v.to(x.dtype)
        if on_step is not None:
            stop = on_step(step + 1, total)
            for i in stop or ():
                if 0 <= i < n:
                    alive[i] = False
    return x, alive
