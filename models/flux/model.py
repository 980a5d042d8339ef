"""FLUX.1 flow transformer (MM-DiT): double-stream blocks, then single-stream blocks (spec §3, §7).

Parameter names equal BFL's `flux.model.Flux`, so `flux1-*.safetensors` load as they are.
The timestep and guidance are per-sample vectors: one batch can mix requests at different
points of their schedules with different guidance scales.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.flux.layers import (
    LastLayer,
    MLPEmbedder,
    QKNorm,
    attention,
    cat_ids,
    fused_in,
    fused_out,
    modulate,
    rope_frequencies,
    split_qkv,
    timestep_embedding,
)


@dataclass(frozen=True)
class FluxParams:
    """BFL's FluxParams (spec §2); defaults are FLUX.1-dev."""

    in_channels: int = 64
    out_channels: int = 64
    vec_in_dim: int = 768
    context_in_dim: int = 4096
    hidden_size: int = 3072
    mlp_ratio: float = 4.0
    num_heads: int = 24
    depth: int = 19
    depth_single_blocks: int = 38
    axes_dim: tuple[int, ...] = (16, 56, 56)
    theta: float = 10000.0
    qkv_bias: bool = True
    guidance_embed: bool = True

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if sum(self.axes_dim) != self.hidden_size // self.num_heads:
            raise ValueError(f"sum(axes_dim)={sum(self.axes_dim)} must equal the head dim")


