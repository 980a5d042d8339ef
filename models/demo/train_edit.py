"""Fine-tune the demo models for image-conditioned generation: FLUX.1 Fill inpainting and FLUX.2
multi-reference editing (flux.md §9, §10), from the shipped dev and klein weights.

    nice -n 10 python -m models.demo.train_edit --mode fill --steps 600
    nice -n 10 python -m models.demo.train_edit --mode reference --steps 600

fill: the demo-flux1-fill transformer (192 input channels: noisy latents, masked-image latents,
  the pixel-unshuffled mask) starts as a copy of the shipped dev, the new input columns at zero,
  so step 0 draws exactly what dev draws. Each row is an inpainting exercise as the Fill model
  was trained: a render, a mask (a box around its object, dilated by 0-6 px, 3 rows in 4; any box
  otherwise), the masked render as conditioning, the whole render as target, its caption as
  prompt. At serving time the prompt says what goes in the hole and the rest is kept.
reference: klein learns to read its reference tokens (FLUX.2 ids, t = 10). Half of each batch is
  a reference row: the reference is another scene on the same background, and the prompt is, 1
  time in 2, the target's caption without its background phrase ("a red circle on the left"),
  so the only place the background can come from is the reference. The other half is plain
  text-to-image, so klein keeps what it could do.

Both use the flow loss of train_flow (object-weighted) with the shipped model's own sampling
defaults afterwards; the guidance input of dev (distilled CFG) is fed random values as in its base
training, which a few hundred steps do not unlearn. An EMA is exported. Resumable and seeded.
Wall time on one thread of the shared 2-core CPU: fill 800 steps 4 min (250 s), reference 800
steps 5 min (303 s); runs/edit_<mode>/log.jsonl has a run's own. The shipped fill is 800 steps
from the shipped dev; `python benchmarks/fill_demo_eval.py` on 60 fresh scenes: the prompt's
colour in the masked box 0.98, background and position kept 0.98, all four attributes 0.90, the
unmasked pixels within 1.4/255 on average. klein takes the reference's background 100% (prompts
without one; tests/test_image_tasks.py). The reference run doubles as klein's continued base
training (its plain rows): see train_distill.py for how the shipped klein is made.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import Tensor

from models.demo.captions import caption
from models.demo.train_common import WEIGHTS_DIR, EmaRun, Logger, batch, export, images_to_tensor, step_rng
from models.demo.train_flow import T_MEAN, FlowModel, load_ae, object_weights
from models.demo.world import BACKGROUNDS, Attributes, is_held_out, render, sample_attributes
from models.flux import sampling
from models.flux.presets import get_preset

PRESET = {"fill": "demo-flux1-fill", "reference": "demo-flux2-klein"}
BASE = {"fill": "dev", "reference": "klein"}  # shipped weights each starts from
AE_ARCH = {"fill": "dev", "reference": "klein"}
EXPORT = {"fill": "fill", "reference": "klein"}


def initial_model(mode: str) -> FlowModel:
    """The fine-tune's start: the shipped base weights, Fill's extra input columns zeroed."""
    model = FlowModel(get_preset(PRESET[mode]))
    base = BASE[mode]
    sd = {k: v.float() for k, v in load_file(str(WEIGHTS_DIR / f"{base}_transformer.safetensors")).items()}
    w = model.transformer.img_in.weight
    if sd["img_in.weight"].shape != w.shape:  # Fill: [latents | masked latents | mask] in, zeros for the new
        grown = torch.zeros_like(w)
        grown[:, : sd["img_in.weight"].shape[1]] = sd["img_in.weight"]
        sd["img_in.weight"] = grown
    model.transformer.load_state_dict(sd)
    text = load_file(str(WEIGHTS_DIR / f"{base}_text.safetensors"))
    model.text.load_state_dict({k: v.float() for k, v in text.items()})
    return model


def object_box_masks(x: Tensor, attrs: list[Attributes], rng: np.random.Generator) -> Tensor:
    """(B, 1, H, W) masks, 1 = repaint: mostly a box around the object, sometimes any box."""
    b, _, h, w = x.shape
    bg = torch.tensor([BACKGROUNDS[a.bg] for a in attrs], dtype=x.dtype) / 127.5 - 1.0
    on = (x - bg[:, :, None, None]).abs().amax(dim=1) > 0.1  # (B, H, W)
    masks = torch.zeros(b, 1, h, w)
    for i in range(b):
        if rng.random() < 0.75 and on[i].any():
            ys, xs = torch.nonzero(on[i], as_tuple=True)
            d = int(rng.integers(0, 7))
            y0, y1 = max(0, int(ys.min()) - d), min(h, int(ys.max()) + 1 + d)
            x0, x1 = max(0, int(xs.min()) - d), min(w, int(xs.max()) + 1 + d)
        else:
            y0, x0 = (int(v) for v in rng.integers(0, h // 2, 2))
            y1, x1 = y0 + int(rng.integers(h // 4, h // 2 + 1)), x0 + int(rng.integers(w // 4, w // 2 + 1))
        masks[i, 0, y0:y1, x0:x1] = 1.0
    return masks


def references(attrs: list[Attributes], rng: np.random.Generator) -> Tensor:
    """One reference per row: a random scene (never held out) on the row's background."""
    refs = []
    for a in attrs:
        other = sample_attributes(rng)
        ref = dataclasses.replace(other, bg=a.bg)
        if is_held_out(ref):
            ref = dataclasses.replace(ref, color="red")  # keep held-out combinations out of training
        refs.append(np.asarray(render(ref, 64, int(rng.integers(2**31)))))
    return images_to_tensor(np.stack(refs))


