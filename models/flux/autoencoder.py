"""FLUX autoencoders (spec §6, §10.4), with BFL's parameter names.

FLUX.1: 16 latent channels, latents normalised with scale/shift constants; tokens come from a
2x2 pack done by the sampler. FLUX.2: 32 latent channels, 1x1 quant convs, and the 2x2
patchify plus BatchNorm running statistics done inside the AE, so `encode` already returns the
(B, 128, H/16, W/16) grid the transformer tokenises. Sizes are configurable so that tiny
autoencoders can be built for tests and demo models.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


@dataclass(frozen=True)
class AutoEncoderParams:
    """Defaults are the published FLUX.1 AE (`ae.safetensors`)."""

    in_channels: int = 3
    out_ch: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 16
    scale_factor: float = 0.3611
    shift_factor: float = 0.1159
    norm_groups: int = 32  # BFL hard-codes 32; smaller AEs may need fewer groups
    flux2: bool = False  # quant convs + in-AE patchify + BatchNorm (FLUX.2)
    bn_eps: float = 1e-4

    @property
    def downsample(self) -> int:
        """Pixel size of one latent cell (8 for the published AEs)."""
        return 2 ** (len(self.ch_mult) - 1)


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6, affine=True)


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions (only in the mid blocks)."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = _norm(channels, groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(x)
        b, c, hh, ww = h.shape
        q, k, v = (rearrange(m(h), "b c h w -> b 1 (h w) c") for m in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)
        out = rearrange(out, "b 1 (h w) c -> b c h w", h=hh, w=ww)
        return x + self.proj_out(out)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, groups: int):
        super().__init__()
        self.norm1 = _norm(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels, groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric pad: BFL/LDM convention


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Mid(nn.Module):
    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, groups)
        self.attn_1 = AttnBlock(channels, groups)
        self.block_2 = ResnetBlock(channels, channels, groups)

    def forward(self, x: Tensor) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class _Level(nn.Module):
    """One resolution level: `block` (ModuleList) and an optional `downsample`/`upsample`."""

    def __init__(self, blocks: list[ResnetBlock]):
        super().__init__()
        self.block = nn.ModuleList(blocks)


class Encoder(nn.Module):
    def __init__(self, p: AutoEncoderParams):
        super().__init__()
        g = p.norm_groups
        self.conv_in = nn.Conv2d(p.in_channels, p.ch, 3, padding=1)
        in_mult = (1, *p.ch_mult)
        self.down = nn.ModuleList()
        block_in = p.ch
        for i, mult in enumerate(p.ch_mult):
            block_in = p.ch * in_mult[i]
            block_out = p.ch * mult
            blocks = []
            for _ in range(p.num_res_blocks):
                blocks.append(ResnetBlock(block_in, block_out, g))
                block_in = block_out
            level = _Level(blocks)
            if i != len(p.ch_mult) - 1:
                level.downsample = Downsample(block_in)
            self.down.append(level)
        self.mid = _Mid(block_in, g)
        self.norm_out = _norm(block_in, g)
        self.conv_out = nn.Conv2d(block_in, 2 * p.z_channels, 3, padding=1)  # mean and logvar
        if p.flux2:
            self.quant_conv = nn.Conv2d(2 * p.z_channels, 2 * p.z_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for level in self.down:
            for block in level.block:
                h = block(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.conv_out(F.silu(self.norm_out(self.mid(h))))
        if hasattr(self, "quant_conv"):
            h = self.quant_conv(h)
        return h  # (B, 2z, H/f, W/f)


class Decoder(nn.Module):
    def __init__(self, p: AutoEncoderParams):
        super().__init__()
        g = p.norm_groups
        block_in = p.ch * p.ch_mult[-1]
        if p.flux2:
            self.post_quant_conv = nn.Conv2d(p.z_channels, p.z_channels, 1)
        self.conv_in = nn.Conv2d(p.z_channels, block_in, 3, padding=1)
        self.mid = _Mid(block_in, g)
        levels: list[_Level] = []
        # Built from the lowest resolution up; `up[i]` is resolution level i, so up[-1] runs first.
        for i in reversed(range(len(p.ch_mult))):
            block_out = p.ch * p.ch_mult[i]
            blocks = []
            for _ in range(p.num_res_blocks + 1):
                blocks.append(ResnetBlock(block_in, block_out, g))
                block_in = block_out
            level = _Level(blocks)
            if i != 0:
                level.upsample = Upsample(block_in)
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(block_in, g)
        self.conv_out = nn.Conv2d(block_in, p.out_ch, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        if hasattr(self, "post_quant_conv"):
            z = self.post_quant_conv(z)
        h = self.mid(self.conv_in(z))
        h = h.to(self.conv_out.weight.dtype)
        for level in reversed(self.up):
            for block in level.block:
                h = block(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class AutoEncoder(nn.Module):
    """FLUX.1 AE: encode (B, 3, H, W) in [-1, 1] -> (B, z, H/8, W/8); decode is the inverse."""

    def __init__(self, params: AutoEncoderParams):
        super().__init__()
        if params.flux2:
            raise ValueError("use AutoEncoder2 for FLUX.2 parameters")
        self.params = params
        self.encoder = Encoder(params)
        self.decoder = Decoder(params)

    @property
    def latent_channels(self) -> int:
        return self.params.z_channels

    def encode(self, x: Tensor) -> Tensor:
        mean = self.encoder(x)[:, : self.params.z_channels]  # the Gaussian's mean; no sampling
        return self.params.scale_factor * (mean - self.params.shift_factor)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z / self.params.scale_factor + self.params.shift_factor)


class AutoEncoder2(nn.Module):
    """FLUX.2 AE: encode (B, 3, H, W) -> (B, 4z, H/16, W/16), patchified and BatchNorm-normalised."""

    def __init__(self, params: AutoEncoderParams):
        super().__init__()
        if not params.flux2:
            raise ValueError("AutoEncoder2 needs flux2=True parameters")
        self.params = params
        self.encoder = Encoder(params)
        self.decoder = Decoder(params)
        # Only the running statistics are used (eval-mode normalisation, affine=False).
        self.bn = nn.BatchNorm2d(4 * params.z_channels, eps=params.bn_eps, momentum=0.1, affine=False)

    @property
    def latent_channels(self) -> int:
        return 4 * self.params.z_channels

    def _stats(self, ref: Tensor) -> tuple[Tensor, Tensor]:
        mean = self.bn.running_mean.view(1, -1, 1, 1).to(ref.dtype)
        std = torch.sqrt(self.bn.running_var.view(1, -1, 1, 1) + self.params.bn_eps).to(ref.dtype)
        return mean, std

    def encode(self, x: Tensor) -> Tensor:
        mean = self.encoder(x)[:, : self.params.z_channels]
        z = rearrange(mean, "b c (i pi) (j pj) -> b (c pi pj) i j", pi=2, pj=2)  # c-major patchify
        bn_mean, bn_std = self._stats(z)
        return (z - bn_mean) / bn_std

    def decode(self, z: Tensor) -> Tensor:
        bn_mean, bn_std = self._stats(z)
        z = z * bn_std + bn_mean
        z = rearrange(z, "b (c pi pj) i j -> b c (i pi) (j pj)", pi=2, pj=2)
        return self.decoder(z)


def build_autoencoder(params: AutoEncoderParams) -> AutoEncoder | AutoEncoder2:
    return AutoEncoder2(params) if params.flux2 else AutoEncoder(params)
