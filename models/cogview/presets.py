"""CogView presets: the released 4B model and a small demo, plus checkpoint inspection.

`build_model` returns the transformer (the part whose size names the model): the released
configuration has 3,928,849,920 parameters (spec §1.1), checked on the meta device.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

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
    vqvae=VQVAEConfig(channels=64, embed_dim=64, n_codes=512),
    top_k=100,
    caption_tokens=24,
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


@dataclass
class CheckpointReport:
    family: str
    variant: str | None  # preset name, or None when the shapes match no preset
    layout: str  # "deepspeed", "safetensors" or "state_dict"
    parameters: int
    dtype: str
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    component: str = "transformer"  # or "vqvae"

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _dominant_dtype(shapes: dict[str, tuple[tuple[int, ...], torch.dtype]]) -> str:
    count: dict[torch.dtype, int] = {}
    for shape, dt in shapes.values():
        n = 1
        for s in shape:
            n *= s
        count[dt] = count.get(dt, 0) + n
    return str(max(count, key=count.__getitem__)).removeprefix("torch.") if count else "unknown"


def _infer_config(shapes: dict[str, tuple[int, ...]]) -> CogViewConfig:
    """A config with the file's sizes (head count does not show in shapes; 64-dim heads assumed)."""
    vocab, hidden = shapes["word_embeddings.weight"]
    layers = 1 + max(int(k.split(".")[2]) for k in shapes if k.startswith("transformer.layers."))
    positions = shapes.get("transformer.position_embeddings.weight", (1089,))[0]
    for cfg in PRESETS.values():
        if (cfg.vocab_size, cfg.hidden_size, cfg.num_layers, cfg.max_positions) == (vocab, hidden, layers, positions):
            return cfg
    heads = max(1, hidden // 64)
    return replace(PRESETS["cogview-4b"], num_layers=layers, hidden_size=hidden, num_heads=heads,
                   max_positions=positions)  # fmt: skip


def inspect_checkpoint(path: str | Path) -> CheckpointReport | None:
    """Report on a CogView transformer or VQ-VAE checkpoint; None if the file is not CogView's."""
    try:
        full, layout = read_shapes(path)
    except (ValueError, RuntimeError, OSError, KeyError, AttributeError, TypeError):
        return None
    shapes = {k: v[0] for k, v in full.items()}
    params = sum(_numel(s) for s in shapes.values())
    dtype = _dominant_dtype(full)
    if "quantize_t.embed" in shapes:
        dim, n_codes = shapes["quantize_t.embed"]
        channels = shapes.get("enc_b.blocks.0.weight", (512,))[0]
        downsample = sum(1 for k in shapes if k.startswith("enc_b.blocks.") and k.endswith(".weight")) - 1
        vq = VQVAEConfig(channels=channels, embed_dim=dim, n_codes=n_codes, downsample=max(downsample, 1))
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in VQVAE(vq).state_dict().items()}
        variant = next((n for n, c in PRESETS.items() if c.vqvae == vq), None)
        return CheckpointReport(FAMILY, variant, layout, params, dtype, *compare(expected, shapes), component="vqvae")
    if "word_embeddings.weight" not in shapes or not any("third_layernorm" in k for k in shapes):
        return None  # no Sandwich-LN: some other GPT-style model
    cfg = _infer_config(shapes)
    model = build_transformer(cfg)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    variant = next((n for n, c in PRESETS.items() if c == cfg), None)
    return CheckpointReport(FAMILY, variant, layout, params, dtype, *compare(expected, shapes))


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
