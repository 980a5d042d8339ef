"""Train a demo FLUX autoencoder (64 px, 4x down, see the demo presets) on the shapes world.

Reconstruction only. How the shipped weights were made (wall times on 2 CPU cores shared with
other jobs, one torch thread each; two threads were 10x slower on the busy machine):

    nice -n 10 python -m models.demo.train_ae --arch flux1 --steps 600 --batch 8 --lr 3e-3    # 2 min
    cp models/demo/weights/ae_flux1.safetensors runs/ae_flux1_stage1.safetensors
    nice -n 10 python -m models.demo.train_ae --arch flux1 --name ae_flux1_stage2 \
        --init runs/ae_flux1_stage1.safetensors --steps 1500 --batch 16 --lr 2e-3          # 6 min
    nice -n 10 python -m models.demo.train_ae --arch flux2 --steps 300 --batch 16 --lr 1e-3 \
        --warm-start models/demo/weights/ae_flux1.safetensors                              # 2.5 min

The judge reads all four attributes correctly from both AEs' reconstructions of the 270 eval
renders (1.000; L1 0.018 in [-1, 1]).

flux1: the dev/schnell AE (16 latent channels, encode = scale * (mean - shift)). A penalty on the
scaled latent's batch mean and std keeps it near N(0, 1), so the preset's fixed scale/shift
factors stay valid and the flow model sees unit-variance latents.
flux2: klein's own FLUX.2-layout AE (32 channels, 2x2-patchified to 128 per token, BatchNorm-
normalised), warm-started from the flux1 AE (same conv stack) and fine-tuned. Its latents are
normalised with batch statistics while training; the BatchNorm running stats are set from 2,048
fresh renders at export.
Both: the decoder sees slightly noised latents (sigma 0.05 of unit variance), so a flow model's
small latent errors do not turn into artefacts the judge would misread. Resumable: rerun the
same command after a stop. Seeded: data of step k depends only on (seed, k).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from einops import rearrange

from models.demo.train_common import WEIGHTS_DIR, Logger, batch, cosine_lr, export, load_state, save_state, step_rng
from models.flux.autoencoder import AutoEncoder, AutoEncoder2, build_autoencoder
from models.flux.presets import get_preset

PRESET_OF = {"flux1": "demo-flux1-dev", "flux2": "demo-flux2-klein"}
LATENT_NOISE = 0.05


def latents(ae: AutoEncoder | AutoEncoder2, x: torch.Tensor) -> torch.Tensor:
    """Training-time encode: flux1 exactly as at inference; flux2 with batch statistics."""
    if isinstance(ae, AutoEncoder):
        return ae.encode(x)
    z = ae.encoder(x)[:, : ae.params.z_channels]
    z = rearrange(z, "b c (i pi) (j pj) -> b (c pi pj) i j", pi=2, pj=2)
    mean, std = z.mean((0, 2, 3), keepdim=True).detach(), z.std((0, 2, 3), keepdim=True).detach() + 1e-4
    return (z - mean) / std


def decode_normalised(ae: AutoEncoder | AutoEncoder2, z: torch.Tensor, raw: torch.Tensor | None) -> torch.Tensor:
    if isinstance(ae, AutoEncoder):
        return ae.decode(z)
    assert raw is not None
    # Undo the batch normalisation with the same statistics, then unpatchify (AutoEncoder2.decode).
    zr = rearrange(raw, "b c (i pi) (j pj) -> b (c pi pj) i j", pi=2, pj=2)
    mean, std = zr.mean((0, 2, 3), keepdim=True).detach(), zr.std((0, 2, 3), keepdim=True).detach() + 1e-4
    z = rearrange(z * std + mean, "b (c pi pj) i j -> b c (i pi) (j pj)", pi=2, pj=2)
    return ae.decoder(z)


@torch.no_grad()
def warm_start(ae2: AutoEncoder2, ae1_path: Path) -> None:
    """Start klein's AE from the trained FLUX.1 demo AE: the conv stacks are the same, so copy
    every tensor, route latent channels 0-15 through unchanged (identity quant convs) and give
    channels 16-31 a small random encoder and a zero decoder, for fine-tuning to put to use.
    Both AEs' decoders see the raw encoder mean, so the copy starts as a working AE."""
    from safetensors.torch import load_file

    src = {k: v.float() for k, v in load_file(str(ae1_path)).items()}
    dst = ae2.state_dict()
    z1 = src["decoder.conv_in.weight"].shape[1]
    for k, v in src.items():
        if k in ("encoder.conv_out.weight", "encoder.conv_out.bias"):
            dst[k].mul_(0.1)
            dst[k][:z1] = v[:z1]  # the mean channels; AE1's logvar rows are unused at inference
        elif k == "decoder.conv_in.weight":
            dst[k].zero_()
            dst[k][:, :z1] = v
        elif dst[k].shape == v.shape:
            dst[k].copy_(v)
    for name in ("encoder.quant_conv", "decoder.post_quant_conv"):
        w = dst[f"{name}.weight"]
        w.zero_()
        w[:, :, 0, 0] = torch.eye(w.shape[0])
        dst[f"{name}.bias"].zero_()
    ae2.load_state_dict(dst)


