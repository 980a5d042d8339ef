"""Evaluate a demo CogView on the shapes world's seeded prompt set (models.demo.prompts).

    python benchmarks/cogview_demo_eval.py \\
        --transformer models/demo/weights/cogview_transformer.safetensors \\
        --vqvae models/demo/weights/cogview_vqvae.safetensors [--n 270] [--json out.json]

Reports, on the first n of the 270 seeded prompts (all of them by default):
- VQ-VAE round trip of fresh renders, judged (the ceiling of text-to-image);
- text-to-image alignment accuracy (all four attributes, per attribute, seen / unseen), English
  and Chinese, and seconds per 64 px image;
- self-reranking over k candidates (seeds seed, seed+1, ...) by caption log-likelihood: top-1,
  a random candidate (expected), and the oracle;
- captioning of fresh renders: fraction that parse to the true attributes (English, Chinese);
- 2x super-resolution of fresh 64 px renders, with and without the prompt: attributes kept and
  edge sharpness vs bicubic (models.demo.metrics.sr_report).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch

from models.cogview.pipeline import load_cogview_pipeline
from models.demo.judge import judge
from models.demo.metrics import accuracy_report, caption_report, rerank_report, sr_report
from models.demo.prompts import eval_prompts
from models.demo.world import render
from models.interface import ImageRequest

FIELDS = ("bg", "color", "shape", "position")


def line(name: str, rep: dict[str, Any]) -> str:
    per = rep["per_attribute"]
    seen, unseen = rep["seen"]["accuracy"], rep["unseen"]["accuracy"]
    return (
        f"{name:<34}" + "".join(f"{per[k]:>9.1%}" for k in FIELDS) + f"{rep['accuracy']:>9.1%}"
        + f"{seen:>9.1%}" + (f"{unseen:>9.1%}" if unseen is not None else f"{'-':>9}")
    )  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--transformer")
    ap.add_argument("--vqvae")
    ap.add_argument("--n", type=int, default=270)
    ap.add_argument("--k", type=int, default=4, help="candidates per prompt for reranking")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip", nargs="*", default=[], choices=("t2i", "zh", "rerank", "caption", "sr"))
    ap.add_argument("--sr-n", type=int, default=60, help="prompts for super-resolution (slow: 9 windows)")
    ap.add_argument("--json", help="also write every number here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ckpt = {k: v for k, v in (("transformer", args.transformer), ("vqvae", args.vqvae)) if v}
    pipe = load_cogview_pipeline("demo-cogview", ckpt)
    prompts = eval_prompts(args.n)
    truth = [p.attrs for p in prompts]
    out: dict[str, Any] = {"n": len(prompts), "checkpoints": ckpt}
    print(f"{'':<34}" + "".join(f"{k:>9}" for k in (*FIELDS, "all", "seen", "unseen")))
    real = [render(p.attrs, 64, p.seed) for p in prompts]
    out["judge_on_renders"] = accuracy_report(truth, [judge(im) for im in real])
    print(line("real renders (judge)", out["judge_on_renders"]))
    rec = pipe.vqvae.codes_to_images(pipe.vqvae.images_to_codes(real, 64))
    out["vq_round_trip"] = accuracy_report(truth, [judge(im) for im in rec])
    print(line("VQ-VAE round trip", out["vq_round_trip"]))

    def generate(lang: str, offset: int = 0) -> tuple[list, float]:
        reqs = [ImageRequest(p.text(lang), p.seed + offset, 64, 64, 0, 0.0) for p in prompts]
        t = time.perf_counter()
        ims = [im for k in range(0, len(reqs), args.batch) for im in pipe.generate(reqs[k : k + args.batch])]
        return ims, (time.perf_counter() - t) / len(reqs)

    for lang in ("en", "zh"):
        if "t2i" in args.skip or (lang == "zh" and "zh" in args.skip):
            continue
        ims, dt = generate(lang)
        rep = accuracy_report(truth, [judge(im) for im in ims])
        rep["seconds_per_image"] = dt
        out[f"t2i_{lang}"] = rep
        print(line(f"text-to-image {lang} ({dt:.3f} s/img)", rep))
        if lang == "en" and "rerank" not in args.skip:
            t = time.perf_counter()
            cands = [ims] + [generate(lang, off)[0] for off in range(1, args.k)]
            correct, scores, best = [], [], []
            for i, p in enumerate(prompts):
                c = [cands[j][i] for j in range(args.k)]
                s = pipe.score(p.text(lang), c)
                correct.append([judge(im) == p.attrs for im in c])
                scores.append(s)
                best.append(judge(c[int(np.argmax(s))]))
            rep = accuracy_report(truth, best)
            rep.update(rerank_report(correct, scores))
            rep["seconds_per_image"] = dt + (time.perf_counter() - t) / len(prompts)  # k candidates + scoring
            out[f"rerank{args.k}_{lang}"] = rep
            print(line(f"t2i {lang}, best of {args.k} ({rep['seconds_per_image']:.3f} s/img)", rep))
            print(f"  random candidate {rep['random_accuracy']:.1%}, oracle {rep['oracle_accuracy']:.1%}")

    if "caption" not in args.skip:
        for lang in ("en", "zh"):
            t = time.perf_counter()
            caps: list[str] = []
            for k in range(0, len(real), args.batch):
                seeds = [p.seed for p in prompts[k : k + args.batch]]
                caps.extend(pipe.caption(real[k : k + args.batch], lang, seeds))
            rep = caption_report(caps, truth)
            rep["seconds_per_image"] = (time.perf_counter() - t) / len(real)
            rep["examples"] = caps[:3]
            out[f"caption_{lang}"] = rep
            print(
                line(f"captions {lang} parse right", rep) + f"   parse rate {rep['parse_rate']:.1%}  e.g. {caps[0]!r}"
            )

    if "sr" not in args.skip:
        sub = prompts[: args.sr_n]
        lows = real[: args.sr_n]
        for key, texts in (("sr", [p.en for p in sub]), ("sr_no_prompt", [""] * len(sub))):
            t = time.perf_counter()
            highs = [im for k in range(0, len(lows), args.batch)
                     for im in pipe.upscale(lows[k : k + args.batch], texts[k : k + args.batch],
                                            [p.seed for p in sub[k : k + args.batch]])]  # fmt: skip
            rep = sr_report(highs, lows, [p.attrs for p in sub])
            rep["seconds_per_image"] = (time.perf_counter() - t) / len(lows)
            out[key] = rep
            how = "with the prompt" if key == "sr" else "without a prompt"
            print(f"super-resolution 64->128 on {len(lows)} {how}: attributes kept {rep['attributes_kept']:.1%}, "
                  f"edge sharpness {rep['sharpness_sr']:.1f} vs bicubic {rep['sharpness_bicubic']:.1f} "
                  f"(ratio {rep['sharpness_ratio']:.2f}; grain share {rep['grain_share_sr']:.2f} vs "
                  f"{rep['grain_share_bicubic']:.2f}), consistency PSNR {rep['consistency_psnr_sr']:.1f} dB "
                  f"vs bicubic {rep['consistency_psnr_bicubic']:.1f} dB, "
                  f"{rep['seconds_per_image']:.2f} s/img")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=str)


if __name__ == "__main__":
    main()
