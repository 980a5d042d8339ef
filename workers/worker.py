"""The worker process: read jobs from the variant streams, batch them, run pipelines, store results.

One worker per device. Its loop: reclaim entries of dead workers, read up to a batch of entries
(waiting a few ms for the batch to fill), take each job (start.lua), group by batch key, run each
group through its variant's pipeline with per-step progress and cancellation, store the images,
then finish.lua marks the job and acks its entry in one step.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

import redis

from models.interface import ImageRequest, Pipeline
from store.queue import Delivery, WorkQueue
from store.records import Job, JobStatus
from workers.encode import encode_image
from workers.settings import WorkerSettings

log = logging.getLogger("fluxgate.worker")


@dataclass
class _Running:
    """A job in the batch being run: its delivery and which requests (images) belong to it."""

    delivery: Delivery
    job: Job
    indices: list[int] = field(default_factory=list)
    canceled: bool = False


class Worker:
    def __init__(self, settings: WorkerSettings, pipelines: Mapping[str, Pipeline]) -> None:
        self.settings = settings
        self.pipelines = dict(pipelines)
        name = settings.worker_name or f"{socket.gethostname()}-{os.getpid()}"
        self.queue = WorkQueue(settings.redis_url, name, list(self.pipelines), settings.retention_s)
        self.stop = threading.Event()
        self._last_reclaim = 0.0
        self._loaded = False  # the last read found more than one job waiting

    # -- the loop -----------------------------------------------------------------------------
    def run(self) -> None:
        self._wait_for_redis()
        self.queue.ensure_groups()
        beat = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        beat.start()
        log.info("worker %s serving %s", self.queue.consumer, ", ".join(self.pipelines))
        try:
            while not self.stop.is_set():
                try:
                    self.run_once(block_ms=500)
                except redis.ConnectionError as err:
                    # Redis restarting or unreachable: keep the loop, retry after a pause. Nothing is
                    # lost: unacked entries stay pending and are redelivered.
                    log.warning("redis unavailable (%s); retrying", err)
                    self.stop.wait(1.0)
        finally:
            try:
                self.queue.retire()
            except redis.ConnectionError:
                pass

    def _wait_for_redis(self) -> None:
        while not self.stop.is_set():
            try:
                self.queue.redis.ping()
                return
            except redis.ConnectionError:
                self.stop.wait(0.5)

    def _heartbeat_loop(self) -> None:
        while not self.stop.is_set():
            try:
                self.queue.heartbeat(self.settings.worker_heartbeat_ttl_s)
            except redis.ConnectionError:
                pass
            self.stop.wait(self.settings.worker_heartbeat_s)

    def run_once(self, block_ms: int) -> int:
        """One read-batch-run cycle; returns how many jobs it ran."""
        deliveries = self._reclaim_if_due()
        cap = self.settings.worker_max_batch
        if len(deliveries) < cap:
            deliveries += self.queue.read(cap - len(deliveries), block_ms)
        loaded = len(deliveries) > 1 or self._loaded
        self._loaded = len(deliveries) > 1
        if deliveries and len(deliveries) < cap and loaded and self.settings.worker_batch_wait_ms:
            # Under load, a few ms of waiting fills the batch: many images per forward pass. A lone
            # job on an idle queue does not wait: the wait would be pure latency.
            time.sleep(self.settings.worker_batch_wait_ms / 1000)
            deliveries += self.queue.read(cap - len(deliveries), None)
        runnable = [r for r in map(self._take, deliveries) if r is not None]
        groups: dict[tuple, list[_Running]] = defaultdict(list)
        for running in runnable:
            groups[running.job.batch_key].append(running)
        for group in groups.values():
            for batch in _chunks_by_images(group, cap):
                self._run_batch(batch)
        return len(runnable)

    def _reclaim_if_due(self) -> list[Delivery]:
        now = time.monotonic()
        if now - self._last_reclaim < self.settings.worker_heartbeat_s:
            return []
        self._last_reclaim = now
        min_idle_ms = int(self.settings.worker_heartbeat_ttl_s * 1000)
        return self.queue.reclaim(min_idle_ms)

    def _take(self, delivery: Delivery) -> _Running | None:
        """Start the delivered job, or ack an entry whose job needs no run (canceled, finished)."""
        state = self.queue.start(delivery)
        if state != "run":
            self.queue.ack(delivery)
            return None
        job = self.queue.load(delivery.job_id)
        if job is None:
            self.queue.ack(delivery)
            return None
        if job.attempts > self.settings.worker_max_attempts:
            error = (f"the job was started {job.attempts - 1} times and its worker stopped each time; "
                     "it is not retried again")
            self.queue.finish(delivery, job, JobStatus.FAILED, error=error)
            return None
        return _Running(delivery, job)

    # -- one batch ----------------------------------------------------------------------------
    def _run_batch(self, batch: list[_Running]) -> None:
        requests: list[ImageRequest] = []
        for running in batch:
            job = running.job
            for seed in job.seeds:
                running.indices.append(len(requests))
                requests.append(ImageRequest(
                    prompt=job.prompt, seed=seed, width=job.width, height=job.height,
                    steps=job.steps, guidance=job.guidance, task=job.task,
                ))
        pipeline = self.pipelines[batch[0].job.variant]
        on_step = _ProgressReporter(self.queue, batch, self.settings.worker_progress_interval_s)
        started = time.monotonic()
        try:
            images = pipeline.generate(requests, on_step)
        except Exception as err:  # a pipeline bug must fail its jobs, not kill the worker
            log.exception("batch of %d jobs failed", len(batch))
            for running in batch:
                self.queue.finish(running.delivery, running.job, JobStatus.FAILED,
                                  error=f"generation failed: {type(err).__name__}: {err}")
            return
        elapsed = time.monotonic() - started
        expires_at = time.time() + self.settings.retention_s
        for running in batch:
            job = running.job
            if running.canceled:
                self.queue.finish(running.delivery, job, JobStatus.CANCELED)
                continue
            outputs = [images[i] for i in running.indices]
            encoded = [encode_image(img, job.output_format) for img in outputs if img is not None]
            self.queue.store_images(job.id, encoded)
            self.queue.finish(running.delivery, job, JobStatus.SUCCEEDED, images=len(encoded),
                              expires_at=f"{expires_at:.3f}", run_seconds=f"{elapsed:.4f}",
                              progress_step=job.steps, progress_total=job.steps)


class _ProgressReporter:
    """The pipeline's per-step callback: progress events (throttled) and cancellation."""

    def __init__(self, queue: WorkQueue, batch: list[_Running], interval_s: float) -> None:
        self.queue = queue
        self.batch = batch
        self.interval_s = interval_s
        self._last = 0.0

    def __call__(self, step: int, total: int) -> list[int]:
        active = [r for r in self.batch if not r.canceled]
        now = time.monotonic()
        if now - self._last >= self.interval_s or step == total:
            self._last = now
            self.queue.progress([r.job.id for r in active], step, total)
        stop: list[int] = []
        for job_id in self.queue.cancel_requested([r.job.id for r in active]):
            for running in active:
                if running.job.id == job_id:
                    running.canceled = True
                    stop += running.indices
        return stop


def _chunks_by_images(group: list[_Running], cap: int) -> list[list[_Running]]:
    """Split jobs into batches of at most `cap` images (a job's images stay together)."""
    batches: list[list[_Running]] = [[]]
    size = 0
    for running in group:
        if batches[-1] and size + running.job.n > cap:
            batches.append([])
            size = 0
        batches[-1].append(running)
        size += running.job.n
    return [b for b in batches if b]
