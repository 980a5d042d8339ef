"""Tasks beyond a plain batch of images: upscale, caption, rank, and generation with reranking.
Each takes one job and returns (images to store, the job's `result` or None)."""

from __future__ import annotations

from typing import Any

from PIL import Image

from store.records import Job
from workers.batch import requests_for

# Tasks that take one job per model call (their inputs differ per job: nothing to batch on).
ONE_JOB_TASKS = frozenset({"caption", "rank", "upscale"})
_RERANK_SEED_STRIDE = 1_000_003  # candidate j of the image with seed s uses s + j * stride


def run_task(pipeline: Any, job: Job, inputs: list[Image.Image]) -> tuple[list[Image.Image], dict | None]:
    if job.task == "upscale":
        return pipeline.upscale(inputs, prompts=[job.prompt] * len(inputs), seeds=job.seeds[: len(inputs)]), None
    if job.task == "caption":
        return [], {"captions": pipeline.caption(inputs, language=job.params.get("language", "en"),
                                                 seeds=job.seeds[:1] * len(inputs))}
    if job.task == "rank":
        scores = pipeline.score(job.prompt, inputs)
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        return [], {"scores": scores, "order": order}
    k = int(job.params.get("rerank", 1))
    return _generate_reranked(pipeline, job, inputs, k)


def _generate_reranked(pipeline: Any, job: Job, inputs: list[Image.Image], k: int
                       ) -> tuple[list[Image.Image], dict]:
    """k candidates per image; keep the one whose caption likelihood of the prompt is highest."""
    best: list[Image.Image] = []
    best_scores: list[float] = []
    for seed in job.seeds:
        seeds = [seed + j * _RERANK_SEED_STRIDE for j in range(k)]
        candidates = pipeline.generate(requests_for(job, inputs, seeds))
        scores = pipeline.score(job.prompt, candidates)
        winner = max(range(k), key=lambda j: scores[j])
        best.append(candidates[winner])
        best_scores.append(scores[winner])
    return best, {"candidates_per_image": k, "scores": best_scores}
