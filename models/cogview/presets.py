"""CogView presets: the released 4B model and a small demo, plus checkpoint inspection.

`build_model` returns the transformer (the part whose size names the model): the released
configuration has 3,928,849,920 parameters (spec §1.1), checked on the meta device.
"""

from __future__ import annotations

import pickle
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.cogview.checkpoint import compare, read_shapes
from models.cogview.config import CogViewConfig, VQVAEConfig
from models.cogview.transformer import CogViewTransformer
from models.cogview.vqvae import VQVAE

FAMILY = "cogview"

# 64x64 px from 8x8 codes (x8 VQ-VAE, as released), UTF-8 bytes for text: a 4-layer model that
# samples an image in well under a second on a laptop CPU.
DEMO = CogViewConfig(
    num_layers=4,
    hidden_size=128,
    num_heads=4,
    max_positions=128,
    text_vocab=256,
    text_tokenizer="bytes",
    image_grid=8,
    size_token="[TINY]",  # CogView's tag for 8x8-token images
    vqvae=VQVAEConfig(channels=64, embed_dim=32, n_codes=512),
    top_k=100,
    # CogView has no end token: the demo captioner is trained on captions padded with spaces to
    # this length (the longest shapes-world caption is 53 UTF-8 bytes).
    caption_tokens=56,
    sr_text_tokens=56,  # see CogViewConfig.sr_text_tokens
    max_batch=16,
)

PRESETS: dict[str, CogViewConfig] = {
    # cogview-base; cogview-sr and cogview-caption are finetunes with the same architecture.
    "cogview-4b": CogViewConfig(),
    "demo-cogview": DEMO,
}


def get_config(name: str) -> CogViewConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown CogView preset {name!r}; known: {', '.join(PRESETS)}") from None


def build_model(name: str, device: str | torch.device = "meta") -> nn.Module:
    with torch.device(device):
        return CogViewTransformer(get_config(name))


def build_transformer(cfg: CogViewConfig, device: str | torch.device = "meta") -> CogViewTransformer:
    with torch.device(device):
        return CogViewTransformer(cfg)


def build_vqvae(cfg: VQVAEConfig, device: str | torch.device = "cpu") -> VQVAE:
    with torch.device(device):
        return VQVAE(cfg)


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


CheckpointReport = dict[str, Any]  # the shape documented in models/presets.py

# EMA statistics of the codebook: state, not parameters (like BatchNorm running statistics).
_STATISTICS = ("quantize_t.cluster_size", "quantize_t.embed_avg")


def _dtypes(shapes: dict[str, tuple[tuple[int, ...], torch.dtype]]) -> str:
    return ",".join(sorted({str(dt).removeprefix("torch.") for _, dt in shapes.values()}))


def _infer_config(shapes: dict[str, tuple[int, ...]]) -> CogViewConfig:
    """A config with the file's sizes (head count does not show in shapes; 64-dim heads assumed)."""
    vocab, hidden = shapes["word_embeddings.weight"]
    layers = 1 + max((int(k.split(".")[2]) for k in shapes if k.startswith("transformer.layers.")), default=-1)
    positions = shapes.get("transformer.position_embeddings.weight", (1089,))[0]
    for cfg in PRESETS.values():
        if (cfg.vocab_size, cfg.hidden_size, cfg.num_layers, cfg.max_positions) == (vocab, hidden, layers, positions):
            return cfg
    heads = max(1, hidden // 64)
    return replace(
        PRESETS["cogview-4b"], num_layers=layers, hidden_size=hidden, num_heads=heads, max_positions=positions
    )


def inspect_checkpoint(path: str | Path) -> CheckpointReport | None:
    """Report on a CogView transformer or VQ-VAE checkpoint; None if the file is not CogView's.

    layout is "original" (CogView's GPT2Model / vqvae_zc names, in a DeepSpeed .pt, a plain .pt or
    safetensors) or "sat" (SwissArmyTransformer's transformer.word_embeddings name).
    """
    try:
        full, _, layout = read_shapes(path)
    except (ValueError, RuntimeError, OSError, KeyError, AttributeError, TypeError, pickle.UnpicklingError):
        return None
    shapes = {k: v[0] for k, v in full.items()}
    params = sum(_numel(s) for k, s in shapes.items() if k not in _STATISTICS)
    if "quantize_t.embed" in shapes:
        component = "vqvae"
        dim, n_codes = shapes["quantize_t.embed"]
        channels = shapes.get("enc_b.blocks.0.weight", (512,))[0]
        downsample = sum(1 for k in shapes if k.startswith("enc_b.blocks.") and k.endswith(".weight")) - 1
        vq = VQVAEConfig(channels=channels, embed_dim=dim, n_codes=n_codes, downsample=max(downsample, 1))
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in VQVAE(vq).state_dict().items()}
        name = next((n for n, c in PRESETS.items() if c.vqvae == vq), None)
        variant = f"{name} vqvae" if name else None
    elif "word_embeddings.weight" in shapes and any("third_layernorm" in k for k in shapes):
        component = "transformer"  # Sandwich-LN's third LayerNorm tells CogView from other GPTs
        cfg = _infer_config(shapes)
        expected = {k: tuple(v.shape) for k, v in build_transformer(cfg).state_dict().items()}
        variant = next((n for n, c in PRESETS.items() if c == cfg), None)
    else:
        return None
    missing, unexpected, mismatched = compare(expected, shapes)
    del mismatched  # the registry wants [name, expected, found] triples rather than strings
    mis_shaped = [
        [k, list(expected[k]), list(shapes[k])] for k in sorted(expected) if k in shapes and shapes[k] != expected[k]
    ]
    return {
        "path": str(path),
        "family": FAMILY,
        "component": component,
        "variant": variant,
        "layout": layout,
        "parameters": params,
        "dtype": _dtypes(full),
        "files": 1,
        "missing": missing,
        "unexpected": unexpected,
        "mis_shaped": mis_shaped,
        "ok": variant is not None and not (missing or unexpected or mis_shaped),
    }


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
