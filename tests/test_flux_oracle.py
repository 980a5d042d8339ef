"""Oracle tests: our FLUX transformers and autoencoders vs diffusers on tiny configs with the same
weights, moved between the two through our BFL<->diffusers mapping (so the mapping is tested too)."""

from __future__ import annotations

import pytest
import torch

from models.flux.autoencoder import AutoEncoder, AutoEncoder2, AutoEncoderParams
from models.flux.convert import (
    ae_bfl_to_diffusers,
    ae_diffusers_to_bfl,
    transformer_bfl_to_diffusers,
    transformer_diffusers_to_bfl,
)
from models.flux.model import Flux, FluxParams
from models.flux.model2 import Flux2, Flux2Params

diffusers = pytest.importorskip("diffusers")
TOL = 1e-5


def randomize(module: torch.nn.Module, seed: int) -> None:
    """Non-trivial weights everywhere (diffusers zero-inits some layers, which would hide bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            fan_in = p[0].numel() if p.ndim > 1 else 16
            base = 1.0 if name.endswith(("scale", "norm.weight", "norm1.weight", "norm2.weight")) else 0.0
            p.copy_(torch.randn(p.shape, generator=g) * 0.8 / fan_in**0.5 + base)
        for name, b in module.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)


def load_exact(model: torch.nn.Module, sd: dict[str, torch.Tensor]) -> None:
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not missing and not unexpected, (missing, unexpected)


@pytest.mark.parametrize("guidance", [False, True], ids=["schnell-like", "dev-like"])
def test_flux1_transformer_matches_diffusers(guidance: bool) -> None:
    from diffusers import FluxTransformer2DModel

    p = FluxParams(in_channels=64, vec_in_dim=24, context_in_dim=32, hidden_size=64, num_heads=2, depth=2,
                   depth_single_blocks=2, axes_dim=(8, 12, 12), guidance_embed=guidance)
    ours = Flux(p).eval()
    randomize(ours, 0)
    ref = FluxTransformer2DModel(in_channels=64, num_layers=2, num_single_layers=2, attention_head_dim=32,
                                 num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=24,
                                 guidance_embeds=guidance, axes_dims_rope=(8, 12, 12)).eval()
    load_exact(ref, transformer_bfl_to_diffusers(ours.state_dict(), "flux1"))
    # And back: the inverse mapping reproduces our state dict exactly.
    back = transformer_diffusers_to_bfl(ref.state_dict(), "flux1")
    assert set(back) == set(ours.state_dict())
    assert all(torch.equal(back[k], v) for k, v in ours.state_dict().items())

    g = torch.Generator().manual_seed(1)
    b, h, w, lt = 2, 4, 6, 7
    img = torch.randn(b, h * w, 64, generator=g)
    txt = torch.randn(b, lt, 32, generator=g)
    y = torch.randn(b, 24, generator=g)
    img_ids = torch.zeros(h, w, 3)
    img_ids[..., 1] = torch.arange(h)[:, None]
    img_ids[..., 2] = torch.arange(w)[None, :]
    img_ids = img_ids.reshape(h * w, 3)
    txt_ids = torch.zeros(lt, 3)
    t = torch.tensor([0.9, 0.3])
    gv = torch.tensor([3.5, 1.0]) if guidance else None
    with torch.no_grad():
        out = ours(img, img_ids[None], txt, txt_ids[None], t, y, gv)
        exp = ref(hidden_states=img, encoder_hidden_states=txt, pooled_projections=y, timestep=t,
                  img_ids=img_ids, txt_ids=txt_ids, guidance=gv, return_dict=False)[0]
    assert (out - exp).abs().max().item() <= TOL


@pytest.mark.parametrize("guidance", [False, True], ids=["klein-like", "dev-like"])
def test_flux2_transformer_matches_diffusers(guidance: bool) -> None:
    from diffusers import Flux2Transformer2DModel

    p = Flux2Params(in_channels=32, out_channels=32, context_in_dim=48, hidden_size=64, num_heads=2, depth=2,
                    depth_single_blocks=2, axes_dim=(8, 8, 8, 8), guidance_embed=guidance)
    ours = Flux2(p).eval()
    randomize(ours, 0)
    ref = Flux2Transformer2DModel(in_channels=32, num_layers=2, num_single_layers=2, attention_head_dim=32,
                                  num_attention_heads=2, joint_attention_dim=48, axes_dims_rope=(8, 8, 8, 8),
                                  guidance_embeds=guidance).eval()
    load_exact(ref, transformer_bfl_to_diffusers(ours.state_dict(), "flux2"))
    back = transformer_diffusers_to_bfl(ref.state_dict(), "flux2")
    assert set(back) == set(ours.state_dict())

    g = torch.Generator().manual_seed(1)
    b, h, w, lt = 2, 4, 5, 6
    img = torch.randn(b, h * w, 32, generator=g)
    txt = torch.randn(b, lt, 48, generator=g)
    img_ids = torch.cartesian_prod(torch.arange(1), torch.arange(h), torch.arange(w), torch.arange(1)).float()
    txt_ids = torch.cartesian_prod(torch.arange(1), torch.arange(1), torch.arange(1), torch.arange(lt)).float()
    t = torch.tensor([0.8, 0.25])
    gv = torch.tensor([4.0, 2.0]) if guidance else None
    with torch.no_grad():
        out = ours(img, img_ids[None], txt, txt_ids[None], t, gv)
        exp = ref(hidden_states=img, encoder_hidden_states=txt, timestep=t, img_ids=img_ids, txt_ids=txt_ids,
                  guidance=gv, return_dict=False)[0]
    assert (out - exp).abs().max().item() <= TOL


TINY_AE = dict(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, norm_groups=8)


def test_flux1_autoencoder_matches_diffusers() -> None:
    from diffusers import AutoencoderKL

    p = AutoEncoderParams(**TINY_AE, z_channels=16)
    ours = AutoEncoder(p).eval()
    randomize(ours, 2)
    ref = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
                        up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(32, 64, 64),
                        layers_per_block=1, latent_channels=16, norm_num_groups=8, use_quant_conv=False,
                        use_post_quant_conv=False, scaling_factor=p.scale_factor, shift_factor=p.shift_factor).eval()
    load_exact(ref, ae_bfl_to_diffusers(ours.state_dict()))
    back = ae_diffusers_to_bfl(ref.state_dict())
    assert set(back) == set(ours.state_dict())
    x = torch.rand(2, 3, 32, 24, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        z = ours.encode(x)
        z_ref = (ref.encode(x).latent_dist.mode() - p.shift_factor) * p.scale_factor
        assert (z - z_ref).abs().max().item() <= TOL
        y = ours.decode(z)
        y_ref = ref.decode(z / p.scale_factor + p.shift_factor).sample
    assert (y - y_ref).abs().max().item() <= TOL


def test_flux2_autoencoder_matches_diffusers() -> None:
    from diffusers import AutoencoderKLFlux2

    p = AutoEncoderParams(**TINY_AE, z_channels=8, flux2=True)
    ours = AutoEncoder2(p).eval()
    randomize(ours, 4)
    ref = AutoencoderKLFlux2(down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                             block_out_channels=(32, 64, 64), layers_per_block=1, latent_channels=8,
                             norm_num_groups=8).eval()
    load_exact(ref, ae_bfl_to_diffusers(ours.state_dict()))
    x = torch.rand(2, 3, 32, 16, generator=torch.Generator().manual_seed(5)) * 2 - 1
    mean = ref.bn.running_mean.view(1, -1, 1, 1)
    std = torch.sqrt(ref.bn.running_var.view(1, -1, 1, 1) + ref.config.batch_norm_eps)
    with torch.no_grad():
        z = ours.encode(x)  # (B, 4*8, H/8, W/8)
        lat = ref.encode(x).latent_dist.mode()
        b, c, h, w = lat.shape  # diffusers' pipeline patchify, then BatchNorm statistics
        lat = lat.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, c * 4, h // 2, w // 2)
        z_ref = (lat - mean) / std
        assert (z - z_ref).abs().max().item() <= TOL
        y = ours.decode(z)
        u = z * std + mean
        u = u.reshape(b, c, 2, 2, h // 2, w // 2).permute(0, 1, 4, 2, 5, 3).reshape(b, c, h, w)
        y_ref = ref.decode(u).sample
    assert (y - y_ref).abs().max().item() <= TOL
