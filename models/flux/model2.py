"""FLUX.2 flow transformer (spec §10.2-10.3, §10.7): FLUX.1's layout with no biases, SwiGLU
MLPs, modulation computed once per forward and shared by every block, 4-axis RoPE (theta 2000)
and no CLIP vector. Parameter names equal BFL's `flux2.model.Flux2`.
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
class Flux2Params:
    """Defaults are FLUX.2-dev (spec §10.2)."""

    in_channels: int = 128
    out_channels: int = 128
    context_in_dim: int = 15360
    hidden_size: int = 6144
    num_heads: int = 48
    depth: int = 8
    depth_single_blocks: int = 48
    mlp_ratio: float = 3.0
    axes_dim: tuple[int, ...] = (32, 32, 32, 32)
    theta: float = 2000.0
    guidance_embed: bool = True

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if sum(self.axes_dim) != self.hidden_size // self.num_heads:
            raise ValueError(f"sum(axes_dim)={sum(self.axes_dim)} must equal the head dim")


def swiglu(x: Tensor) -> Tensor:
    """(..., 2F) -> (..., F): SiLU(first half) * second half."""
    x1, x2 = x.chunk(2, dim=-1)
    return F.silu(x1) * x2


class Modulation(nn.Module):
    """Top-level shared modulation: lin(SiLU(vec)) -> 3 (single) or 6 (double) (B, 1, D) tensors."""

    def __init__(self, dim: int, double: bool):
        super().__init__()
        self.multiplier = 6 if double else 3
        self.lin = nn.Linear(dim, self.multiplier * dim, bias=False)

    def forward(self, vec: Tensor) -> list[Tensor]:
        return list(self.lin(F.silu(vec)).unsqueeze(1).chunk(self.multiplier, dim=-1))


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.norm = QKNorm(dim // num_heads)
        self.proj = nn.Linear(dim, dim, bias=False)


class SwiGLUMLP(nn.Sequential):
    """Indices 0 and 2 carry the weights, as in BFL's `nn.Sequential(Linear, SiLUActivation, Linear)`."""

    def __init__(self, dim: int, mlp_hidden: int):
        super().__init__(
            nn.Linear(dim, 2 * mlp_hidden, bias=False), nn.Identity(), nn.Linear(mlp_hidden, dim, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self[2](swiglu(self[0](x)))


class DoubleStreamBlock(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        mlp_hidden = int(hidden_size * mlp_ratio)
        self.num_heads = num_heads
        self.img_norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.img_attn = SelfAttention(hidden_size, num_heads)
        self.img_norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.img_mlp = SwiGLUMLP(hidden_size, mlp_hidden)
        self.txt_norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.txt_attn = SelfAttention(hidden_size, num_heads)
        self.txt_norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.txt_mlp = SwiGLUMLP(hidden_size, mlp_hidden)

    def forward(
        self, img: Tensor, txt: Tensor, mod_img: list[Tensor], mod_txt: list[Tensor], pe: Tensor
    ) -> tuple[Tensor, Tensor]:
        i_shift1, i_scale1, i_gate1, i_shift2, i_scale2, i_gate2 = mod_img
        t_shift1, t_scale1, t_gate1, t_shift2, t_scale2, t_gate2 = mod_txt
        iqk, iv = split_qkv(self.img_attn.qkv(modulate(self.img_norm1(img), i_shift1, i_scale1)), self.num_heads)
        tqk, tv = split_qkv(self.txt_attn.qkv(modulate(self.txt_norm1(txt), t_shift1, t_scale1)), self.num_heads)
        qk = torch.cat((self.txt_attn.norm(tqk), self.img_attn.norm(iqk)), dim=1)  # [txt ; img]
        out = attention(qk, torch.cat((tv, iv), dim=1), pe)  # (B, Lt+Li, D)
        n_txt = txt.shape[1]
        img = torch.addcmul(img, i_gate1, self.img_attn.proj(out[:, n_txt:]))
        img = torch.addcmul(img, i_gate2, self.img_mlp(modulate(self.img_norm2(img), i_shift2, i_scale2)))
        txt = torch.addcmul(txt, t_gate1, self.txt_attn.proj(out[:, :n_txt]))
        txt = torch.addcmul(txt, t_gate2, self.txt_mlp(modulate(self.txt_norm2(txt), t_shift2, t_scale2)))
        return img, txt


class SingleStreamBlock(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.mlp_hidden = int(hidden_size * mlp_ratio)
        # [q | k | v | SwiGLU gate | SwiGLU value]: H -> 3H + 2*mlp_hidden; back from H + mlp_hidden.
        self.linear1 = nn.Linear(hidden_size, 3 * hidden_size + 2 * self.mlp_hidden, bias=False)
        self.linear2 = nn.Linear(hidden_size + self.mlp_hidden, hidden_size, bias=False)
        self.norm = QKNorm(hidden_size // num_heads)
        self.pre_norm = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)

    def forward(self, x: Tensor, mod: list[Tensor], pe: Tensor) -> Tensor:
        shift, scale, gate = mod
        qkv, mlp = fused_in(modulate(self.pre_norm(x), shift, scale), self.linear1, 3 * self.hidden_size)
        qk, v = split_qkv(qkv, self.num_heads)
        attn = attention(self.norm(qk), v, pe)  # (B, L, D)
        return torch.addcmul(x, gate, fused_out(attn, swiglu(mlp), self.linear2))


class Flux2(nn.Module):
    """FLUX.2 transformer. forward(img (B, Li, in), img_ids (B|1, Li, 4), txt (B, Lt, ctx),
    txt_ids (B|1, Lt, 4), timesteps (B,), guidance (B,) | None) -> (B, Li, out)."""

    def __init__(self, params: Flux2Params):
        super().__init__()
        self.params = params
        h = params.hidden_size
        self.in_channels = params.in_channels
        self.out_channels = params.out_channels
        self.img_in = nn.Linear(params.in_channels, h, bias=False)
        self.time_in = MLPEmbedder(256, h, bias=False)
        self.guidance_in = MLPEmbedder(256, h, bias=False) if params.guidance_embed else nn.Identity()
        self.txt_in = nn.Linear(params.context_in_dim, h, bias=False)
        self.double_blocks = nn.ModuleList(
            DoubleStreamBlock(h, params.num_heads, params.mlp_ratio) for _ in range(params.depth)
        )
        self.single_blocks = nn.ModuleList(
            SingleStreamBlock(h, params.num_heads, params.mlp_ratio) for _ in range(params.depth_single_blocks)
        )
        self.double_stream_modulation_img = Modulation(h, double=True)
        self.double_stream_modulation_txt = Modulation(h, double=True)
        self.single_stream_modulation = Modulation(h, double=False)
        self.final_layer = LastLayer(h, params.out_channels, bias=False)

    def forward(
        self,
        img: Tensor,
        img_ids: Tensor,
        txt: Tensor,
        txt_ids: Tensor,
        timesteps: Tensor,
        guidance: Tensor | None = None,
    ) -> Tensor:
        vec = self.time_in(timestep_embedding(timesteps.to(img.dtype)))  # (B, D)
        if self.params.guidance_embed:
            if guidance is None:
                raise ValueError("this FLUX.2 variant is guidance-distilled: pass a guidance vector")
            vec = vec + self.guidance_in(timestep_embedding(guidance.to(img.dtype)))
        mod_img = self.double_stream_modulation_img(vec)
        mod_txt = self.double_stream_modulation_txt(vec)
        mod_single = self.single_stream_modulation(vec)
        img = self.img_in(img)
        txt = self.txt_in(txt)
        pe = rope_frequencies(cat_ids(txt_ids, img_ids), self.params.axes_dim, self.params.theta)
        for block in self.double_blocks:
            img, txt = block(img, txt, mod_img, mod_txt, pe)
        x = torch.cat((txt, img), dim=1)  # (B, Lt+Li, D)
        for block in self.single_blocks:
            x = block(x, mod_single, pe)
        return self.final_layer(x[:, txt.shape[1] :], vec)  # (B, Li, out)
