"""Train the demo CogView on the shapes world: first the VQ-VAE, then the transformer.

The transformer learns both directions CogView was trained or finetuned for, so one small model
serves every task: text-to-image (`[ROI1] text [TINY] [BOI1] image [EOI1]`) and captioning
(`[TINY] [BOI1] image [EOI1] [ROI1] text`), with English and Chinese captions.

    python -m models.cogview.train --out runs/cogview-demo --vq-minutes 3 --lm-minutes 10

writes `vqvae.safetensors` and `transformer.safetensors` for
`load_cogview_pipeline("demo-cogview", {"vqvae": ..., "transformer": ...})`; `--export DIR` then
writes the shipped fp16 files. Super-resolution windows are a fifth of each batch (--sr-fraction).

How the shipped weights were made (one thread of a shared 2-core CPU, about 3 h in all; each
command resumable: rerun it after a stop):

    # runs/cv2: VQ-VAEs of a few minutes each, then --lm-minutes 15 and a --resume to 20 (1,023 steps)
    python -m models.cogview.train --out runs/cv3 --vqvae runs/cv2/vqvae.safetensors --vq-minutes 12 \
        --lm-minutes 0 --threads 1                       # the VQ-VAE: judged round trip 0.75 -> 0.98
    cp runs/cv2/transformer.safetensors runs/cv2/state.pt runs/cv3/
    python -m models.cogview.train --out runs/cv3 --resume --vq-minutes 0 --lm-minutes 100 --threads 1
    # runs/cv4: 45 more minutes from cv3's weights (the shipped run read cv3's fp16 export) with a
    # fresh optimiser, lr 3e-4, SR rows 30%: t2i 0.88 -> 0.90, captions en 0.89 -> 0.93, SR 0.90 -> 0.95
    python -m models.cogview.train --out runs/cv4 --vqvae runs/cv3/vqvae.safetensors --vq-minutes 0 \
        --transformer runs/cv3/transformer.safetensors --lm-minutes 45 --lr 3e-4 --sr-fraction 0.3 --threads 1
    python -m models.cogview.train --out runs/cv4 --export models/demo/weights

The VQ-VAE is what unlocked the rest: with codes that kept shape only 78% of the time, 1,000
transformer steps drew 5% of prompts right; on the 0.98 codes the same transformer reached 85% of
60 prompts within another 3,000 steps. (The transformer run continued from the first VQ-VAE's
codes; the super-resolution template changed at step 2,453, see CogViewConfig.sr_text_tokens.)
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from safetensors.torch import load_file, save_file

from models.cogview.config import CogViewConfig
from models.cogview.presets import build_transformer, build_vqvae, get_config
from models.cogview.tasks import caption_prefix, sequence_loss, sr_middle, sr_prefix, sr_windows, t2i_prefix
from models.cogview.text import ByteText
from models.cogview.transformer import CogViewTransformer
from models.cogview.vqvae import VQVAE

Log = Callable[[str], None]


def shapes_batch(n: int, rng: np.random.Generator, size: int) -> tuple[torch.Tensor, list[str]]:
    """n rendered images (n, 3, size, size) in [0, 1] and one caption each, English or Chinese."""
    from models.demo.captions import caption
    from models.demo.world import sample_batch

    images, attrs = sample_batch(n, size, rng)
    caps = [caption(a, "zh" if rng.random() < 0.5 else "en") for a in attrs]
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0, caps


def train_vqvae(
    vq: VQVAE,
    seconds: float,
    batch: int,
    lr: float,
    rng: np.random.Generator,
    log: Log,
    save: Callable[[], None] | None = None,
    save_every: float = 60.0,
    fresh: bool = True,
) -> None:
    vq.train()
    decay = vq.quantize_t.decay
    vq.quantize_t.decay = min(decay, 0.95) if fresh else decay  # keep up with a fresh encoder
    # The codebook is learned by EMA; the optimiser only sees the convolutions.
    opt = torch.optim.Adam([p for p in vq.parameters() if p.requires_grad], lr=lr)
    start, step, saved = time.monotonic(), 0, time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        for g in opt.param_groups:  # cosine to 10% on wall time
            g["lr"] = lr * (0.1 + 0.45 * (1 + np.cos(np.pi * elapsed / seconds)))
        pixels, _ = shapes_batch(batch, rng, 8 * vq.cfg.factor)
        x = (pixels - vq.mean) / vq.std
        z = rearrange(vq.enc_b(x), "b d h w -> b h w d")
        if elapsed < 0.85 * seconds:
            _restart_dead_codes(vq, z.detach().reshape(-1, z.shape[-1]), rng, first=step == 0 and fresh)
        q, diff, _ = vq.quantize_t(z)
        recon = vq.dec(rearrange(q, "b h w d -> b d h w"))
        # The object covers about a tenth of the image: weight its pixels (those far from the
        # corner colour) 5x, or the codebook spends itself on flat background.
        obj = ((x - x[:, :, :1, :1]).abs().amax(1, keepdim=True) > 0.1).float()
        loss = ((recon - x).pow(2) * (1 + 4 * obj)).mean() + 0.25 * diff
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 50 == 0:
            used = len(set(vq.encode(pixels * 1).flatten().tolist()))
            log(f"vqvae step {step} ({elapsed:.0f} s): loss {loss.item():.4f}, codes in use {used}")
        if save is not None and time.monotonic() - saved > save_every:
            vq.eval()
            save()
            vq.train()
            saved = time.monotonic()
    vq.quantize_t.decay = decay
    vq.eval()


@torch.no_grad()
def _restart_dead_codes(vq: VQVAE, z: torch.Tensor, rng: np.random.Generator, first: bool) -> None:
    """Seed unused codes with current encoder outputs z (N, D) (all of them at the start).

    A training-recipe choice, not part of CogView's model: with a Xavier-initialised codebook
    and plain EMA, a small demo collapses onto a dozen codes within a hundred steps (the first
    demo run used 20 of 512). Jukebox-style, every step a code whose EMA count of uses per step
    is below 0.01 is reseeded at an encoder output of the batch, half of them among the worst
    quantised (object edges).
    """
    q = vq.quantize_t
    mean = z.shape[0] / q.n_embed
    # Rare codes matter here (an object edge of one colour on one background): only codes used
    # less than about once in 100 steps count as dead, or colour codes never settle.
    dead = torch.ones(q.n_embed, dtype=torch.bool) if first else q.cluster_size < 0.01
    count = 0.03 if not first else mean
    n = int(dead.sum())
    if n == 0:
        return
    if not first:  # half from the worst-quantised outputs (object edges), half at random
        dist = (z.pow(2).sum(1, keepdim=True) - 2 * z @ q.embed + q.embed.pow(2).sum(0, keepdim=True)).min(1).values
        far = dist.argsort(descending=True)[: max(1, z.shape[0] // 8)]
        z = torch.cat([z[far], z[torch.from_numpy(rng.integers(0, z.shape[0], len(far)))]])
    pick = torch.from_numpy(rng.integers(0, z.shape[0], n))
    new = z[pick] + 1e-3 * torch.randn(n, q.dim)
    q.embed[:, dead] = new.t()
    q.embed_avg[:, dead] = count * new.t()  # embed = embed_avg / cluster_size
    q.cluster_size[dead] = count


def sequences(
    cfg: CogViewConfig,
    codes: torch.Tensor,
    caps: list[str],
    rng: np.random.Generator,
    sr: tuple[torch.Tensor, torch.Tensor] | None = None,
    p_sr: float = 0.2,
) -> torch.Tensor:
    """Training rows: text-to-image, captioning and (with `sr`) super-resolution windows.

    Captions are padded with spaces to `cfg.caption_tokens`: CogView has no end-of-text token,
    so the captioner samples a fixed number of bytes, and trailing spaces are what a caption
    parser strips. sr = (low codes (B, G*G), high codes (B, 4*G*G)) of the same scene at 1x/2x.
    """
    text = ByteText()
    pad = cfg.cmd("[PAD]")
    rows = []
    windows = sr_windows(cfg.image_grid) if sr is not None else []
    g = cfg.image_grid
    for k, (c, cap) in enumerate(zip(codes.tolist(), caps, strict=True)):
        t = [i + cfg.n_image for i in text.encode(cap)[: cfg.max_text_tokens]]
        u = rng.random()
        u = u / (1 - p_sr) if sr is not None and p_sr < 1 else (2.0 if sr is not None else u)
        if u < 0.6:  # text-to-image is the main task
            rows.append(t2i_prefix(cfg, t) + c + [cfg.cmd("[EOI1]")])
        elif u < 1.0:  # captioning: the captioner and the reranker
            padded = text.encode(cap)[: cfg.caption_tokens]
            padded += [ord(" ")] * (cfg.caption_tokens - len(padded))
            rows.append(caption_prefix(cfg, c) + [i + cfg.n_image for i in padded])
        else:  # super-resolution: one window of CogView's magnify order
            w = windows[int(rng.integers(len(windows)))]
            low = sr[0][k].view(g, g)[w.low[0], w.low[1]].flatten().tolist()
            high = sr[1][k].view(2 * g, 2 * g)[w.high[0], w.high[1]].flatten().tolist()
            # A third of them without a prompt: /v1/upscale's prompt is optional.
            prompt = t if rng.random() >= 1 / 3 else []
            rows.append(sr_prefix(cfg, prompt) + low + sr_middle(cfg) + high)
    n = max(len(r) for r in rows)
    return torch.tensor([r + [pad] * (n - len(r)) for r in rows])


def sr_batch(n: int, rng: np.random.Generator, size: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The same n scenes rendered at size and 2*size (pixels in [0, 1]), with captions."""
    from models.demo.captions import caption
    from models.demo.world import render, sample_attributes

    lo, hi, caps = [], [], []
    for _ in range(n):
        a = sample_attributes(rng)  # never a held-out combination
        seed = int(rng.integers(2**31))
        lo.append(np.asarray(render(a, size, seed)))
        hi.append(np.asarray(render(a, 2 * size, seed)))
        caps.append(caption(a, "zh" if rng.random() < 0.5 else "en"))

    def t(x: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(x)).permute(0, 3, 1, 2).float() / 255.0

    return t(lo), t(hi), caps


