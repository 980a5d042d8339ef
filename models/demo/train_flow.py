"""Train a demo flow transformer jointly with the demo text encoder (rectified flow, flux.md §8).

    nice -n 10 python -m models.demo.train_flow --arch dev --steps 14000    # dev base
    nice -n 10 python -m models.demo.train_flow --arch klein --steps 2000   # klein base

Wall time: ~15 min for 2,000 steps of batch 32 on one thread of a 2-core CPU shared with
other jobs (0.3-1.1 s a step as the load varied; runs/flow_<arch>/log.jsonl has a run's own).
The shipped dev base: 4,800 steps with the plain loss (~38 min of training, resumed on the way),
then resumed to 14,000 steps with the object-weighted loss (--object-weight 4, batch 64; several
hours beside other jobs: that run's log was lost with the session that ran it). Stopping and
resuming with a larger --steps re-stretches the cosine schedule; a straight run is the clean way
to reproduce. Longer training mostly buys shape (dev on 270 prompts, all four attributes: 0.31 at
2,000 steps, 0.49 at 4,800, 0.90 at 14,000). klein's base is 2,000 steps; it was trained further
as the plain rows of train_edit.py's reference mode (see train_distill.py).

Convention as the sampler integrates it: x_t = (1 - t) x0 + t eps, the model predicts eps - x0,
t ~ logit-normal(0.8, 1) (skewed to the noisy end; see T_MEAN), plus a small auxiliary loss that
reads the attributes from the pooled text vector (see FlowModel.aux). Captions are English or
Chinese at random per sample and dropped to "" 10% of the time, which gives the unconditional
branch for CFG. The latents come from the trained demo AE (fresh renders through it each step,
so every batch has new jitter), and sample_batch never yields a held-out combination.

The dev base is trained with the guidance input fed a random value it cannot use (the target
does not depend on it): the guidance input is given its meaning afterwards by distilling CFG
from this model (train_distill.py --mode guidance). An EMA of the weights is kept and it is the
EMA that is evaluated and handed on. Resumable: rerun the same command after a stop.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.demo.train_common import (
    WEIGHTS_DIR,
    EmaRun,
    Logger,
    batch,
    captions_for,
    step_rng,
)
from models.demo.world import BACKGROUNDS, COLORS, POSITIONS, SHAPES, Attributes
from models.flux import sampling
from models.flux.autoencoder import AutoEncoder, AutoEncoder2
from models.flux.checkpoint import load_autoencoder
from models.flux.pipeline import FluxPipeline
from models.flux.presets import FluxPreset, build_transformer, get_preset
from models.text.demo import DemoTextEncoder, tokenize

PRESET_OF = {"dev": "demo-flux1-dev", "klein": "demo-flux2-klein", "schnell": "demo-flux1-schnell"}
AE_FILE = {"dev": "ae_flux1", "schnell": "ae_flux1", "klein": "ae_flux2"}
P_DROP = 0.1
T_MEAN = 0.8  # logit-normal mean: t skews to the noisy end, where only the caption can say what to draw
AUX_SIZES = (len(BACKGROUNDS), len(COLORS), len(SHAPES), len(POSITIONS))
# The object covers ~10% of a 64 px image and its outline far less, so a plain MSE spends most of
# its gradient on background the model gets right early; shape (the slow attribute) lives in the
# few tokens on and around the object. Those tokens weigh OBJECT_WEIGHT times as much (see
# object_weights); --object-weight 1 restores the plain loss.
OBJECT_WEIGHT = 4.0


def object_weights(x: Tensor, attrs: Sequence[Attributes], side: int, weight: float) -> Tensor:
    """Per-token loss weights (B, side*side, 1): `weight` on tokens that touch the object or border
    it (one token of dilation, so the outline's both sides count), 1 elsewhere; mean-normalised so
    the loss keeps its scale."""
    bg = torch.tensor([BACKGROUNDS[a.bg] for a in attrs], dtype=x.dtype) / 127.5 - 1.0
    on_object = ((x - bg[:, :, None, None]).abs().amax(dim=1, keepdim=True) > 0.1).float()
    grid = F.adaptive_max_pool2d(on_object, side)
    grid = F.max_pool2d(grid, 3, stride=1, padding=1)
    w = 1.0 + (weight - 1.0) * grid.flatten(1)
    return (w / w.mean(dim=1, keepdim=True))[:, :, None]


def demo_preset(arch: str) -> FluxPreset:
    """The preset a variant trains (sizes: models/flux/presets.py, demo section)."""
    return get_preset(PRESET_OF[arch])


def load_ae(arch: str) -> AutoEncoder | AutoEncoder2:
    ae = load_autoencoder(str(WEIGHTS_DIR / f"{AE_FILE[arch]}.safetensors"), demo_preset(arch).autoencoder)
    for p in ae.parameters():
        p.requires_grad_(False)
    return ae


class FlowModel(nn.Module):
    """Transformer + text encoder, with the pipeline's packing and ids, for training."""

    def __init__(self, preset: FluxPreset):
        super().__init__()
        self.preset = preset
        self.flux2 = preset.arch == "flux2"
        self.transformer = build_transformer(preset.transformer, "cpu")
        assert preset.text.demo is not None
        self.text = DemoTextEncoder(preset.text.demo)
        n_axes = 4 if self.flux2 else 3
        self.side = 64 // (2 * preset.autoencoder.downsample)  # token grid side at 64 px
        self.register_buffer("img_ids", sampling.image_ids(self.side, self.side, n_axes), persistent=False)
        self.register_buffer("txt_ids", sampling.text_ids(preset.text.demo.max_length, n_axes), persistent=False)
        # Training-only head (never shipped): reads the four attributes back from the pooled text
        # vector. The diffusion loss alone teaches a from-scratch byte-level encoder to read the
        # caption only slowly (after 400 steps the prediction barely depended on it); this direct
        # signal makes the attributes linearly readable from the start.
        self.aux = nn.Linear(preset.text.demo.pooled_dim, sum(AUX_SIZES))

    def to_tokens(self, z: Tensor) -> Tensor:
        return sampling.tokens(z) if self.flux2 else sampling.pack(z)

    def from_tokens(self, x: Tensor) -> Tensor:
        return sampling.untokens(x, self.side, self.side) if self.flux2 else sampling.unpack(x, self.side, self.side)

    def encode_text(self, captions: Sequence[str]) -> tuple[Tensor, Tensor, Tensor]:
        # Each distinct caption once (a batch repeats many of the 501 strings).
        unique = list(dict.fromkeys(captions))
        index = torch.tensor([unique.index(c) for c in captions])
        emb = self.text(tokenize(unique, self.preset.text.demo.max_length))  # type: ignore[union-attr]
        return emb.tokens, emb.pooled, index

    def aux_loss(self, text: tuple[Tensor, Tensor, Tensor], caps: Sequence[str], attrs: Sequence[Attributes]) -> Tensor:
        """Cross-entropy of the four attributes from each non-empty caption's pooled vector."""
        _, pooled, index = text
        keep = [i for i, c in enumerate(caps) if c]
        if not keep:
            return pooled.new_zeros(())
        logits = self.aux(pooled[index[keep]]).split(list(AUX_SIZES), dim=-1)
        loss = pooled.new_zeros(())
        for logit, (key, table) in zip(logits, (("bg", BACKGROUNDS), ("color", COLORS), ("shape", SHAPES),
                                                ("position", POSITIONS)), strict=True):
            names = list(table)
            target = torch.tensor([names.index(getattr(attrs[i], key)) for i in keep])
            loss = loss + F.cross_entropy(logit, target)
        return loss / len(AUX_SIZES)

    def forward(self, x: Tensor, t: Tensor, text: tuple[Tensor, Tensor, Tensor], g: Tensor | None = None) -> Tensor:
        tokens, pooled, index = text
        txt = tokens[index]
        if self.flux2:
            return self.transformer(x, self.img_ids, txt, self.txt_ids, t, g)
        return self.transformer(x, self.img_ids, txt, self.txt_ids, t, pooled[index], g)

    def pipeline(self, ae: AutoEncoder | AutoEncoder2, cfg: bool = False) -> FluxPipeline:
        """The real inference pipeline on these modules; cfg=True samples with true CFG (a base model)."""
        preset = dataclasses.replace(self.preset, distilled=not cfg)
        return FluxPipeline(preset, self.transformer, ae, self.text)  # type: ignore[arg-type]


def export_variant(model: FlowModel, variant: str) -> list[Path]:
    """Ship a trained FlowModel as the catalog expects: transformer and text encoder, fp16."""
    from models.demo.train_common import export

    paths = [WEIGHTS_DIR / f"{variant}_transformer.safetensors", WEIGHTS_DIR / f"{variant}_text.safetensors"]
    export(model.transformer, paths[0])
    export(model.text, paths[1])
    return paths


def main_export() -> None:
    """python -m models.demo.train_flow --export STATE.pt --variant dev|schnell|klein"""
    ap = argparse.ArgumentParser()
    ap.add_argument("--export", type=Path, required=True)
    ap.add_argument("--variant", choices=list(PRESET_OF), required=True)
    args = ap.parse_args()
    model = FlowModel(demo_preset(args.variant))
    model.load_state_dict(torch.load(args.export, map_location="cpu"))
    print(export_variant(model, args.variant))


def quick_eval(model: FlowModel, ae: AutoEncoder | AutoEncoder2, n: int, steps: int, guidance: float,
               language: str = "en", cfg: bool = False) -> dict:
    from models.demo.metrics import evaluate
    from models.demo.prompts import eval_prompts
    from models.interface import ImageRequest

    model.eval()
    pipe = model.pipeline(ae, cfg)

    def gen(items: list[tuple[str, int]]) -> list:
        reqs = [ImageRequest(prompt=p, seed=s, width=64, height=64, steps=steps, guidance=guidance) for p, s in items]
        return pipe.generate(reqs)

    report = evaluate(gen, eval_prompts(n), language=language, batch_size=30)
    model.train()
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=["dev", "klein"], default="dev")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--eval-steps", type=int, default=20)
    ap.add_argument("--object-weight", type=float, default=OBJECT_WEIGHT)
    ap.add_argument("--threads", type=int, default=1, help="1 per run: two runs side by side beat one on 2 threads")
    ap.add_argument("--run-dir", type=Path, default=Path("runs"))
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    run = args.run_dir / f"flow_{args.arch}"
    preset = demo_preset(args.arch)
    ae = load_ae(args.arch)
    model = FlowModel(preset)
    r = EmaRun(run, model, args.lr, args.steps, warmup=100, ema_cap=0.998)
    log = Logger(run / "log.jsonl")
    log(event="start", step=r.step, transformer=sum(p.numel() for p in model.transformer.parameters()),
        text=sum(p.numel() for p in model.text.parameters()))
    guided = preset.transformer.guidance_embed
    for step in range(r.step, args.steps):
        rng = step_rng(args.seed, step)
        x, attrs = batch(args.batch, rng)
        with torch.no_grad():
            x0 = model.to_tokens(ae.encode(x))
        caps = captions_for(attrs, rng, P_DROP)
        eps = torch.from_numpy(rng.standard_normal(x0.shape).astype("float32"))
        t = torch.sigmoid(T_MEAN + torch.from_numpy(rng.standard_normal(len(attrs)).astype("float32")))
        g = torch.from_numpy(rng.uniform(1, 6, len(attrs)).astype("float32")) if guided else None
        xt = (1 - t[:, None, None]) * x0 + t[:, None, None] * eps
        text = model.encode_text(caps)
        pred = model(xt, t, text, g)
        aux = model.aux_loss(text, caps, attrs)
        w = object_weights(x, attrs, model.side, args.object_weight)
        loss = (w * (pred - (eps - x0)) ** 2).mean() + 0.1 * aux
        r.update(step, loss)
        if step % 25 == 0:
            log(step=step, loss=round(loss.item(), 4), aux=round(aux.item(), 4), train_wall=round(r.wall, 1))
        if (step + 1) % args.eval_every == 0 or step == args.steps - 1:
            # A base model: judged with true CFG (its guidance input, if any, is not trained yet).
            rep = quick_eval(r.ema, ae, 60, args.eval_steps, 3.0, cfg=True)
            log(step=step + 1, eval_acc=rep["accuracy"], per=rep["per_attribute"], train_wall=round(r.wall, 1))
            torch.save(r.ema.state_dict(), run / f"ema_{step + 1}.pt")
            r.restart_clock()
    ema = r.ema
    torch.save(ema.state_dict(), run / "ema_final.pt")
    log(event="exported", paths=[str(p) for p in export_variant(ema, args.arch)], train_wall=round(r.wall, 1))


if __name__ == "__main__":
    import sys

    main_export() if "--export" in sys.argv else main()
