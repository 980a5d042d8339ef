"""Train the demo CogView on the shapes world: first the VQ-VAE, then the transformer.

The transformer learns both directions CogView was trained or finetuned for, so one small model
serves every task: text-to-image (`[ROI1] text [TINY] [BOI1] image [EOI1]`) and captioning
(`[TINY] [BOI1] image [EOI1] [ROI1] text`), with English and Chinese captions.

    python -m models.cogview.train --out runs/cogview-demo --vq-minutes 3 --lm-minutes 10

writes `vqvae.safetensors` and `transformer.safetensors` for
`load_cogview_pipeline("demo-cogview", {"vqvae": ..., "transformer": ...})`.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from models.cogview.config import CogViewConfig
from models.cogview.presets import build_transformer, build_vqvae, get_config
from models.cogview.tasks import caption_prefix, sequence_loss, t2i_prefix
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


def train_vqvae(vq: VQVAE, seconds: float, batch: int, lr: float, rng: np.random.Generator, log: Log) -> None:
    vq.train()
    # The codebook is learned by EMA; the optimiser only sees the convolutions.
    opt = torch.optim.Adam([p for p in vq.parameters() if p.requires_grad], lr=lr)
    start, step = time.monotonic(), 0
    while time.monotonic() - start < seconds:
        pixels, _ = shapes_batch(batch, rng, 8 * vq.cfg.factor)
        x = (pixels - vq.mean) / vq.std
        if step % 25 == 0:
            _restart_dead_codes(vq, x, rng, first=step == 0)
        recon, diff = vq(x)
        loss = F.mse_loss(recon, x) + 0.25 * diff
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 50 == 0:
            used = int((vq.quantize_t.cluster_size > 1e-3).sum())
            log(f"vqvae step {step}: loss {loss.item():.4f}, codes in use {used}")
    vq.eval()


@torch.no_grad()
def _restart_dead_codes(vq: VQVAE, x: torch.Tensor, rng: np.random.Generator, first: bool) -> None:
    """Seed unused codes with current encoder outputs (all of them at the start).

    A training-recipe choice, not part of CogView's model: with a Xavier-initialised codebook
    and plain EMA, a small demo collapses onto a dozen codes within a hundred steps.
    """
    q = vq.quantize_t
    z = vq.enc_b(x).permute(0, 2, 3, 1).reshape(-1, q.dim)
    dead = (
        torch.ones(q.n_embed, dtype=torch.bool) if first else q.cluster_size < 1e-3 * q.cluster_size.sum() / q.n_embed
    )
    n = int(dead.sum())
    if n == 0:
        return
    pick = torch.from_numpy(rng.integers(0, z.shape[0], n))
    new = z[pick] + 1e-3 * torch.randn(n, q.dim)
    q.embed[:, dead] = new.t()
    q.embed_avg[:, dead] = new.t()
    q.cluster_size[dead] = 1.0


def sequences(cfg: CogViewConfig, codes: torch.Tensor, caps: list[str], rng: np.random.Generator) -> torch.Tensor:
    text = ByteText()
    pad = cfg.cmd("[PAD]")
    rows = []
    for c, cap in zip(codes.tolist(), caps, strict=True):
        t = [i + cfg.n_image for i in text.encode(cap)[: cfg.max_text_tokens]]
        if rng.random() < 0.6:  # text-to-image is the main task; captioning is the reranker
            rows.append(t2i_prefix(cfg, t) + c + [cfg.cmd("[EOI1]")])
        else:
            rows.append(caption_prefix(cfg, c) + t)
    n = max(len(r) for r in rows)
    return torch.tensor([r + [pad] * (n - len(r)) for r in rows])


def train_transformer(
    model: CogViewTransformer, vq: VQVAE, seconds: float, batch: int, lr: float, rng: np.random.Generator, log: Log
) -> None:
    cfg = model.cfg
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
    start, step = time.monotonic(), 0
    while (elapsed := time.monotonic() - start) < seconds:
        # Linear warm-up, then cosine towards 10% (CogView's AnnealingLR shape), on wall time.
        frac = elapsed / seconds
        scale = min(1.0, (step + 1) / 100) * (0.1 + 0.45 * (1 + np.cos(np.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr * scale
        pixels, caps = shapes_batch(batch, rng, cfg.image_size)
        codes = vq.encode(pixels)
        loss = sequence_loss(model, sequences(cfg, codes, caps, rng), txt_loss_scale=2.0)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 50 == 0:
            log(f"transformer step {step}: loss {loss.item():.4f}")
    model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--preset", default="demo-cogview")
    ap.add_argument("--vq-minutes", type=float, default=3.0)
    ap.add_argument("--lm-minutes", type=float, default=10.0)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cfg = get_config(args.preset)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    vq = build_vqvae(cfg.vqvae, "cpu")
    train_vqvae(vq, args.vq_minutes * 60, args.batch, 1e-3, rng, print)
    save_file(vq.state_dict(), str(args.out / "vqvae.safetensors"))
    model = build_transformer(cfg, "cpu")
    model.init_weights()
    train_transformer(model, vq, args.lm_minutes * 60, args.batch, 1e-3, rng, print)
    save_file(model.state_dict(), str(args.out / "transformer.safetensors"))
    print(f"wrote {args.out}/vqvae.safetensors and {args.out}/transformer.safetensors")


if __name__ == "__main__":
    main()