def train_transformer(
    model: CogViewTransformer,
    vq: VQVAE,
    seconds: float,
    batch: int,
    lr: float,
    rng: np.random.Generator,
    log: Log,
    sr: bool = False,
    sr_fraction: float = 0.2,
    save: Callable[[int, float], None] | None = None,
    save_every: float = 120.0,
    opt: torch.optim.Optimizer | None = None,
    start_elapsed: float = 0.0,
    start_step: int = 0,
) -> torch.optim.Optimizer:
    """LM training for `seconds` of wall time in all (resumable from start_elapsed / start_step)."""
    cfg = model.cfg
    model.train()
    if opt is None:
        opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
    start, step, saved = time.monotonic() - start_elapsed, start_step, time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        # Linear warm-up, then cosine towards 10% (CogView's AnnealingLR shape), on wall time.
        frac = elapsed / seconds
        scale = min(1.0, (step + 1) / 100) * (0.1 + 0.45 * (1 + np.cos(np.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr * scale
        n_sr = round(batch * sr_fraction) if sr else 0  # super-resolution rows
        pixels, caps = shapes_batch(batch - n_sr, rng, cfg.image_size)
        seqs = [sequences(cfg, vq.encode(pixels), caps, rng)]
        if n_sr:
            low, high, caps = sr_batch(n_sr, rng, cfg.image_size)  # 2x renders only where needed
            low_codes = vq.encode(low)
            seqs.append(sequences(cfg, low_codes, caps, rng, (low_codes, vq.encode(high)), p_sr=1.0))
        width = max(x.shape[1] for x in seqs)
        pad = cfg.cmd("[PAD]")
        rows = torch.cat([F.pad(x, (0, width - x.shape[1]), value=pad) for x in seqs])
        loss = sequence_loss(model, rows, txt_loss_scale=2.0)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 50 == 0:
            log(f"transformer step {step} ({elapsed:.0f} s): loss {loss.item():.4f}")
        if save is not None and time.monotonic() - saved > save_every:
            model.eval()
            save(step, time.monotonic() - start)
            model.train()
            saved = time.monotonic()
    model.eval()
    if save is not None:
        save(step, time.monotonic() - start)
    return opt


def export(run: Path, dest: Path) -> None:
    """The shipped demo weights: fp16 (the pipeline casts to its dtype on load; the VQ-VAE runs
    in fp32 whatever the file holds). The codebook's EMA statistics are training state only."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("transformer", "vqvae"):
        sd = load_file(str(run / f"{name}.safetensors"))
        sd = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
        save_file(sd, str(dest / f"cogview_{name}.safetensors"))
        print(f"wrote {dest / f'cogview_{name}.safetensors'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--preset", default="demo-cogview")
    ap.add_argument("--vq-minutes", type=float, default=3.0)
    ap.add_argument("--lm-minutes", type=float, default=10.0)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--vq-batch", type=int, help="VQ-VAE batch (default: --batch)")
    ap.add_argument("--vq-lr", type=float, default=1e-3)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--vqvae", type=Path, help="start from (or, with --vq-minutes 0, just use) this VQ-VAE")
    ap.add_argument("--no-sr", action="store_true", help="train without the super-resolution template")
    ap.add_argument("--sr-fraction", type=float, default=0.2, help="share of each batch in super-resolution rows")
    ap.add_argument("--transformer", type=Path,
                    help="start the transformer from these weights (e.g. the shipped ones), fresh optimiser")
    ap.add_argument("--resume", action="store_true", help="continue the transformer run saved in --out")
    ap.add_argument("--export", type=Path, metavar="DIR",
                    help="only write --out's weights to DIR/cogview_{transformer,vqvae}.safetensors, fp16")  # fmt: skip
    args = ap.parse_args()
    if args.export:
        export(args.out, args.export)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = get_config(args.preset)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    vq_path, lm_path, state_path = (
        args.out / "vqvae.safetensors",
        args.out / "transformer.safetensors",
        args.out / "state.pt",
    )
    vq = build_vqvae(cfg.vqvae, "cpu")
    init = args.vqvae or (vq_path if args.resume else None)
    if init is not None:
        vq.load_state_dict(load_file(str(init)))
    if args.vq_minutes > 0:
        t = time.monotonic()
        train_vqvae(vq, args.vq_minutes * 60, args.vq_batch or args.batch, args.vq_lr, rng, print,
                    save=lambda: save_file(vq.state_dict(), str(vq_path)), fresh=init is None)  # fmt: skip
        print(f"vqvae trained {time.monotonic() - t:.0f} s")
    vq.eval()
    save_file(vq.state_dict(), str(vq_path))
    if args.lm_minutes <= 0:
        return
    model = build_transformer(cfg, "cpu")
    model.init_weights()
    if args.transformer is not None and not (args.resume and state_path.exists()):
        model.load_state_dict({k: v.float() for k, v in load_file(str(args.transformer)).items()})
        print(f"transformer from {args.transformer}")
    opt, elapsed, step = None, 0.0, 0
    if args.resume and state_path.exists():
        state = torch.load(state_path, weights_only=False)
        model.load_state_dict(load_file(str(lm_path)))
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.01)
        opt.load_state_dict(state["opt"])
        elapsed, step = state["elapsed"], state["step"]
        rng = np.random.default_rng([args.seed, step])
        print(f"resumed at step {step}, {elapsed:.0f} s")

    def save(step: int, elapsed: float) -> None:
        save_file(model.state_dict(), str(lm_path))
        torch.save({"opt": opt_ref[0].state_dict() if opt_ref else None, "step": step, "elapsed": elapsed}, state_path)

    opt_ref: list[torch.optim.Optimizer] = []
    if opt is None:
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.01)
    opt_ref.append(opt)
    train_transformer(model, vq, args.lm_minutes * 60, args.batch, args.lr, rng, print, sr=not args.no_sr,
                      sr_fraction=args.sr_fraction, save=save, opt=opt, start_elapsed=elapsed,
                      start_step=step)  # fmt: skip
    print(f"wrote {vq_path} and {lm_path}")


if __name__ == "__main__":
    main()
