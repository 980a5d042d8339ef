"""CogView's VQ-VAE image tokenizer (spec §2), with the module names of `vqvae_zc.VQVAE`.

    enc_b.blocks: [Conv(3->C,4,s2) ReLU] x n, Conv(C->D,1)        (n = downsample; 3 -> x8)
    quantize_t:   codebook `embed` [D, K] with EMA buffers `cluster_size` [K], `embed_avg` [D, K]
    dec.blocks:   ConvT(D->C,4,s2) [ReLU ConvT(C->C,4,s2)] x (n-1), ReLU, Conv(C->3,1)

Codes are raster (row-major) order. Pixels are normalised with CogView's dataset statistics.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from PIL import Image
from torch import Tensor, nn

from models.cogview.config import VQVAEConfig


class Encoder(nn.Module):
    def __init__(self, cfg: VQVAEConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for _ in range(cfg.downsample):
            layers += [nn.Conv2d(c_in, cfg.channels, 4, stride=2, padding=1), nn.ReLU(inplace=True)]
            c_in = cfg.channels
        layers.append(nn.Conv2d(cfg.channels, cfg.embed_dim, 1))
        self.blocks = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x)


class Decoder(nn.Module):
    def __init__(self, cfg: VQVAEConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.ConvTranspose2d(cfg.embed_dim, cfg.channels, 4, stride=2, padding=1)]
        for _ in range(cfg.downsample - 1):
            layers += [nn.ReLU(inplace=True), nn.ConvTranspose2d(cfg.channels, cfg.channels, 4, stride=2, padding=1)]
        layers += [nn.ReLU(inplace=True), nn.Conv2d(cfg.channels, 3, 1)]
        self.blocks = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x)


class Quantize(nn.Module):
    """Nearest-neighbour codebook with straight-through gradients and EMA updates (no Gumbel)."""

    def __init__(self, dim: int, n_embed: int, decay: float = 0.99, eps: float = 1e-5) -> None:
        super().__init__()
        self.dim, self.n_embed, self.decay, self.eps = dim, n_embed, decay, eps
        embed = torch.empty(dim, n_embed)
        nn.init.xavier_uniform_(embed, gain=nn.init.calculate_gain("tanh"))
        # Buffers, not parameters: the codebook is learned by EMA, not by the optimiser.
        self.register_buffer("embed", embed)
        self.register_buffer("cluster_size", torch.zeros(n_embed))
        self.register_buffer("embed_avg", embed.clone())

    def codes(self, z: Tensor) -> Tensor:
        """z (..., D) -> ids (...): argmin of ||z||^2 - 2 z.E + ||E||^2, unnormalised."""
        flat = z.reshape(-1, self.dim).float()
        e = self.embed.float()
        dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ e + e.pow(2).sum(0, keepdim=True)
        return dist.argmin(1).view(z.shape[:-1])

    def lookup(self, ids: Tensor) -> Tensor:
        return F.embedding(ids, self.embed.t())

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        ids = self.codes(z)
        q = self.lookup(ids).to(z.dtype)
        if self.training:
            self._ema_update(z.detach().reshape(-1, self.dim).float(), ids.reshape(-1))
        diff = (q.detach() - z).pow(2).mean()
        return z + (q - z).detach(), diff, ids

    @torch.no_grad()
    def _ema_update(self, flat: Tensor, ids: Tensor) -> None:
        onehot = F.one_hot(ids, self.n_embed).type(flat.dtype)  # (N, K)
        self.cluster_size.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        self.embed_avg.mul_(self.decay).add_(flat.t() @ onehot, alpha=1 - self.decay)
        # Laplace smoothing keeps unused codes from dividing by zero.
        n = self.cluster_size.sum()
        size = (self.cluster_size + self.eps) / (n + self.n_embed * self.eps) * n
        self.embed.copy_(self.embed_avg / size.unsqueeze(0))


class VQVAE(nn.Module):
    def __init__(self, cfg: VQVAEConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or VQVAEConfig()
        self.enc_b = Encoder(cfg)
        self.quantize_t = Quantize(cfg.embed_dim, cfg.n_codes, cfg.decay, cfg.eps)
        self.dec = Decoder(cfg)
        self.register_buffer("mean", torch.tensor(cfg.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Training forward on normalised pixels: (reconstruction, commitment diff)."""
        z = rearrange(self.enc_b(x), "b d h w -> b h w d")
        q, diff, _ = self.quantize_t(z)
        return self.dec(rearrange(q, "b h w d -> b d h w")), diff

    @torch.no_grad()
    def encode(self, pixels: Tensor) -> Tensor:
        """pixels (B, 3, H, W) in [0, 1] -> codes (B, H/f * W/f), raster order."""
        x = (pixels.to(self.mean) - self.mean) / self.std
        z = rearrange(self.enc_b(x.to(self.dtype)), "b d h w -> b h w d")
        return self.quantize_t.codes(z).flatten(1)

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        """codes (B, N) with N a square -> pixels (B, 3, H, W) in [0, 1]."""
        side = math.isqrt(codes.shape[1])
        if side * side != codes.shape[1]:
            raise ValueError(f"{codes.shape[1]} codes do not form a square grid")
        q = self.quantize_t.lookup(codes.view(-1, side, side).to(self.embed_device)).to(self.dtype)
        x = self.dec(rearrange(q, "b h w d -> b d h w")).float()
        # CogView's save_image(normalize=True) min-max rescales the whole grid, which couples
        # images in a batch; clamping keeps each image independent of its batch mates.
        return (x * self.std + self.mean).clamp(0, 1)

    @property
    def dtype(self) -> torch.dtype:
        return self.dec.blocks[0].weight.dtype

    @property
    def embed_device(self) -> torch.device:
        return self.quantize_t.embed.device

    # PIL helpers -------------------------------------------------------------------------
    def images_to_codes(self, images: list[Image.Image], size: int) -> Tensor:
        """CogView's read_img: shorter side -> size, centre crop, drop alpha; then encode."""
        return self.encode(torch.stack([pil_to_tensor(im, size) for im in images]).to(self.embed_device))

    def codes_to_images(self, codes: Tensor) -> list[Image.Image]:
        return [tensor_to_pil(x) for x in self.decode(codes).cpu()]


def pil_to_tensor(image: Image.Image, size: int) -> Tensor:
    im = image.convert("RGB")
    w, h = im.size
    s = size / min(w, h)
    im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.Resampling.BICUBIC)
    w, h = im.size
    left, top = (w - size) // 2, (h - size) // 2
    im = im.crop((left, top, left + size, top + size))
    return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)


def tensor_to_pil(x: Tensor) -> Image.Image:
    arr = (x.permute(1, 2, 0).numpy() * 255.0).round().clip(0, 255).astype(np.uint8)
    return Image.fromarray(arr)