@torch.no_grad()
def set_bn_stats(ae: AutoEncoder2, seed: int, n: int = 2048) -> None:
    zs = []
    for k in range(n // 256):
        x, _ = batch(256, step_rng(seed, k, stream=99))
        z = ae.encoder(x)[:, : ae.params.z_channels]
        zs.append(rearrange(z, "b c (i pi) (j pj) -> b (c pi pj) i j", pi=2, pj=2))
    z = torch.cat(zs)
    ae.bn.running_mean.copy_(z.mean((0, 2, 3)))
    ae.bn.running_var.copy_(z.var((0, 2, 3)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=list(PRESET_OF), default="flux1")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--name", default=None, help="run folder name under --run-dir")
    ap.add_argument("--init", type=Path, default=None, help="start from these weights of the same AE")
    ap.add_argument("--warm-start", type=Path, default=None, help="flux2: start from this FLUX.1 demo AE file")
    ap.add_argument("--threads", type=int, default=1, help="1 per run: two runs side by side beat one on 2 threads")
    ap.add_argument("--run-dir", type=Path, default=Path("runs"))
    ap.add_argument("--out", type=Path, default=None, help="default: models/demo/weights/ae_<arch>.safetensors")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    run = args.run_dir / (args.name or f"ae_{args.arch}")
    params = get_preset(PRESET_OF[args.arch]).autoencoder
    ae = build_autoencoder(params)
    opt = torch.optim.AdamW(ae.parameters(), lr=args.lr, weight_decay=0.0)
    state = load_state(run / "state.pt")
    start, wall = 0, 0.0
    if state is not None:
        ae.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start, wall = state["step"], state["wall"]
    elif args.warm_start is not None and isinstance(ae, AutoEncoder2):
        warm_start(ae, args.warm_start)
    elif args.init is not None:  # continue from shipped weights with a fresh schedule
        from safetensors.torch import load_file

        ae.load_state_dict({k: v.float() for k, v in load_file(str(args.init)).items()})
    log = Logger(run / "log.jsonl")
    log(event="start", step=start, params=sum(p.numel() for p in ae.parameters()))
    t_last = time.time()
    for step in range(start, args.steps):
        rng = step_rng(args.seed, step)
        x, _ = batch(args.batch, rng)
        raw = ae.encoder(x)[:, : params.z_channels] if isinstance(ae, AutoEncoder2) else None
        z = latents(ae, x)
        noise = torch.from_numpy(rng.standard_normal(z.shape).astype("float32"))
        y = decode_normalised(ae, z + LATENT_NOISE * noise, raw)
        # The object is ~10% of the pixels but all the judge looks at (its colour and outline):
        # weight pixels that differ from the background (the corner pixel) 10x.
        obj = ((x - x[:, :, :1, :1]).abs().amax(1, keepdim=True) > 0.1).float()
        w = 1 + 9 * obj
        rec = ((y - x).abs() * w).mean() + ((y - x) ** 2 * w).mean()
        reg = (z.mean() ** 2 + (z.std() - 1) ** 2) if isinstance(ae, AutoEncoder) else z.new_zeros(())
        loss = rec + 0.1 * reg
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, args.steps, args.lr, warmup=20)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ae.parameters(), 1.0)
        opt.step()
        now = time.time()
        wall += now - t_last
        t_last = now
        if step % 10 == 0 or step == args.steps - 1:
            log(step=step, rec=round(rec.item(), 5), reg=round(reg.item(), 4), train_wall=round(wall, 1))
        if (step + 1) % 50 == 0 or step == args.steps - 1:
            save_state(run / "state.pt", {"model": ae.state_dict(), "opt": opt.state_dict(), "step": step + 1,
                                          "wall": wall})
    ae.eval()
    if isinstance(ae, AutoEncoder2):
        set_bn_stats(ae, args.seed)
    out = args.out or WEIGHTS_DIR / f"ae_{args.arch}.safetensors"
    export(ae, out)
    # Check what ships: fp16 weights, loaded back as the pipeline would (fp32), on fresh renders.
    x, _ = batch(256, step_rng(args.seed, 0, stream=7))
    from models.flux.checkpoint import load_autoencoder

    shipped = load_autoencoder(str(out), params)
    with torch.no_grad():
        err = (shipped.decode(shipped.encode(x)) - x).abs().mean().item()
        z = shipped.encode(x)
    log(event="done", out=str(out), l1_shipped=round(err, 5), z_mean=round(z.mean().item(), 3),
        z_std=round(z.std().item(), 3), train_wall=round(wall, 1))


if __name__ == "__main__":
    main()
