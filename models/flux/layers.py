"""Building blocks shared by the FLUX.1 and FLUX.2 transformers (spec §3, §10.3).

Tensor names follow Black Forest Labs' reference code so that BFL checkpoints load without
renaming. Attention tensors use the layout (B, H, L, D): heads before sequence, as SDPA wants.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def timestep_embedding(t: Tensor, dim: int = 256, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of t in [0, 1] (or guidance), cos first then sin (spec §3.1).

    t: (B,) -> (B, dim). Computed in fp32 and cast back to t's dtype, as BFL does.
    """
    t_scaled = 1000.0 * t.float()  # BFL's time_factor: the embedding sees t in [0, 1000]
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t_scaled[:, None] * freqs[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return emb.to(t.dtype) if t.is_floating_point() else emb


class MLPEmbedder(nn.Module):
    """Linear -> SiLU -> Linear; used for time_in, vector_in and guidance_in."""

    def __init__(self, in_dim: int, hidden_dim: int, bias: bool = True):
        super().__init__()
        self.in_layer = nn.Linear(in_dim, hidden_dim, bias=bias)
        self.out_layer = nn.Linear(hidden_dim, hidden_dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.out_layer(F.silu(self.in_layer(x)))


class RMSNorm(nn.Module):
    """RMSNorm with a `scale` parameter; normalises in fp32 then casts back (spec §3.3)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype == torch.float32:
            # One fused kernel when no cast is needed (the common fp32 / CPU path).
            return F.rms_norm(x, (x.shape[-1],), self.scale, self.eps)
        normed = F.rms_norm(x.float(), (x.shape[-1],), None, self.eps).to(x.dtype)
        return normed * self.scale.to(x.dtype)


class QKNorm(nn.Module):
    def __init__(self, head_dim: int):
        super().__init__()
        self.query_norm = RMSNorm(head_dim)
        self.key_norm = RMSNorm(head_dim)

    def forward(self, qk: Tensor) -> Tensor:
        """qk: (B, L, 2, H, D) -> normalised q and k in one pass: normalise in fp32, cast back,
        then multiply by each norm's scale (BFL's order of operations)."""
        eps = self.query_norm.eps
        normed = F.rms_norm(qk.float(), (qk.shape[-1],), None, eps).to(qk.dtype)
        scale = torch.stack((self.query_norm.scale, self.key_norm.scale)).to(qk.dtype)  # (2, D)
        return normed * scale[:, None, :]  # broadcast over (2, H, D)


def rope_frequencies(ids: Tensor, axes_dim: tuple[int, ...], theta: float) -> Tensor:
    """Multi-axis RoPE rotations (spec §3.4, §10.3) as unit complex numbers, laid out for the
    (B, L, 2, H, D) q/k tensor: ids (B, L, n_axes) -> (B, L, 1, 1, D/2) complex64.

    Frequencies are float64 like BFL and diffusers. Axes are concatenated in order: head dims
    [0, d0) rotate with axis 0, and so on.
    """
    angles = []
    pos = ids.to(torch.float64)
    for axis, dim in enumerate(axes_dim):
        scale = torch.arange(0, dim, 2, dtype=torch.float64, device=ids.device) / dim
        omega = 1.0 / (theta**scale)  # (dim/2,)
        angles.append(pos[..., axis, None] * omega)  # (B, L, dim/2)
    ang = torch.cat(angles, dim=-1)  # (B, L, D/2)
    freqs = torch.complex(torch.cos(ang).float(), torch.sin(ang).float())
    return freqs[:, :, None, None, :]


def cat_ids(txt_ids: Tensor, img_ids: Tensor) -> Tensor:
    """[txt ; img] ids along the sequence; either side may have batch 1 (shared by the batch)."""
    b = max(txt_ids.shape[0], img_ids.shape[0])
    return torch.cat((txt_ids.expand(b, -1, -1), img_ids.expand(b, -1, -1)), dim=1)


def apply_rope(x: Tensor, freqs: Tensor) -> Tensor:
    """Rotate adjacent pairs (x_{2k}, x_{2k+1}) of the last dim (the interleaved convention):
    out_{2k} = cos x_{2k} - sin x_{2k+1}, out_{2k+1} = sin x_{2k} + cos x_{2k+1}, which is the
    complex product (x_{2k} + i x_{2k+1}) * e^{i angle}: one vectorised kernel. fp32, cast back."""
    xc = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)).contiguous())
    return torch.view_as_real(xc * freqs).flatten(-2).type_as(x)


def attention(qk: Tensor, v: Tensor, pe: Tensor) -> Tensor:
    """qk (B, L, 2, H, D), v (B, L, H, D): RoPE on q and k, SDPA (no mask) -> (B, L, H*D)."""
    qk = apply_rope(qk, pe)
    q, k = qk[:, :, 0].transpose(1, 2), qk[:, :, 1].transpose(1, 2)  # (B, H, L, D) views
    out = F.scaled_dot_product_attention(q, k, v.transpose(1, 2))  # (B, H, L, D)
    return out.transpose(1, 2).flatten(2)  # "B H L D -> B L (H D)"


def split_qkv(qkv: Tensor, num_heads: int) -> tuple[Tensor, Tensor]:
    """(B, L, 3*H*D), outputs ordered [q | k | v] (spec §3.7) -> qk (B, L, 2, H, D), v (B, L, H, D)."""
    b, seq, _ = qkv.shape
    qkv = qkv.view(b, seq, 3, num_heads, -1)  # "B L (K H D) -> B L K H D"
    return qkv[:, :, :2], qkv[:, :, 2]


def fused_in(x: Tensor, linear: nn.Linear, split: int) -> tuple[Tensor, Tensor]:
    """A fused input projection as two matmuls over row slices of its weight (views, no copy),
    so both outputs are contiguous: the attention and MLP branches then run on dense memory."""
    w, b = linear.weight, linear.bias
    first = F.linear(x, w[:split], None if b is None else b[:split])
    second = F.linear(x, w[split:], None if b is None else b[split:])
    return first, second


def fused_out(a: Tensor, m: Tensor, linear: nn.Linear) -> Tensor:
    """linear(cat(a, m, -1)) without materialising the concatenation: two accumulating matmuls
    over column slices of the weight (strided views that BLAS reads in place)."""
    w, b = linear.weight, linear.bias
    split = a.shape[-1]
    a2, m2 = a.reshape(-1, split), m.reshape(-1, m.shape[-1])
    out = a2 @ w[:, :split].t() if b is None else torch.addmm(b, a2, w[:, :split].t())
    out.addmm_(m2, w[:, split:].t())
    return out.view(*a.shape[:-1], -1)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """(1 + scale) * x + shift with one fused multiply-add; x (B, L, D), shift/scale (B, 1, D)."""
    return torch.addcmul(shift, x, 1 + scale)


class LastLayer(nn.Module):
    """Final adaLN: modulation chunked (shift, scale), then Linear to the output channels (§3.9)."""

    def __init__(self, hidden_size: int, out_channels: int, bias: bool = True):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, out_channels, bias=bias)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size, bias=bias))

    def forward(self, x: Tensor, vec: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(vec).unsqueeze(1).chunk(2, dim=-1)  # (B, 1, D) each
        return self.linear(modulate(self.norm_final(x), shift, scale))
