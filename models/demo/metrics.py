"""Shapes-world metrics: alignment accuracy, caption accuracy, reranking, super-resolution sharpness.

Everything here takes plain callables and PIL images, so the same code backs `fluxgate eval`
for every model family and needs no model import.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image

from models.demo.captions import parse_caption
from models.demo.judge import judge
from models.demo.prompts import EvalPrompt, eval_prompts
from models.demo.world import Attributes, is_held_out, render

ATTRIBUTES = ("bg", "color", "shape", "position")

# (prompt text, seed) pairs in -> one image per pair out (None where generation failed).
GenerateFn = Callable[[list[tuple[str, int]]], Sequence[Image.Image | None]]
# Images in -> one caption per image out.
CaptionFn = Callable[[list[Image.Image]], Sequence[str]]


def _bucket(truth: Sequence[Attributes], predicted: Sequence[Attributes | None]) -> dict[str, Any]:
    n = len(truth)
    if n == 0:
        return {"n": 0, "accuracy": None, "per_attribute": {k: None for k in ATTRIBUTES}}
    per = {
        k: sum(p is not None and getattr(p, k) == getattr(t, k) for t, p in zip(truth, predicted, strict=True)) / n
        for k in ATTRIBUTES
    }
    return {"n": n, "accuracy": sum(t == p for t, p in zip(truth, predicted, strict=True)) / n, "per_attribute": per}


def accuracy_report(truth: Sequence[Attributes], predicted: Sequence[Attributes | None]) -> dict[str, Any]:
    """Alignment accuracy (all four attributes right), per attribute, and seen vs unseen.

    A None prediction (no image, unparseable caption) counts as wrong on every attribute, so a
    model cannot raise its score by failing on hard prompts.
    """
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} targets but {len(predicted)} predictions")
    seen = [i for i, t in enumerate(truth) if not is_held_out(t)]
    unseen = [i for i, t in enumerate(truth) if is_held_out(t)]
    report = _bucket(truth, predicted)
    report["seen"] = _bucket([truth[i] for i in seen], [predicted[i] for i in seen])
    report["unseen"] = _bucket([truth[i] for i in unseen], [predicted[i] for i in unseen])
    return report


def evaluate(
    generate_fn: GenerateFn,
    prompts: Sequence[EvalPrompt] | None = None,
    language: str = "en",
    batch_size: int = 8,
    judge_fn: Callable[[Image.Image], Attributes] = judge,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Generate one image per prompt, judge it, and report accuracy and seconds per image.

    Seconds per image counts only the time inside `generate_fn` (not judging), averaged over all
    prompts, so it is the generator's throughput at this batch size.
    """
    prompts = list(eval_prompts() if prompts is None else prompts)
    predicted: list[Attributes | None] = []
    gen_seconds = 0.0
    failed = 0
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        t0 = time.perf_counter()
        images = list(generate_fn([(p.text(language), p.seed) for p in chunk]))
        gen_seconds += time.perf_counter() - t0
        if len(images) != len(chunk):
            raise ValueError(f"generate_fn returned {len(images)} images for {len(chunk)} prompts")
        for image in images:
            failed += image is None
            predicted.append(None if image is None else judge_fn(image))
        if progress is not None:
            progress(len(predicted), len(prompts))
    report = accuracy_report([p.attrs for p in prompts], predicted)
    report.update(
        language=language,
        failed=failed,
        seconds_per_image=gen_seconds / max(len(prompts), 1),
    )
    return report


def caption_report(captions: Sequence[str], truth: Sequence[Attributes]) -> dict[str, Any]:
    """Fraction of captions that parse to the image's true attributes (and parse at all)."""
    parsed = [parse_caption(c) for c in captions]
    report = accuracy_report(truth, parsed)
    report["parse_rate"] = sum(p is not None for p in parsed) / max(len(parsed), 1)
    return report


