"""The seam between workers and model families: what a pipeline is asked for and what it returns.

A worker groups compatible jobs (same variant, task, size, reference count) into one batch and
hands the pipeline a list of `ImageRequest`s, one per output image. Every request carries its own
seed, steps and guidance, so an image never depends on what else was in its batch.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from PIL import Image


@dataclass(frozen=True)
class ImageRequest:
    prompt: str
    seed: int
    width: int
    height: int
    steps: int
    guidance: float
    task: str = "text-to-image"
    # Task inputs (reference images, inpainting image + mask, an image to upscale or caption).
    images: tuple[Image.Image, ...] = field(default=(), compare=False)
    mask: Image.Image | None = field(default=None, compare=False)


# Called after every denoising step (or every decoded token block) with (step, total) for each
# request still running. Returns the indices (into the request list) to stop now, e.g. because
# their job was cancelled; stopped requests come back as None.
StepCallback = Callable[[int, int], Collection[int] | None]


class Pipeline(Protocol):
    """A loaded model variant that turns a batch of compatible requests into images."""

    def generate(
        self, requests: Sequence[ImageRequest], on_step: StepCallback | None = None
    ) -> list[Image.Image | None]: ...
