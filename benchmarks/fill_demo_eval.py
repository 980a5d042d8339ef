"""Evaluate the demo Fill (inpainting) model on fresh shapes-world scenes.

    python benchmarks/fill_demo_eval.py [--weights models/demo/weights] [--n 60]

Each scene's object is masked (its box plus 3 px) and the prompt asks for another colour there,
as tests/test_image_tasks.py does through the API. Prints, judged: the masked object takes the
prompt's colour; background and position are kept; all four attributes match the prompt; and
the mean absolute change of the unmasked pixels (0-255; the autoencoder round trip is its floor).
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch

from models.demo.captions import caption
from models.demo.judge import judge
from models.demo.world import COLORS, object_box_mask, render, sample_attributes
from models.interface import ImageRequest
from models.loading import load_pipeline


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="models/demo/weights")
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    w = args.weights
    pipe = load_pipeline("flux", "demo-flux1-fill", {"transformer": f"{w}/fill_transformer.safetensors",
                                                     "text_encoder": f"{w}/fill_text.safetensors",
                                                     "autoencoder": f"{w}/ae_flux1.safetensors"})  # fmt: skip
    rng = np.random.default_rng(args.seed)
    requests, wanted, sources, masks = [], [], [], []
    for i in range(args.n):
        attrs = sample_attributes(rng)
        source = render(attrs, 64, seed=i)
        mask = object_box_mask(source)
        others = [c for c in COLORS if c != attrs.color]
        target = dataclasses.replace(attrs, color=others[int(rng.integers(len(others)))])
        requests.append(ImageRequest(caption(target), i, 64, 64, 20, 3.5, task="inpaint", images=(source,),
                                     mask=mask.convert("RGB")))  # fmt: skip
        wanted.append(target)
        sources.append(source)
        masks.append(mask)
    outs = [im for k in range(0, len(requests), 20) for im in pipe.generate(requests[k : k + 20])]
    seen = [judge(im) for im in outs]
    colour = np.mean([s.color == t.color for s, t in zip(seen, wanted, strict=True)])
    kept = np.mean([(s.bg, s.position) == (t.bg, t.position) for s, t in zip(seen, wanted, strict=True)])
    four = np.mean([s == t for s, t in zip(seen, wanted, strict=True)])
    outside = np.mean([
        np.abs(np.asarray(o.convert("RGB"), float) - np.asarray(s, float))[np.asarray(m) == 0].mean()
        for o, s, m in zip(outs, sources, masks, strict=True)
    ])  # fmt: skip
    print(f"fill on {args.n} scenes: prompt's colour {colour:.2f}, background and position kept {kept:.2f}, "
          f"all four {four:.2f}, unmasked pixels changed by {outside:.2f}/255 on average")


if __name__ == "__main__":
    main()