def evaluate_captioning(
    caption_fn: CaptionFn,
    prompts: Sequence[EvalPrompt] | None = None,
    size: int = 64,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Caption fresh renders of the prompt set (each drawn with its prompt's seed) and score."""
    prompts = list(eval_prompts() if prompts is None else prompts)
    captions: list[str] = []
    t0 = time.perf_counter()
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        captions.extend(caption_fn([render(p.attrs, size, p.seed) for p in chunk]))
    report = caption_report(captions, [p.attrs for p in prompts])
    report["seconds_per_image"] = (time.perf_counter() - t0) / max(len(prompts), 1)
    return report


def rerank_report(correct: Sequence[Sequence[bool]], scores: Sequence[Sequence[float]]) -> dict[str, float]:
    """Reranking: per prompt, k candidates judged right or wrong and their scores (higher = better,
    e.g. caption log-likelihood). Top-1 accuracy vs the expected accuracy of a random candidate,
    and the oracle (any candidate right) as the ceiling."""
    if not correct:
        raise ValueError("no prompts to rerank")
    top1 = [c[int(np.argmax(s))] for c, s in zip(correct, scores, strict=True)]
    return {
        "top1_accuracy": float(np.mean(top1)),
        "random_accuracy": float(np.mean([np.mean(c) for c in correct])),
        "oracle_accuracy": float(np.mean([any(c) for c in correct])),
    }


# --- super-resolution -------------------------------------------------------------------------


def _luma(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L"), dtype=np.float64)


# Gradients below this (luminance levels per pixel) are not edges anyone sees: see edge_sharpness.
EDGE_FLOOR = 4.0


def _gradient_magnitude(image: Image.Image) -> np.ndarray:
    luma = _luma(image)
    gx = np.diff(luma, axis=1)[:-1, :]  # (H-1, W-1), forward differences on a common grid
    gy = np.diff(luma, axis=0)[:, :-1]
    return np.sqrt(gx**2 + gy**2)


def edge_sharpness(image: Image.Image, floor: float = EDGE_FLOOR) -> float:
    """Edge steepness: sum(|grad L|^2) / sum(|grad L|) over gradients >= `floor`, in luminance
    levels per pixel.

    Why not the plain mean gradient magnitude: across a monotone edge it sums to the edge's
    contrast however blurred the edge is, so it cannot tell sharp from blurry. Weighting each
    gradient by itself gives, for an edge of contrast C spread over w pixels, about C / w: it
    rises as edges get steeper and does not depend on how long the edges are. Why the floor: a
    decoder's faint grain (the demo VQ-VAE's transposed convolutions leave a pattern of about one
    level in flat areas) puts thousands of tiny gradients in the denominator, and the score would
    then measure flatness, not edges; grain is reported on its own (grain_share). Higher is
    sharper; compare images of the same size only. An image without edges scores 0.
    """
    return _edge_and_grain(_gradient_magnitude(image), floor)[0]


def grain_share(image: Image.Image, floor: float = EDGE_FLOOR) -> float:
    """The share of an image's gradient mass below `floor` (faint texture, not edges)."""
    return _edge_and_grain(_gradient_magnitude(image), floor)[1]


def _edge_and_grain(mag: np.ndarray, floor: float = EDGE_FLOOR) -> tuple[float, float]:
    edges = mag[mag >= floor]
    edge_total, total = float(edges.sum()), float(mag.sum())
    steepness = float((edges**2).sum()) / edge_total if edge_total > 0 else 0.0
    return steepness, (total - edge_total) / total if total > 0 else 0.0


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def sr_report(
    sr_images: Sequence[Image.Image],
    low_images: Sequence[Image.Image],
    truth: Sequence[Attributes] | None = None,
) -> dict[str, Any]:
    """Super-resolution outputs vs bicubic upscaling of the same low-resolution inputs.

    - sharpness_ratio: mean edge_sharpness(SR) / mean edge_sharpness(bicubic); > 1 is sharper.
    - grain_share_sr / grain_share_bicubic: how much of each image's gradient is faint texture
      below the edge floor (a real render: ~0.04), so grain the ratio leaves out is still seen.
    - consistency_psnr: the SR output downscaled (Lanczos, as the world renders) back to the input
      size vs the input. Sharpness alone would reward invented edges or noise; this shows the
      output still agrees with what it was given (bicubic's value is the reference).
    - attributes_kept: with `truth`, the judge's all-four accuracy on the SR outputs.
    """
    if len(sr_images) != len(low_images) or not sr_images:
        raise ValueError("need the same, non-zero number of SR outputs and low-res inputs")
    sharp_sr, sharp_bic, psnr_sr, psnr_bic, grain_sr, grain_bic = [], [], [], [], [], []
    for sr, low in zip(sr_images, low_images, strict=True):
        bicubic = low.convert("RGB").resize(sr.size, Image.Resampling.BICUBIC)
        for image, sharp, grain in ((sr, sharp_sr, grain_sr), (bicubic, sharp_bic, grain_bic)):
            steepness, share = _edge_and_grain(_gradient_magnitude(image))
            sharp.append(steepness)
            grain.append(share)
        target = np.asarray(low.convert("RGB"), dtype=np.float64)
        for out, acc in ((sr, psnr_sr), (bicubic, psnr_bic)):
            down = out.convert("RGB").resize(low.size, Image.Resampling.LANCZOS)
            acc.append(_psnr(np.asarray(down, dtype=np.float64), target))
    report: dict[str, Any] = {
        "n": len(sr_images),
        "sharpness_sr": float(np.mean(sharp_sr)),
        "sharpness_bicubic": float(np.mean(sharp_bic)),
        "sharpness_ratio": float(np.mean(sharp_sr) / max(np.mean(sharp_bic), 1e-9)),
        "grain_share_sr": float(np.mean(grain_sr)),
        "grain_share_bicubic": float(np.mean(grain_bic)),
        "consistency_psnr_sr": float(np.median(psnr_sr)),
        "consistency_psnr_bicubic": float(np.median(psnr_bic)),
    }
    if truth is not None:
        report["attributes_kept"] = accuracy_report(truth, [judge(im) for im in sr_images])["accuracy"]
    return report