class SelfAttention(nn.Module):
    """Holds the qkv / norm / proj weights of one stream; the attention itself is joint."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.norm = QKNorm(dim // num_heads)
        self.proj = nn.Linear(dim, dim)


class Modulation(nn.Module):
    def __init__(self, dim: int, double: bool):
        super().__init__()
        self.multiplier = 6 if double else 3
        self.lin = nn.Linear(dim, self.multiplier * dim, bias=True)

    def forward(self, vec: Tensor) -> list[Tensor]:
        # (B, D) -> multiplier tensors of (B, 1, D), ordered (shift, scale, gate)[, (shift, scale, gate)].
        return list(self.lin(F.silu(vec)).unsqueeze(1).chunk(self.multiplier, dim=-1))


def _mlp(hidden: int, mlp_hidden: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(hidden, mlp_hidden, bias=True),
        nn.GELU(approximate="tanh"),
        nn.Linear(mlp_hidden, hidden, bias=True),
    )


class DoubleStreamBlock(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float, qkv_bias: bool):
        super().__init__()
        mlp_hidden = int(hidden_size * mlp_ratio)
        self.num_heads = num_heads
        for s in ("img", "txt"):
            setattr(self, f"{s}_mod", Modulation(hidden_size, double=True))
            setattr(self, f"{s}_norm1", nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6))
            setattr(self, f"{s}_attn", SelfAttention(hidden_size, num_heads, qkv_bias))
            setattr(self, f"{s}_norm2", nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6))
            setattr(self, f"{s}_mlp", _mlp(hidden_size, mlp_hidden))

    def _qkv(self, s: str, x: Tensor, shift: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
        attn: SelfAttention = getattr(self, f"{s}_attn")
        x_mod = modulate(getattr(self, f"{s}_norm1")(x), shift, scale)
        qk, v = split_qkv(attn.qkv(x_mod), self.num_heads)  # (B, L, 2, H, Dh), (B, L, H, Dh)
        return attn.norm(qk), v

    def forward(self, img: Tensor, txt: Tensor, vec: Tensor, pe: Tensor) -> tuple[Tensor, Tensor]:
        # img (B, Li, D), txt (B, Lt, D), vec (B, D)
        i_shift1, i_scale1, i_gate1, i_shift2, i_scale2, i_gate2 = self.img_mod(vec)
        t_shift1, t_scale1, t_gate1, t_shift2, t_scale2, t_gate2 = self.txt_mod(vec)
        iqk, iv = self._qkv("img", img, i_shift1, i_scale1)
        tqk, tv = self._qkv("txt", txt, t_shift1, t_scale1)
        # Joint attention over [txt ; img], matching the order of the ids that built pe.
        out = attention(torch.cat((tqk, iqk), dim=1), torch.cat((tv, iv), dim=1), pe)  # (B, Lt+Li, D)
        n_txt = txt.shape[1]
        img = torch.addcmul(img, i_gate1, self.img_attn.proj(out[:, n_txt:]))
        img = torch.addcmul(img, i_gate2, self.img_mlp(modulate(self.img_norm2(img), i_shift2, i_scale2)))
        txt = torch.addcmul(txt, t_gate1, self.txt_attn.proj(out[:, :n_txt]))
        txt = torch.addcmul(txt, t_gate2, self.txt_mlp(modulate(self.txt_norm2(txt), t_shift2, t_scale2)))
        return img, txt


class SingleStreamBlock(nn.Module):
    """Parallel attention + MLP: one fused input projection, one fused output projection (§3.8)."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.mlp_hidden = int(hidden_size * mlp_ratio)
        self.linear1 = nn.Linear(hidden_size, 3 * hidden_size + self.mlp_hidden)
        self.linear2 = nn.Linear(hidden_size + self.mlp_hidden, hidden_size)
        self.norm = QKNorm(hidden_size // num_heads)
        self.pre_norm = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.modulation = Modulation(hidden_size, double=False)

    def forward(self, x: Tensor, vec: Tensor, pe: Tensor) -> Tensor:
        shift, scale, gate = self.modulation(vec)
        qkv, mlp = fused_in(modulate(self.pre_norm(x), shift, scale), self.linear1, 3 * self.hidden_size)
        qk, v = split_qkv(qkv, self.num_heads)
        attn = attention(self.norm(qk), v, pe)  # (B, L, D)
        return torch.addcmul(x, gate, fused_out(attn, F.gelu(mlp, approximate="tanh"), self.linear2))


class Flux(nn.Module):
    """FLUX.1 transformer. forward(img (B, Li, in), img_ids (B|1, Li, 3), txt (B, Lt, ctx),
    txt_ids (B|1, Lt, 3), timesteps (B,), y (B, vec_in), guidance (B,) | None) -> (B, Li, out)."""

    def __init__(self, params: FluxParams):
        super().__init__()
        self.params = params
        h = params.hidden_size
        self.in_channels = params.in_channels
        self.out_channels = params.out_channels
        self.img_in = nn.Linear(params.in_channels, h, bias=True)
        self.time_in = MLPEmbedder(256, h)
        self.vector_in = MLPEmbedder(params.vec_in_dim, h)
        self.guidance_in = MLPEmbedder(256, h) if params.guidance_embed else nn.Identity()
        self.txt_in = nn.Linear(params.context_in_dim, h)
        self.double_blocks = nn.ModuleList(
            DoubleStreamBlock(h, params.num_heads, params.mlp_ratio, params.qkv_bias) for _ in range(params.depth)
        )
        self.single_blocks = nn.ModuleList(
            SingleStreamBlock(h, params.num_heads, params.mlp_ratio) for _ in range(params.depth_single_blocks)
        )
        self.final_layer = LastLayer(h, params.out_channels)

    def forward(
        self,
        img: Tensor,
        img_ids: Tensor,
        txt: Tensor,
        txt_ids: Tensor,
        timesteps: Tensor,
        y: Tensor,
        guidance: Tensor | None = None,
    ) -> Tensor:
        img = self.img_in(img)
        vec = self.time_in(timestep_embedding(timesteps.to(img.dtype)))
        if self.params.guidance_embed:
            if guidance is None:
                raise ValueError("this FLUX.1 variant is guidance-distilled: pass a guidance vector")
            vec = vec + self.guidance_in(timestep_embedding(guidance.to(img.dtype)))
        vec = vec + self.vector_in(y)  # (B, D)
        txt = self.txt_in(txt)
        pe = rope_frequencies(cat_ids(txt_ids, img_ids), self.params.axes_dim, self.params.theta)
        for block in self.double_blocks:
            img, txt = block(img, txt, vec, pe)
        x = torch.cat((txt, img), dim=1)  # (B, Lt+Li, D)
        for block in self.single_blocks:
            x = block(x, vec, pe)
        return self.final_layer(x[:, txt.shape[1] :], vec)  # (B, Li, out)
