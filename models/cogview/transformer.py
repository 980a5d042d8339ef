"""CogView's GPT-2-style transformer with Sandwich-LN and PB-relax (spec §1.2-§1.4, §6).

Module names equal CogView's `GPT2Model` state dict, so `mp_rank_00_model_states.pt` loads as is:

    word_embeddings                          tied with the output head (logits = h @ W^T)
    transformer.position_embeddings          learned 1-D positions
    transformer.layers.N.{input_layernorm, attention.{query_key_value, dense}, third_layernorm,
                          post_attention_layernorm, mlp.{dense_h_to_4h, dense_4h_to_h},
                          fourth_layernorm}
    transformer.final_layernorm

Per layer (Sandwich-LN): x = x + LN3(attn(LN1(x))); x = x + LN4(mlp(LN2(x))).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from models.cogview.config import CogViewConfig


# LayerNorm ---------------------------------------------------------------------------------
def layer_norm_in_dtype(x: Tensor, weight: Tensor, bias: Tensor, eps: float | Tensor) -> Tensor:
    """LayerNorm with its statistics computed in x's own dtype, as 2021 fp16 kernels did.

    Used by PB-relax after the rescale (values <= 8, so squares stay far below fp16's 65504) and
    by tests as the plain fp16 LayerNorm that overflows on large activations.
    """
    mu = x.mean(-1, keepdim=True)
    xc = x - mu
    var = (xc * xc).mean(-1, keepdim=True)
    # eps may be tiny (eps / c^2), so the reciprocal root is taken in fp32.
    inv = torch.rsqrt(var.float() + eps).to(x.dtype)
    return xc * inv * weight + bias


def pb_relax_layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """LN(x / (max|x| / 8)) (spec §1.3), exact: LN(x / c, eps / c^2) == LN(x, eps) algebraically.

    CogView takes max|x| over the whole tensor; we take it per token. A global max couples a
    token to its batch mates and to the rest of the sequence (so a KV-cached step would see a
    different scale than a full forward), while a per-token max bounds every row by 8 just the
    same. Dividing eps by c^2 keeps the result equal to the plain LayerNorm for any scale, where
    CogView's fixed eps made it drift for small activations.
    """
    c = (x.detach().abs().amax(-1, keepdim=True).float() / 8).clamp_min(torch.finfo(x.dtype).tiny)
    return layer_norm_in_dtype(x / c.to(x.dtype), weight, bias, eps / (c * c))


class CogLayerNorm(nn.LayerNorm):
    def __init__(self, dim: int, eps: float, pb_relax: bool) -> None:
        super().__init__(dim, eps=eps)
        self.pb_relax = pb_relax

    def forward(self, x: Tensor) -> Tensor:
        if self.pb_relax:
            return pb_relax_layer_norm(x, self.weight, self.bias, self.eps)
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)


# Attention ---------------------------------------------------------------------------------
def standard_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    """CogView's `standard_attention`: (Q/sqrt d) K^T materialised in the working dtype."""
    s = (q / math.sqrt(q.shape[-1])) @ k.transpose(-1, -2)
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return torch.softmax(s, dim=-1) @ v


def relaxed_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, alpha: float = 32.0) -> Tensor:
    """PB-relax: softmax((Q/(alpha sqrt d) K^T - max) * alpha) (spec §1.3).

    Scores are formed at 1/alpha scale so they cannot overflow fp16, shifted by their row max
    (softmax is shift-invariant) and only then scaled back. The max is per query row, the
    finest grain the paper allows, so each token's result is independent of other rows.
    alpha = 32 is a power of two, so in fp32 the two scalings are exact.
    """
    s = (q / (alpha * math.sqrt(q.shape[-1]))) @ k.transpose(-1, -2)
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    s = (s - s.amax(-1, keepdim=True).detach()) * alpha
    return torch.softmax(s, dim=-1) @ v


