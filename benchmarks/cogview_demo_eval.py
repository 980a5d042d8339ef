"""Evaluate a demo CogView on the shapes world: generation, reranking and VQ round trip.

    python benchmarks/cogview_demo_eval.py --transformer runs/cogview-demo/transformer.safetensors \\
        --vqvae runs/cogview-demo/vqvae.safetensors [--n 60]

Prints, side by side in one run:
- judge accuracy of text-to-image samples per attribute (bg, color, shape, position, all four),
  for English and Chinese prompts, against the VQ-VAE round trip of real renders (the ceiling);
- reranking: how often the caption score prefers an image's own caption over a random other
  one, on renders; and top-1 of self-reranking 4 samples vs the first sample.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from models.cogview.pipeline import load_cogview_pipeline
from models.demo.captions import caption
from models.demo.judge import judge
from models.demo.world import Attributes, render, seen_attributes
from models.interface import ImageRequest

FIELDS = ("bg", "color", "shape", "position")


def accuracy(images, attrs: list[Attributes]) -> dict[str, float]:
    got = [judge(im) for im in images]
    out = {f: float(np.mean([getattr(g, f) == getattr(a, f) for g, a in zip(got, attrs, strict=True)])) for f in FIELDS}
    out["all"] = float(np.mean([g == a for g, a in zip(got, attrs, strict=True)]))
    return out


def row(name: str, acc: dict[str, float]) -> str:
    return f"{name:<28}" + "".join(f"{acc[k]:>9.0%}" for k in (*FIELDS, "all"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--transformer")
    ap.add_argument("--vqvae")
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ckpt = {k: v for k, v in (("transformer", args.transformer), ("vqvae", args.vqvae)) if v}
    pipe = load_cogview_pipeline("demo-cogview", ckpt)
    rng = np.random.default_rng(0)
    pool = seen_attributes()
    attrs = [pool[i] for i in rng.choice(len(pool), args.n, replace=False)]
    real = [render(a, 64, seed=i) for i, a in enumerate(attrs)]
    print(f"{'':<28}" + "".join(f"{k:>9}" for k in (*FIELDS, "all")))
    print(row("real renders (judge)", accuracy(real, attrs)))
    codes = pipe.vqvae.images_to_codes(real, 64)
    print(row("VQ-VAE round trip", accuracy(pipe.vqvae.codes_to_images(codes), attrs)))
    for lang in ("en", "zh"):
        reqs = [ImageRequest(caption(a, lang), i, 64, 64, 0, 0.0) for i, a in enumerate(attrs)]
        t = time.perf_counter()
        images = [im for k in range(0, len(reqs), 16) for im in pipe.generate(reqs[k : k + 16])]
        dt = (time.perf_counter() - t) / len(reqs)
        print(row(f"text-to-image {lang} ({dt * 1e3:.0f} ms/img)", accuracy(images, attrs)))

    # Caption likelihood: own caption vs another image's caption, on real renders.
    wins = 0
    for i, a in enumerate(attrs):
        other = attrs[(i + 1 + int(rng.integers(len(attrs) - 1))) % len(attrs)]
        lang = "en" if i % 2 else "zh"
        own, wrong = pipe.cap_loss(caption(a, lang), [real[i]])[0], pipe.cap_loss(caption(other, lang), [real[i]])[0]
        wins += own < wrong
    print(f"caption loss prefers the true caption: {wins / len(attrs):.0%} of {len(attrs)}")

    # Self-reranking: 4 samples per prompt, keep the best by caption score.
    first, best = [], []
    for i, a in enumerate(attrs[:20]):
        p = caption(a, "en")
        ims = pipe.generate([ImageRequest(p, 100 * i + s, 64, 64, 0, 0.0) for s in range(4)])
        first.append(ims[0])
        best.append(ims[pipe.rerank(p, ims)[0]])
    print(row("t2i en, first of 4", accuracy(first, attrs[:20])))
    print(row("t2i en, reranked best of 4", accuracy(best, attrs[:20])))


if __name__ == "__main__":
    main()
