"""Sampling: schedules against the spec, and a full 4-step run of our pipeline against a
hand-driven diffusers run (FluxTransformer2DModel + FlowMatchEulerDiscreteScheduler +
AutoencoderKL) from the same noise and text features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.flux import sampling
from models.flux.convert import ae_bfl_to_diffusers, transformer_bfl_to_diffusers
from models.flux.pipeline import load_flux_pipeline
from models.interface import ImageRequest


def test_schedules_match_spec_examples() -> None:
    assert sampling.get_schedule(4, 4096, "linear") == pytest.approx([1, 0.75, 0.5, 0.25, 0])
    dev = sampling.get_schedule(50, 4096, "flux1-shift")
    assert dev[:3] == pytest.approx([1, 0.9936, 0.9870], abs=1e-4)
    assert dev[-3:] == pytest.approx([0.1163, 0.0606, 0], abs=1e-4)
    assert sampling.flux1_mu(4096) == pytest.approx(1.15)
    assert sampling.flux2_mu(4096, 50) == pytest.approx(2.02, abs=0.01)
    assert sampling.flux2_mu(4096, 4) == pytest.approx(2.29, abs=0.01)
    assert sampling.flux2_mu(5000, 4) == pytest.approx(0.00016927 * 5000 + 0.45666666)


def test_pack_ids_and_noise() -> None:
    x = torch.randn(2, 16, 8, 6)
    p = sampling.pack(x)
    assert p.shape == (2, 12, 64)
    assert torch.equal(p[0, 1, 4:8], x[0, 1, 0:2, 2:4].flatten())  # token (0, 1), channel 1, c-major
    assert torch.equal(sampling.unpack(p, 4, 3), x)
    ids = sampling.image_ids(2, 3, 3, t=1.0)
    assert ids[0, 4].tolist() == [1.0, 1.0, 1.0]
    assert sampling.text_ids(5, 4)[0, :, 3].tolist() == [0, 1, 2, 3, 4]
    n = sampling.make_noise([7, 8], (4, 2, 2))
    assert torch.equal(n[1], sampling.make_noise([8], (4, 2, 2))[0])


def test_four_step_run_matches_hand_driven_diffusers() -> None:
    diffusers = pytest.importorskip("diffusers")
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    pipe = load_flux_pipeline("demo-flux1-dev", {})
    tp = pipe.transformer.params
    ref = diffusers.FluxTransformer2DModel(
        in_channels=tp.in_channels, num_layers=tp.depth, num_single_layers=tp.depth_single_blocks,
        attention_head_dim=tp.hidden_size // tp.num_heads, num_attention_heads=tp.num_heads,
        joint_attention_dim=tp.context_in_dim, pooled_projection_dim=tp.vec_in_dim, guidance_embeds=True,
        axes_dims_rope=tp.axes_dim).eval()
    ref.load_state_dict(transformer_bfl_to_diffusers(pipe.transformer.state_dict(), "flux1"), strict=True)
    ap = pipe.autoencoder.params
    vae = diffusers.AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * len(ap.ch_mult),
        up_block_types=("UpDecoderBlock2D",) * len(ap.ch_mult),
        block_out_channels=tuple(ap.ch * m for m in ap.ch_mult), layers_per_block=ap.num_res_blocks,
        latent_channels=ap.z_channels, norm_num_groups=ap.norm_groups, use_quant_conv=False,
        use_post_quant_conv=False).eval()
    vae.load_state_dict(ae_bfl_to_diffusers(pipe.autoencoder.state_dict()), strict=True)

    reqs = [ImageRequest(prompt=p, seed=s, width=64, height=64, steps=4, guidance=g)
            for p, s, g in (("a red circle", 5, 3.5), ("两个绿色三角形", 6, 2.0))]
    ours = torch.stack(pipe.generate_pixels(reqs))  # type: ignore[arg-type]

    # Hand-driven diffusers loop from the same noise and the same text features.
    h = w = 64 // pipe.token_px  # token grid
    emb = pipe.text_encoder.encode([r.prompt for r in reqs])
    latents = sampling.pack(sampling.make_noise([r.seed for r in reqs], (16, 2 * h, 2 * w)))
    img_ids = sampling.image_ids(h, w, 3)[0]
    txt_ids = torch.zeros(emb.tokens.shape[1], 3)
    sched = diffusers.FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                      base_image_seq_len=256, max_image_seq_len=4096)
    sched.set_timesteps(sigmas=np.linspace(1.0, 1 / 4, 4), mu=calculate_shift(h * w, 256, 4096, 0.5, 1.15))
    guidance = torch.tensor([r.guidance for r in reqs])
    with torch.no_grad():
        for t in sched.timesteps:
            v = ref(hidden_states=latents, encoder_hidden_states=emb.tokens, pooled_projections=emb.pooled,
                    timestep=t.expand(2) / 1000, img_ids=img_ids, txt_ids=txt_ids, guidance=guidance,
                    return_dict=False)[0]
            latents = sched.step(v, t, latents, return_dict=False)[0]
        z = sampling.unpack(latents, h, w) / ap.scale_factor + ap.shift_factor
        expected = vae.decode(z).sample
    assert (ours - expected).abs().max().item() <= 1e-5


def test_flux2_schedule_matches_diffusers_klein() -> None:
    diffusers = pytest.importorskip("diffusers")
    from diffusers.pipelines.flux2.pipeline_flux2_klein import compute_empirical_mu

    for seq_len, steps in ((16, 4), (4096, 4), (4096, 50), (6000, 28)):
        sched = diffusers.FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
        sched.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=compute_empirical_mu(seq_len, steps))
        ours = sampling.get_schedule(steps, seq_len, "flux2")
        assert ours == pytest.approx(sched.sigmas.tolist(), abs=1e-6)


def test_true_cfg_at_scale_one_equals_the_conditional_run() -> None:
    from dataclasses import replace

    from models.flux.presets import get_preset

    base = load_flux_pipeline(replace(get_preset("demo-flux2-klein"), name="klein-base", distilled=False), {})
    distilled = load_flux_pipeline("demo-flux2-klein", {})
    r = [ImageRequest(prompt="a square", seed=4, width=64, height=64, steps=3, guidance=1.0)]
    a, b = base.generate_pixels(r)[0], distilled.generate_pixels(r)[0]
    assert (a - b).abs().max().item() <= 1e-5  # type: ignore[operator]
    r2 = [ImageRequest(prompt="a square", seed=4, width=64, height=64, steps=3, guidance=4.0)]
    assert (base.generate_pixels(r2)[0] - a).abs().max().item() > 1e-4  # type: ignore[operator]