class SelfAttention(nn.Module):
    def __init__(self, cfg: CogViewConfig) -> None:
        super().__init__()
        self.heads = cfg.num_heads
        self.pb_relax, self.alpha = cfg.pb_relax, cfg.pb_relax_alpha
        self.attention_dropout = cfg.attention_dropout
        self.query_key_value = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.output_dropout = nn.Dropout(cfg.hidden_dropout)

    def project(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, T, D) -> q, k, v each (B, H, T, d). Fused rows are [Q | K | V], heads contiguous."""
        qkv = rearrange(self.query_key_value(h), "b t (three h d) -> three b h t d", three=3, h=self.heads)
        return qkv[0], qkv[1], qkv[2]

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, is_causal: bool) -> Tensor:
        if self.pb_relax:
            if is_causal:
                mask = causal_mask(q.shape[-2], k.shape[-2], q.device)
            if self.training and self.attention_dropout:
                raise NotImplementedError("PB-relax attention is inference-only here; train with pb_relax=False")
            out = relaxed_attention(q, k, v, mask, self.alpha)
        elif q.shape[-2] == 1 and not self.training:
            # One decoding query: two small matmuls beat the fused kernels' setup cost on CPU.
            out = standard_attention(q, k, v, mask)
        else:
            p = self.attention_dropout if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=is_causal)
        return self.output_dropout(self.dense(rearrange(out, "b h t d -> b t (h d)")))


def causal_mask(t: int, s: int, device: torch.device) -> Tensor:
    """(T, S) bool, True = attend: query i (at absolute index s - t + i) sees keys <= itself."""
    return torch.ones(t, s, dtype=torch.bool, device=device).tril(s - t)


class MLP(nn.Module):
    def __init__(self, cfg: CogViewConfig) -> None:
        super().__init__()
        self.dense_h_to_4h = nn.Linear(cfg.hidden_size, 4 * cfg.hidden_size)
        self.dense_4h_to_h = nn.Linear(4 * cfg.hidden_size, cfg.hidden_size)
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def forward(self, x: Tensor) -> Tensor:
        # gelu_impl in CogView is the tanh approximation (0.7978845608, 0.044715).
        return self.dropout(self.dense_4h_to_h(F.gelu(self.dense_h_to_4h(x), approximate="tanh")))


class Layer(nn.Module):
    def __init__(self, cfg: CogViewConfig) -> None:
        super().__init__()
        ln = lambda: CogLayerNorm(cfg.hidden_size, cfg.layernorm_eps, cfg.pb_relax)  # noqa: E731
        self.input_layernorm = ln()
        self.attention = SelfAttention(cfg)
        self.third_layernorm = ln()  # Sandwich-LN: bounds the attention branch before the add
        self.post_attention_layernorm = ln()
        self.mlp = MLP(cfg)
        self.fourth_layernorm = ln()  # ... and the MLP branch

    def forward(
        self, x: Tensor, kv: tuple[Tensor, Tensor] | None, start: int, mask: Tensor | None, is_causal: bool
    ) -> Tensor:
        q, k, v = self.attention.project(self.input_layernorm(x))
        if kv is not None:
            # Write this chunk into the preallocated cache, attend over everything so far.
            end = start + x.shape[1]
            kv[0][:, :, start:end] = k
            kv[1][:, :, start:end] = v
            k, v = kv[0][:, :, :end], kv[1][:, :, :end]
        return self.finish(x, self.attention.attend(q, k, v, mask, is_causal))

    def finish(self, x: Tensor, attn_out: Tensor) -> Tensor:
        x = x + self.third_layernorm(attn_out)
        return x + self.fourth_layernorm(self.mlp(self.post_attention_layernorm(x)))


class Trunk(nn.Module):
    def __init__(self, cfg: CogViewConfig) -> None:
        super().__init__()
        self.position_embeddings = nn.Embedding(cfg.max_positions, cfg.hidden_size)
        self.embedding_dropout = nn.Dropout(cfg.hidden_dropout)
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.num_layers))
        self.final_layernorm = CogLayerNorm(cfg.hidden_size, cfg.layernorm_eps, cfg.pb_relax)


class KVCache:
    """Per-layer keys and values, preallocated for the whole sequence: (layers, B, H, S, d)."""

    def __init__(self, cfg: CogViewConfig, batch: int, max_len: int, dtype: torch.dtype, device: torch.device) -> None:
        shape = (cfg.num_layers, batch, cfg.num_heads, max_len, cfg.head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.length = 0
        # False for left padding: rows whose prompt is shorter than the longest one.
        self.valid = torch.ones(batch, max_len, dtype=torch.bool, device=device)
        self.padded = False

    def select(self, rows: Tensor) -> None:
        """Keep only these batch rows (cancelled requests stop costing compute)."""
        self.k, self.v, self.valid = self.k[:, rows], self.v[:, rows], self.valid[rows]


class CogViewTransformer(nn.Module):
    def __init__(self, cfg: CogViewConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.transformer = Trunk(cfg)

    def init_weights(self) -> None:
        """CogView's init: N(0, 0.02); output projections N(0, 0.02/sqrt(2L)); biases 0; LN 1/0."""
        std, out_std = 0.02, 0.02 / math.sqrt(2 * self.cfg.num_layers)
        for name, p in self.named_parameters():
            if "layernorm" in name:
                nn.init.constant_(p, 1.0 if name.endswith("weight") else 0.0)
            elif name.endswith("bias"):
                nn.init.zeros_(p)
            elif name.endswith(("attention.dense.weight", "dense_4h_to_h.weight")):
                nn.init.normal_(p, 0.0, out_std)
            else:
                nn.init.normal_(p, 0.0, std)

    def embed(self, tokens: Tensor, positions: Tensor) -> Tensor:
        x = self.word_embeddings(tokens) + self.transformer.position_embeddings(positions)
        return self.transformer.embedding_dropout(x)

    def head(self, h: Tensor, lo: int = 0, hi: int | None = None) -> Tensor:
        """Final LN and the tied output projection: (B, T, D) -> (B, T, V), or only ids [lo, hi).

        Sampling inside an image needs only the image ids' logits (8192 of 58240 released).
        """
        return F.linear(self.transformer.final_layernorm(h), self.word_embeddings.weight[lo:hi])

    def forward(
        self,
        tokens: Tensor,
        positions: Tensor,
        cache: KVCache | None = None,
        key_valid: Tensor | None = None,
        last_only: bool = False,
        return_hidden: bool = False,
    ) -> Tensor:
        """tokens, positions (B, T) -> logits (B, T, V) (or (B, 1, V) with last_only; the hidden
        states before the final LayerNorm instead of logits with return_hidden).

        Without a cache this is a causal forward over the whole sequence; key_valid (B, T)
        marks left padding. With a cache the T new tokens attend to the cached prefix and
        causally among themselves, and the cache advances by T.
        """
        b, t = tokens.shape
        x = self.embed(tokens, positions)
        start = cache.length if cache is not None else 0
        s = start + t
        if cache is not None and cache.padded:
            key_valid = cache.valid[:, :s]
        mask, is_causal = None, False
        if key_valid is not None:
            m = causal_mask(t, s, x.device) & key_valid[:, None, None, :]
            # A padding query sees no valid key; letting it see itself keeps its row finite (its
            # value is never attended to by real tokens, so it cannot leak into them).
            m |= _diag(t, s, x.device)
            mask = m
        elif t > 1:
            if start == 0:
                is_causal = True
            else:
                mask = causal_mask(t, s, x.device)
        for i, layer in enumerate(self.transformer.layers):
            kv = (cache.k[i], cache.v[i]) if cache is not None else None
            x = layer(x, kv, start, mask, is_causal)
        if cache is not None:
            cache.length = s
        if last_only:
            x = x[:, -1:]
        return x if return_hidden else self.head(x)


def _diag(t: int, s: int, device: torch.device) -> Tensor:
    return torch.zeros(t, s, dtype=torch.bool, device=device).diagonal_scatter(
        torch.ones(t, dtype=torch.bool, device=device), s - t
    )


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