def prompts(attrs: list[Attributes], rng: np.random.Generator, p_drop: float, p_short: float) -> list[str]:
    out = []
    for a in attrs:
        lang = "zh" if rng.random() < 0.5 else "en"
        u = rng.random()
        out.append("" if u < p_drop else caption(a, lang, background=u >= p_drop + p_short))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=list(PRESET), required=True)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--run-dir", type=Path, default=Path("runs"))
    ap.add_argument("--export-dir", type=Path, default=WEIGHTS_DIR, help="where the fp16 weights go")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    run = args.run_dir / f"edit_{args.mode}"
    ae = load_ae(AE_ARCH[args.mode])
    model = initial_model(args.mode)
    r = EmaRun(run, model, args.lr, args.steps, warmup=50, ema_cap=0.995)
    log = Logger(run / "log.jsonl")
    log(event="start", step=r.step, mode=args.mode)
    guided = model.preset.transformer.guidance_embed
    ref_ids = sampling.image_ids(model.side, model.side, 4, 10.0)
    for step in range(r.step, args.steps):
        rng = step_rng(args.seed, step)
        x, attrs = batch(args.batch, rng)
        with torch.no_grad():
            x0 = model.to_tokens(ae.encode(x))
        eps = torch.from_numpy(rng.standard_normal(x0.shape).astype("float32"))
        t = torch.sigmoid(T_MEAN + torch.from_numpy(rng.standard_normal(len(attrs)).astype("float32")))
        g = torch.from_numpy(rng.uniform(1, 6, len(attrs)).astype("float32")) if guided else None
        xt = (1 - t[:, None, None]) * x0 + t[:, None, None] * eps
        w = object_weights(x, attrs, model.side, 4.0)
        if args.mode == "fill":
            mask = object_box_masks(x, attrs, rng)
            with torch.no_grad():
                cond = sampling.fill_condition(ae.encode(x * (1 - mask)), mask, ae.params.downsample)
            caps = prompts(attrs, rng, 0.1, 0.0)
            text = model.encode_text(caps)
            tokens, pooled, index = text
            pred = model.transformer(torch.cat((xt, cond), dim=-1), model.img_ids, tokens[index], model.txt_ids, t,
                                     pooled[index], g)
            loss = (w * (pred - (eps - x0)) ** 2).mean()
        else:
            half = args.batch // 2  # rows [:half] carry a reference, the rest are plain text-to-image
            with torch.no_grad():
                ref = model.to_tokens(ae.encode(references(attrs[:half], rng)))
            caps = prompts(attrs[:half], rng, 0.05, 0.5) + prompts(attrs[half:], rng, 0.1, 0.0)
            text = model.encode_text(caps)
            tokens, _, index = text
            img = torch.cat((xt[:half], ref), dim=1)
            ids = torch.cat((model.img_ids, ref_ids), dim=1)
            txt = tokens[index]
            pred_ref = model.transformer(img, ids, txt[:half], model.txt_ids, t[:half], None)[:, : xt.shape[1]]
            pred_plain = model.transformer(xt[half:], model.img_ids, txt[half:], model.txt_ids, t[half:], None)
            pred = torch.cat((pred_ref, pred_plain))
            loss = (w * (pred - (eps - x0)) ** 2).mean()
        r.update(step, loss)
        if step % 25 == 0:
            log(step=step, loss=round(loss.item(), 4), train_wall=round(r.wall, 1))
    torch.save(r.ema.state_dict(), run / "ema_final.pt")  # a teacher for train_distill --mode klein
    name = EXPORT[args.mode]
    paths = [args.export_dir / f"{name}_transformer.safetensors", args.export_dir / f"{name}_text.safetensors"]
    export(r.ema.transformer, paths[0])
    export(r.ema.text, paths[1])
    log(event="exported", paths=[str(p) for p in paths], train_wall=round(r.wall, 1))


if __name__ == "__main__":
    main()
