"""A small trainable text encoder for the demo models: no vocabulary file, any language.

Tokens are the prompt's UTF-8 bytes (so Chinese and English both work), padded to a fixed
length like FLUX.1's T5 so that a prompt's features never depend on the rest of its batch.
Embedding + a few pre-LN transformer layers give per-token features (B, L, context_dim) for the
DiT's text stream and a masked-mean pooled vector (B, pooled_dim) for FLUX.1's `vector_in`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.text.base import TextEmbeddings

PAD = 0  # byte b is token b + 1, so 0 is free for padding
EOS = 257
VOCAB = 258


@dataclass(frozen=True)
class DemoTextParams:
    width: int = 128
    depth: int = 2
    heads: int = 4
    max_length: int = 64
    context_dim: int = 128
    pooled_dim: int = 128


def tokenize(prompts: Sequence[str], max_length: int) -> Tensor:
    """UTF-8 bytes + EOS, truncated and right-padded to max_length: (B, L) int64."""
    ids = torch.full((len(prompts), max_length), PAD, dtype=torch.long)
    for i, prompt in enumerate(prompts):
        row = [b + 1 for b in prompt.encode("utf-8")][: max_length - 1] + [EOS]
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return ids


class _Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: Tensor, keep: Tensor) -> Tensor:
        b, seq, d = x.shape
        qkv = self.qkv(self.norm1(x)).view(b, seq, 3, self.heads, -1).permute(2, 0, 3, 1, 4)  # (3, B, H, L, Dh)
        # Padding is never attended to, so a prompt's features do not depend on how it was padded.
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=keep[:, None, None, :])
        x = x + self.proj(out.transpose(1, 2).reshape(b, seq, d))
        return x + self.mlp(self.norm2(x))


class DemoTextEncoder(nn.Module):
    def __init__(self, params: DemoTextParams):
        super().__init__()
        self.params = params
        self.token_embedding = nn.Embedding(VOCAB, params.width)
        self.position_embedding = nn.Parameter(torch.randn(params.max_length, params.width) * 0.02)
        self.blocks = nn.ModuleList(_Block(params.width, params.heads) for _ in range(params.depth))
        self.norm = nn.LayerNorm(params.width)
        self.token_proj = nn.Linear(params.width, params.context_dim)
        self.pooled_proj = nn.Linear(params.width, params.pooled_dim)

    def forward(self, ids: Tensor) -> TextEmbeddings:
        """ids (B, L) -> tokens (B, L, context_dim), pooled (B, pooled_dim). Differentiable."""
        keep = ids != PAD  # (B, L); EOS is always kept, so no row is fully masked
        x = self.token_embedding(ids) + self.position_embedding[: ids.shape[1]]
        for block in self.blocks:
            x = block(x, keep)
        x = self.norm(x)
        w = keep.to(x.dtype).unsqueeze(-1)  # (B, L, 1)
        pooled = (x * w).sum(1) / w.sum(1)
        return TextEmbeddings(tokens=self.token_proj(x), pooled=self.pooled_proj(pooled))

    @torch.inference_mode()
    def encode(self, prompts: Sequence[str]) -> TextEmbeddings:
        ids = tokenize(prompts, self.params.max_length).to(self.token_embedding.weight.device)
        return self(ids)

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(path))

    @classmethod
    def from_file(
        cls, path: str | Path, params: DemoTextParams, device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> DemoTextEncoder:
        from safetensors.torch import load_file

        with torch.device("meta"):
            model = cls(params)
        state = {k: v.to(device=device, dtype=dtype) for k, v in load_file(str(path)).items()}
        model.load_state_dict(state, strict=True, assign=True)
        return model.eval()
