"""The fixed, seeded evaluation prompt set: every one of the 270 combinations, each with a seed.

Numbers reported in the README must be reproducible by anyone, so the set depends on nothing but
`seed` and `n`: same arguments, same prompts, same per-image seeds, in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.demo.captions import caption_en, caption_zh
from models.demo.world import Attributes, all_attributes, is_held_out

DEFAULT_EVAL_SEED = 20240601


@dataclass(frozen=True)
class EvalPrompt:
    attrs: Attributes
    en: str
    zh: str
    seed: int  # the generator's seed for this image

    @property
    def held_out(self) -> bool:
        return is_held_out(self.attrs)

    def text(self, language: str = "en") -> str:
        if language not in ("en", "zh"):
            raise ValueError(f"unknown prompt language {language!r} (expected 'en' or 'zh')")
        return self.en if language == "en" else self.zh


def eval_prompts(n: int | None = None, seed: int = DEFAULT_EVAL_SEED) -> list[EvalPrompt]:
    """The evaluation set. n=None: all 270 combinations once.

    The combinations come in a seeded shuffled order, so a quick run on the first n < 270 is a
    roughly balanced sample rather than all white backgrounds; n > 270 repeats the whole set with
    fresh image seeds (every combination k times before any k+1 times).
    """
    combos = all_attributes()
    total = len(combos) if n is None else n
    if total < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    order = np.random.default_rng(seed).permutation(len(combos))
    prompts = []
    for i in range(total):
        attrs = combos[int(order[i % len(combos)])]
        # Each image's seed derives from (seed, index) alone, so the first k prompts of any
        # larger set are exactly the set of size k.
        image_seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0] >> 1)
        prompts.append(EvalPrompt(attrs, caption_en(attrs), caption_zh(attrs), image_seed))
    return prompts
