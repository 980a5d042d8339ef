"""The jobs of a batch, and a step-level batch: a `DenoiseSession` plus which rows are whose."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from PIL import Image

from models.flux.session import DenoiseSession
from models.interface import ImageRequest
from store.queue import Delivery, WorkQueue
from store.records import Job

# What an out-of-memory looks like: CUDA's allocator error, or Python's on the CPU.
OOM_ERRORS: tuple[type[BaseException], ...] = (torch.cuda.OutOfMemoryError, MemoryError)


@dataclass
class Running:
    """A started job in a batch: its delivery (acked when it finishes) and its images' places."""

    delivery: Delivery
    job: Job
    indices: list[int] = field(default_factory=list)  # request indices (request-level batches)
    handles: list[int] = field(default_factory=list)  # session rows (step-level batches)
    results: dict[int, Image.Image] = field(default_factory=dict)
    canceled: bool = False
    inputs: list[Image.Image] = field(default_factory=list)  # the job's input images, decoded
    failures: int = 0  # pipeline errors while running it alone (a poison job fails after max attempts)
    joined: float = field(default_factory=time.monotonic)


def requests_for(job: Job, inputs: list[Image.Image] | None = None, seeds: list[int] | None = None
                 ) -> list[ImageRequest]:
    """One request per output image. Reference images ride along as `images`; inpainting as
    (image,) + mask."""
    inputs = inputs or []
    images, mask = tuple(inputs), None
    if job.task == "inpaint":
        images, mask = tuple(inputs[:1]), inputs[1]
    return [ImageRequest(prompt=job.prompt, seed=seed, width=job.width, height=job.height, steps=job.steps,
                         guidance=job.guidance, task=job.task, images=images, mask=mask)
            for seed in (seeds if seeds is not None else job.seeds)]


class Batch:
    """A step-level batch of one batch key. Jobs join between steps and leave when done."""

    def __init__(self, key: tuple, session: DenoiseSession) -> None:
        self.key = key
        self.session = session
        self.jobs: list[Running] = []
        self._last_progress = 0.0

    @property
    def images(self) -> int:
        return len(self.session)

    def join(self, batch: list[Running]) -> None:
        for running in batch:
            running.handles = self.session.add(requests_for(running.job))
            running.joined = time.monotonic()
            self.jobs.append(running)

    def step(self) -> list[tuple[Running, list[Image.Image]]]:
        """One forward pass; the jobs whose images are all done, with their images in seed order."""
        owner = {h: running for running in self.jobs for h in running.handles}
        for handle, image in self.session.step():
            owner[handle].results[handle] = image
        done = [r for r in self.jobs if len(r.results) == len(r.handles)]
        self.jobs = [r for r in self.jobs if len(r.results) < len(r.handles)]
        return [(r, [r.results[h] for h in r.handles]) for r in done]

    def shed(self, cap: int) -> list[Running]:
        """After an OOM: the newest jobs leave until at most `cap` images remain (at least one job
        stays, unless cap is 0: all leave). They start over from their noise elsewhere; their
        results are unchanged by it."""
        shed: list[Running] = []
        while self.jobs and self.images > cap and (len(self.jobs) > 1 or cap == 0):
            running = self.jobs.pop()
            self.session.drop(running.handles)
            running.handles, running.results = [], {}
            shed.append(running)
        return shed

    def report_progress(self, queue: WorkQueue, interval_s: float) -> None:
        """Each job's progress is its least advanced image; written at most every interval_s."""
        now = time.monotonic()
        if now - self._last_progress < interval_s or not self.jobs:
            return
        self._last_progress = now
        rows = self.session.progress()
        by_progress: dict[tuple[int, int], list[str]] = {}
        for running in self.jobs:
            pending = [rows[h] for h in running.handles if h in rows]
            if pending:
                by_progress.setdefault(min(pending), []).append(running.job.id)
        for (step, total), job_ids in by_progress.items():
            queue.progress(job_ids, step, total)

    def cancel_requested(self, queue: WorkQueue) -> list[Running]:
        """Jobs whose cancellation was asked for: their rows leave the batch now."""
        flagged = queue.cancel_requested([r.job.id for r in self.jobs])
        if not flagged:
            return []
        gone = [r for r in self.jobs if r.job.id in flagged]
        for running in gone:
            self.session.drop(running.handles)
            running.canceled = True
        self.jobs = [r for r in self.jobs if r.job.id not in flagged]
        return gone
