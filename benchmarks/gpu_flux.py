"""FLUX.1-schnell end to end on a GPU: our implementation vs diffusers, same random bf16 weights.

1024x1024, 4 steps (unshifted schedule), T5 length 256, batch 1 and 4: denoising loop plus AE
decode, timed with CUDA synchronisation, seconds per image for each. Text features are random
(the text encoders are the same `transformers` models for both, so they are left out). The
diffusers transformer and VAE are given views of our weights (load_state_dict(assign=True)),
so both fit on one 80 GB GPU at once.

    python benchmarks/gpu_flux.py --device cuda            # full size (needs ~30 GB)
    python benchmarks/gpu_flux.py --device cpu --tiny      # a seconds-long smoke test of the script
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.flux import sampling  # noqa: E402
from models.flux.autoencoder import AutoEncoder, AutoEncoderParams  # noqa: E402
from models.flux.convert import ae_bfl_to_diffusers, transformer_bfl_to_diffusers  # noqa: E402
from models.flux.model import Flux, FluxParams  # noqa: E402
from models.flux.presets import get_preset  # noqa: E402

T5_LEN = 256


def _random_init(module: torch.nn.Module, seed: int) -> None:
    """Fill meta-built parameters on the device with small random values (fast, no CPU copy)."""
    g = torch.Generator(device=next(module.parameters()).device).manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith(("scale", "norm.weight", "norm1.weight", "norm2.weight")):
                p.fill_(1.0)
            else:
                fan_in = p[0].numel() if p.ndim > 1 else 1
                p.normal_(0.0, 0.5 / max(fan_in, 1) ** 0.5, generator=g)


def build(tp: FluxParams, ap: AutoEncoderParams, device: str, dtype: torch.dtype):  # type: ignore[no-untyped-def]
    from diffusers import AutoencoderKL, FluxTransformer2DModel

    with torch.device("meta"):  # cast on meta, so the device only ever holds the bf16 weights
        ours, ae = Flux(tp).to(dtype), AutoEncoder(ap).to(dtype)
    ours.to_empty(device=device)
    ae.to_empty(device=device)
    _random_init(ours, 0)
    _random_init(ae, 1)
    with torch.device("meta"):
        ref = FluxTransformer2DModel(
            in_channels=tp.in_channels, num_layers=tp.depth, num_single_layers=tp.depth_single_blocks,
            attention_head_dim=tp.hidden_size // tp.num_heads, num_attention_heads=tp.num_heads,
            joint_attention_dim=tp.context_in_dim, pooled_projection_dim=tp.vec_in_dim,
            guidance_embeds=tp.guidance_embed, axes_dims_rope=tp.axes_dim)
        vae = AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * len(ap.ch_mult),
            up_block_types=("UpDecoderBlock2D",) * len(ap.ch_mult),
            block_out_channels=tuple(ap.ch * m for m in ap.ch_mult), layers_per_block=ap.num_res_blocks,
            latent_channels=ap.z_channels, norm_num_groups=ap.norm_groups, use_quant_conv=False,
            use_post_quant_conv=False)
    ref.load_state_dict(transformer_bfl_to_diffusers(ours.state_dict(), "flux1"), strict=True, assign=True)
    vae.load_state_dict(ae_bfl_to_diffusers(ae.state_dict()), strict=True, assign=True)
    return ours.eval(), ae.eval(), ref.eval(), vae.eval()


def run_ours(model: Flux, ae: AutoEncoder, inp: dict, steps: int) -> torch.Tensor:  # type: ignore[type-arg]
    h, w = inp["grid"]
    x = inp["noise"].clone()
    sched = [sampling.get_schedule(steps, h * w, "linear")] * x.shape[0]
    txt_ids = torch.zeros(1, T5_LEN, 3, device=x.device)
    img_ids = sampling.image_ids(h, w, 3, device=x.device)

    def predict(rows: torch.Tensor, xs: torch.Tensor, t: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return model(xs.to(inp["dtype"]), img_ids, inp["txt"], txt_ids, t.to(inp["dtype"]), inp["y"], None)

    x, _ = sampling.denoise(predict, x, sched, [0.0] * x.shape[0])
    return ae.decode(sampling.unpack(x, h, w).to(inp["dtype"]))


def run_diffusers(ref, vae, ap: AutoEncoderParams, inp: dict, steps: int) -> torch.Tensor:  # type: ignore[no-untyped-def,type-arg]
    from diffusers import FlowMatchEulerDiscreteScheduler

    h, w = inp["grid"]
    latents = inp["noise"].clone().to(inp["dtype"])
    b = latents.shape[0]
    sched = FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False)
    sched.set_timesteps(sigmas=[1.0 - i / steps for i in range(steps)], device=latents.device)
    img_ids = sampling.image_ids(h, w, 3, device=latents.device)[0]
    txt_ids = torch.zeros(T5_LEN, 3, device=latents.device)
    for t in sched.timesteps:
        v = ref(hidden_states=latents, encoder_hidden_states=inp["txt"], pooled_projections=inp["y"],
                timestep=(t / 1000).expand(b).to(inp["dtype"]), img_ids=img_ids, txt_ids=txt_ids, guidance=None,
                return_dict=False)[0]
        latents = sched.step(v, t, latents, return_dict=False)[0]
    z = sampling.unpack(latents, h, w) / ap.scale_factor + ap.shift_factor
    return vae.decode(z).sample


def main() -> None:
    ap_ = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap_.add_argument("--device", default="cuda")
    ap_.add_argument("--size", type=int, default=1024)
    ap_.add_argument("--steps", type=int, default=4)
    ap_.add_argument("--batches", default="1,4")
    ap_.add_argument("--repeats", type=int, default=2, help="timed repeats per batch size (median)")
    ap_.add_argument("--tiny", action="store_true", help="tiny config for a CPU smoke test of this script")
    args = ap_.parse_args()
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    preset = get_preset("flux1-schnell")
    tp, ap = preset.transformer, preset.autoencoder
    if args.tiny:
        tp = FluxParams(vec_in_dim=32, context_in_dim=64, hidden_size=64, num_heads=2, depth=1,
                        depth_single_blocks=1, axes_dim=(8, 12, 12), guidance_embed=False)
        ap = AutoEncoderParams(ch=32, ch_mult=(1, 1, 2, 2), num_res_blocks=1, norm_groups=8)
        args.size = min(args.size, 64)
    ours, ae, ref, vae = build(tp, ap, args.device, dtype)
    grid = (args.size // 16, args.size // 16)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    print(f"flux1-schnell config{' (tiny)' if args.tiny else ''}: {sum(p.numel() for p in ours.parameters()):,} "
          f"params, {args.size}x{args.size}, {args.steps} steps, {dtype} on {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else ""))
    for b in [int(s) for s in args.batches.split(",")]:
        g = torch.Generator().manual_seed(b)
        inp = {
            "grid": grid, "dtype": dtype,
            "noise": sampling.pack(sampling.make_noise(range(b), (ap.z_channels, 2 * grid[0], 2 * grid[1])))
            .to(args.device),
            "txt": torch.randn(b, T5_LEN, tp.context_in_dim, generator=g).to(args.device, dtype),
            "y": torch.randn(b, tp.vec_in_dim, generator=g).to(args.device, dtype),
        }
        runners = {
            "ours": lambda inp=inp: run_ours(ours, ae, inp, args.steps),
            "diffusers": lambda inp=inp: run_diffusers(ref, vae, ap, inp, args.steps),
        }
        times: dict[str, list[float]] = {k: [] for k in runners}
        outs = {}
        with torch.inference_mode():
            for k, fn in runners.items():  # warm-up (kernel selection, allocator)
                outs[k] = fn().float()
            for _ in range(args.repeats):
                for k, fn in runners.items():
                    sync()
                    t0 = time.perf_counter()
                    fn()
                    sync()
                    times[k].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) / b for k, v in times.items()}
        diff = (outs["ours"] - outs["diffusers"]).abs().max().item()
        peak = f", peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if args.device.startswith("cuda") else ""
        print(f"batch {b}: ours {med['ours']:.3f} s/image, diffusers {med['diffusers']:.3f} s/image, "
              f"ratio {med['ours'] / med['diffusers']:.3f}x, max |pixel diff| {diff:.3g}{peak}")


if __name__ == "__main__":
    main()
