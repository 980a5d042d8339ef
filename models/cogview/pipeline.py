"""The CogView pipeline: requests -> images, plus captioning, caption scoring and reranking.

Implements `models.interface.Pipeline`. Progress is tokens sampled / tokens to sample over the
whole batch; `on_step` may return request indices to stop, which come back as None. `steps`
and `guidance` of a request do not apply to an autoregressive model and are ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TypeVar

import torch
from PIL import Image
from torch import Tensor

from models.cogview.checkpoint import load_into
from models.cogview.config import CogViewConfig
from models.cogview.presets import build_transformer, build_vqvae, get_config
from models.cogview.sampling import TokenCallback, fill
from models.cogview.tasks import (
    cap_loss,
    caption_prefix,
    caption_scores,
    rerank_order,
    sr_prefix,
    super_resolve,
    t2i_prefix,
)
from models.cogview.text import TextTokenizer, make_text_tokenizer
from models.cogview.transformer import CogViewTransformer
from models.cogview.vqvae import VQVAE
from models.interface import ImageRequest, StepCallback

DEMO_SEED = 20210526  # fixed seed of the interim random demo weights (until a trained demo ships)
TASKS = ("text-to-image", "super-resolution")
M = TypeVar("M", bound=torch.nn.Module)


class CogViewPipeline:
    def __init__(
        self,
        cfg: CogViewConfig,
        transformer: CogViewTransformer,
        vqvae: VQVAE,
        text: TextTokenizer,
        *,
        sr_transformer: CogViewTransformer | None = None,
        caption_transformer: CogViewTransformer | None = None,
        name: str = "cogview",
    ) -> None:
        self.cfg, self.name, self.text = cfg, name, text
        self.transformer = transformer.eval()
        self.vqvae = vqvae.eval()
        # CogView ships SR and captioning as finetunes of the same architecture; without them the
        # base model serves every task (the demo does).
        self.sr_transformer = (sr_transformer or transformer).eval()
        self.caption_transformer = (caption_transformer or transformer).eval()

    # Text ------------------------------------------------------------------------------------
    def text_ids(self, prompt: str) -> list[int]:
        ids = self.text.encode(prompt)[: self.cfg.max_text_tokens]
        return [i + self.cfg.n_image for i in ids]

    def _codes(self, images: Sequence[Image.Image]) -> Tensor:
        return self.vqvae.images_to_codes(list(images), self.cfg.image_size).cpu()

    # Pipeline protocol -----------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self, requests: Sequence[ImageRequest], on_step: StepCallback | None = None
    ) -> list[Image.Image | None]:
        out: list[Image.Image | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            if r.task not in TASKS:
                raise ValueError(f"CogView cannot run task {r.task!r}; it supports {', '.join(TASKS)}")
            self._check_size(r)
            groups.setdefault(r.task, []).append(i)
        g = self.cfg.image_grid
        cost = {"text-to-image": g * g, "super-resolution": 4 * g * g}
        total = sum(cost[t] * len(idx) for t, idx in groups.items())
        offset = 0
        stopped: set[int] = set()
        for task, idx in groups.items():

            def on_token(n: int, idx: list[int] = idx, base: int = offset) -> list[int] | None:
                # Every row samples in lockstep, so n tokens per row means n * len(rows) done.
                if on_step is None:
                    return None
                stop = on_step(base + n * len(idx), total)
                if not stop:
                    return None
                stopped.update(stop)
                return [k for k, i in enumerate(idx) if i in set(stop)]

            reqs = [requests[i] for i in idx]
            images = self._t2i(reqs, on_token) if task == "text-to-image" else self._sr(reqs, on_token)
            for i, im in zip(idx, images, strict=True):
                out[i] = None if i in stopped else im
            offset += cost[task] * len(idx)
        return out

    def _check_size(self, r: ImageRequest) -> None:
        s = self.cfg.image_size * (2 if r.task == "super-resolution" else 1)
        if (r.width, r.height) != (s, s):
            raise ValueError(f"{self.name} makes {s}x{s} images for {r.task}; got {r.width}x{r.height}")
        if r.task == "super-resolution" and not r.images:
            raise ValueError("a super-resolution request needs request.images[0]")

    def _t2i(self, reqs: Sequence[ImageRequest], on_token: TokenCallback | None) -> list[Image.Image | None]:
        prefixes = [t2i_prefix(self.cfg, self.text_ids(r.prompt)) for r in reqs]
        suffix = torch.full((len(reqs), self.cfg.image_tokens), -1, dtype=torch.long)
        gens = [torch.Generator().manual_seed(r.seed) for r in reqs]
        codes, stop = fill(
            self.transformer, prefixes, suffix, gens,
            top_k=self.cfg.top_k, temperature=self.cfg.temperature, on_token=on_token,
        )  # fmt: skip
        return self._decode(codes, stop)

    def _sr(self, reqs: Sequence[ImageRequest], on_token: TokenCallback | None) -> list[Image.Image | None]:
        g = self.cfg.image_grid
        low = self._codes([r.images[0] for r in reqs]).view(-1, g, g)
        prefixes = [sr_prefix(self.cfg, self.text_ids(r.prompt)) for r in reqs]
        gens = [torch.Generator().manual_seed(r.seed) for r in reqs]
        high, stop = super_resolve(
            self.sr_transformer, prefixes, low, gens,
            top_k=self.cfg.top_k, temperature=self.cfg.sr_temperature, on_token=on_token,
        )  # fmt: skip
        return self._decode(high.flatten(1), stop)

    def _decode(self, codes: Tensor, stopped: Tensor) -> list[Image.Image | None]:
        keep = [i for i in range(len(codes)) if not stopped[i]]
        images: list[Image.Image | None] = [None] * len(codes)
        if keep:
            for i, im in zip(keep, self.vqvae.codes_to_images(codes[keep]), strict=True):
                images[i] = im
        return images

    # Other tasks -----------------------------------------------------------------------------
    @torch.no_grad()
    def upscale(
        self, images: Sequence[Image.Image], prompts: Sequence[str] | None = None, seeds: Sequence[int] | None = None
    ) -> list[Image.Image]:
        """Token-space super-resolution: image_size -> 2 x image_size (256 -> 512 released)."""
        s = 2 * self.cfg.image_size
        reqs = [
            ImageRequest(prompts[i] if prompts else "", seeds[i] if seeds else i, s, s, 0, 0.0,
                         task="super-resolution", images=(im,))
            for i, im in enumerate(images)
        ]  # fmt: skip
        return [im for im in self._sr(reqs, None) if im is not None]

    @torch.no_grad()
    def caption(
        self, images: Sequence[Image.Image], language: str = "en", seeds: Sequence[int] | None = None
    ) -> list[str]:
        """Sample caption_tokens text tokens after `[BASE] [BOI1] image [EOI1] [ROI1]`.

        CogView has no language switch: `language` restricts sampling to tokens of that script
        (ASCII for 'en'; CJK allowed for 'zh'). The released captioner only knows Chinese.
        """
        cfg = self.cfg
        codes = self._codes(images)
        allowed = torch.ones(cfg.vocab_size, dtype=torch.bool)
        lang = self.text.language_mask(language)
        allowed[cfg.n_image : cfg.n_image + len(lang)] = lang
        prefixes = [caption_prefix(cfg, c.tolist()) for c in codes]
        suffix = torch.full((len(images), cfg.caption_tokens), -1, dtype=torch.long)
        gens = [torch.Generator().manual_seed(seeds[i] if seeds else i) for i in range(len(images))]
        ids, _ = fill(
            self.caption_transformer, prefixes, suffix, gens,
            top_k=cfg.top_k, temperature=cfg.temperature, allowed_extra=allowed,
        )  # fmt: skip
        return [self.text.decode([t - cfg.n_image for t in row.tolist()]).strip() for row in ids]

    @torch.no_grad()
    def score(self, prompt: str, images: Sequence[Image.Image]) -> list[float]:
        """Summed log p(prompt | image) per image (higher = better match)."""
        return caption_scores(self.caption_transformer, self._codes(images), self.text_ids(prompt)).tolist()

    @torch.no_grad()
    def cap_loss(self, prompt: str, images: Sequence[Image.Image]) -> list[float]:
        text = self.text_ids(prompt)
        scores = caption_scores(self.caption_transformer, self._codes(images), text)
        return cap_loss(scores, len(text)).tolist()

    def rerank(self, prompt: str, images: Sequence[Image.Image]) -> list[int]:
        """Indices of `images` from best to worst caption likelihood (CogView's self-reranking)."""
        return rerank_order(torch.tensor(self.score(prompt, images)))


def _random(build: Callable[[], M], device: str | torch.device, dtype: torch.dtype | None) -> M:
    # A private RNG stream: the demo weights are the same in every process, and building them
    # does not disturb the caller's global seed.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(DEMO_SEED)
        module = build()
    return module.to(device=device, dtype=dtype) if dtype is not None else module.to(device)


def load_cogview_pipeline(
    preset: str,
    checkpoints: Mapping[str, str],
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> CogViewPipeline:
    """Keys: "transformer", "vqvae", "tokenizer" (SentencePiece model; not for byte-level presets),
    optional "transformer-sr" / "transformer-caption" (CogView's finetunes).

    A demo preset with a key missing uses deterministic random weights for that part.
    """
    cfg = get_config(preset)
    if dtype == torch.float16:
        cfg = replace(cfg, pb_relax=True)  # fp16 overflows without it (spec §1.3)
    demo = preset.startswith("demo")
    needed = ("transformer", "vqvae") + (("tokenizer",) if cfg.text_tokenizer == "sentencepiece" else ())
    missing = [k for k in needed if k not in checkpoints]
    if missing and not demo:  # checked before minutes of loading a 4B checkpoint, not after
        raise ValueError(f"CogView preset {preset!r} needs checkpoints {missing}")

    def transformer(key: str) -> CogViewTransformer | None:
        if key not in checkpoints:
            if key != "transformer":
                return None

            def build() -> CogViewTransformer:
                m = build_transformer(cfg, "cpu")
                m.init_weights()
                return m

            return _random(build, device, dtype)
        m = build_transformer(cfg, "meta")
        load_into(m, checkpoints[key], dtype=dtype, device=device)
        return m

    if "vqvae" in checkpoints:
        vq = build_vqvae(cfg.vqvae, device)
        # The VQ-VAE is small (19M); fp32 keeps code assignment independent of serving dtype.
        load_into(vq, checkpoints["vqvae"], dtype=torch.float32, device=device)
    else:
        vq = _random(lambda: build_vqvae(cfg.vqvae, "cpu"), device, None)
    base = transformer("transformer")
    assert base is not None
    text = make_text_tokenizer(cfg.text_tokenizer, checkpoints.get("tokenizer"))
    if cfg.text_tokenizer == "sentencepiece" and text.vocab_size != cfg.text_vocab:
        raise ValueError(f"tokenizer has {text.vocab_size} pieces, preset {preset!r} expects {cfg.text_vocab}")
    return CogViewPipeline(
        cfg, base, vq, text,
        sr_transformer=transformer("transformer-sr"),
        caption_transformer=transformer("transformer-caption"),
        name=preset,
    )  # fmt: skip
