"""FLUX presets: the published architectures at full size and tiny demo ones (spec §2, §8, §10.2).

A preset is everything a pipeline needs besides weights: transformer, AE and text-encoder
configs, the schedule kind and request defaults. `build_model(name, device="meta")` builds the
transformer without allocating memory; parameter counts are checked against the spec in tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from models.flux.autoencoder import AutoEncoderParams
from models.flux.model import Flux, FluxParams
from models.flux.model2 import Flux2, Flux2Params
from models.text.demo import DemoTextParams

FAMILY = "flux"


@dataclass(frozen=True)
class TextSpec:
    """kind: "t5-clip" (FLUX.1), "qwen3" (klein), "mistral" (FLUX.2-dev) or "demo"."""

    kind: str
    max_length: int = 512
    layers: tuple[int, ...] = ()
    demo: DemoTextParams | None = None


@dataclass(frozen=True)
class FluxPreset:
    name: str
    transformer: FluxParams | Flux2Params
    autoencoder: AutoEncoderParams
    text: TextSpec
    steps: int
    guidance: float
    schedule: str  # "linear" (schnell), "flux1-shift", "flux2"
    task: str = "text-to-image"  # also "fill", "kontext", "reference" (FLUX.2 multi-reference)
    distilled: bool = True  # False: base model sampled with true CFG
    demo: bool = False
    family: str = field(default=FAMILY)

    @property
    def arch(self) -> str:
        return "flux2" if isinstance(self.transformer, Flux2Params) else "flux1"


FLUX1_AE = AutoEncoderParams()
FLUX2_AE = AutoEncoderParams(z_channels=32, scale_factor=1.0, shift_factor=0.0, flux2=True)

_SCHNELL = FluxParams(guidance_embed=False)
_DEV = FluxParams()
_KLEIN_4B = Flux2Params(context_in_dim=7680, hidden_size=3072, num_heads=24, depth=5, depth_single_blocks=20,
                        guidance_embed=False)
_KLEIN_9B = Flux2Params(context_in_dim=12288, hidden_size=4096, num_heads=32, depth=8, depth_single_blocks=24,
                        guidance_embed=False)

# Demo sizes, as trained on the shapes world (models/demo/train_*.py, weights in models/demo/weights/).
# The AEs downsample 4x (not 8x): at 64 px an 8x AE of this width could not learn the objects'
# colours and outlines in the CPU time there was (judge accuracy on its reconstructions stayed near
# 0.2), while a 4x one compresses only 3x and learns in minutes; 64 px is then 8x8 = 64 tokens of
# 8 px. The transformers and text encoder are narrower and shallower than the first interim
# presets because on a 2-core CPU more training steps beat more width. 56 text bytes hold the
# longest shapes-world caption (53 bytes + EOS).
DEMO_TEXT = DemoTextParams(width=96, depth=1, heads=3, max_length=56, context_dim=96, pooled_dim=96)
DEMO_AE = AutoEncoderParams(ch=8, ch_mult=(1, 2, 2), num_res_blocks=1, z_channels=16, norm_groups=4)
DEMO_AE2 = AutoEncoderParams(ch=8, ch_mult=(1, 2, 2), num_res_blocks=1, z_channels=32, norm_groups=4,
                             scale_factor=1.0, shift_factor=0.0, flux2=True)
_DEMO_FLUX1 = FluxParams(vec_in_dim=96, context_in_dim=96, hidden_size=96, num_heads=3, depth=2,
                         depth_single_blocks=2, axes_dim=(8, 12, 12), guidance_embed=False)
_DEMO_FLUX2 = Flux2Params(context_in_dim=96, hidden_size=96, num_heads=3, depth=2, depth_single_blocks=2,
                          axes_dim=(8, 8, 8, 8), guidance_embed=False)

PRESETS: dict[str, FluxPreset] = {
    p.name: p
    for p in (
        FluxPreset("flux1-schnell", _SCHNELL, FLUX1_AE, TextSpec("t5-clip", 256), 4, 0.0, "linear"),
        FluxPreset("flux1-dev", _DEV, FLUX1_AE, TextSpec("t5-clip", 512), 50, 3.5, "flux1-shift"),
        FluxPreset("flux1-fill-dev", FluxParams(in_channels=384), FLUX1_AE, TextSpec("t5-clip", 128), 50, 30.0,
                   "flux1-shift", task="fill"),
        FluxPreset("flux1-kontext-dev", _DEV, FLUX1_AE, TextSpec("t5-clip", 512), 30, 2.5, "flux1-shift",
                   task="kontext"),
        FluxPreset("flux2-klein-4b", _KLEIN_4B, FLUX2_AE, TextSpec("qwen3", 512, (9, 18, 27)), 4, 1.0, "flux2"),
        FluxPreset("flux2-klein-9b", _KLEIN_9B, FLUX2_AE, TextSpec("qwen3", 512, (9, 18, 27)), 4, 1.0, "flux2"),
        FluxPreset("flux2-dev", Flux2Params(), FLUX2_AE, TextSpec("mistral", 512, (10, 20, 30)), 50, 4.0, "flux2"),
        FluxPreset("demo-flux1-schnell", _DEMO_FLUX1, DEMO_AE, TextSpec("demo", DEMO_TEXT.max_length, demo=DEMO_TEXT),
                   4, 0.0, "linear", demo=True),
        FluxPreset("demo-flux1-dev", FluxParams(**{**_DEMO_FLUX1.__dict__, "guidance_embed": True}), DEMO_AE,
                   TextSpec("demo", DEMO_TEXT.max_length, demo=DEMO_TEXT), 8, 3.5, "flux1-shift", demo=True),
        # The FLUX.1 Fill architecture at demo size (masked latents + pixel-unshuffled mask: 2x64 + 4x4x4
        # = 192 input channels), fine-tuned from the demo dev by models/demo/train_edit.py.
        FluxPreset("demo-flux1-fill", FluxParams(**{**_DEMO_FLUX1.__dict__, "in_channels": 192,
                                                    "guidance_embed": True}), DEMO_AE,
                   TextSpec("demo", DEMO_TEXT.max_length, demo=DEMO_TEXT), 8, 30.0, "flux1-shift", task="fill",
                   demo=True),
        FluxPreset("demo-flux2-klein", _DEMO_FLUX2, DEMO_AE2, TextSpec("demo", DEMO_TEXT.max_length, demo=DEMO_TEXT),
                   4, 1.0, "flux2", demo=True),
    )
}


def get_preset(name: str) -> FluxPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown FLUX preset {name!r}; known: {', '.join(PRESETS)}") from None


def build_transformer(params: FluxParams | Flux2Params, device: str | torch.device = "meta",
                      dtype: torch.dtype | None = None) -> Flux | Flux2:
    with torch.device(device):
        model = Flux2(params) if isinstance(params, Flux2Params) else Flux(params)
    return model.to(dtype) if dtype is not None else model


def build_model(name: str, device: str | torch.device = "meta") -> nn.Module:
    """The preset's transformer (the part whose size names the model), on `device`."""
    return build_transformer(get_preset(name).transformer, device)


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def inspect_checkpoint(path: str) -> dict[str, object] | None:
    """Report on a FLUX checkpoint (see models.presets for the shape), or None if it is not FLUX."""
    from models.flux.checkpoint import inspect_flux_checkpoint

    return inspect_flux_checkpoint(path)
