"""The worker process: read jobs from the variant streams, batch them, run pipelines, store results.

One worker per device. Its loop: reclaim entries of dead workers, read new entries into a local
scheduler (at most a batch ahead), pick the best batch key (priority with aging), then either
- request-level batching: run the chosen jobs as one `generate` call, or
- step-level batching (distilled FLUX text-to-image): keep a `DenoiseSession` running and let jobs
  of the same key join it between steps, each leaving as soon as its own steps are done.
A job is started (start.lua) only when it is taken into a batch, so a job whose deadline passed
while it waited expires without running, and a cancelled one is never run.
"""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

import redis
import torch
from PIL import Image

from models.flux.session import DenoiseSession, supports_sessions
from models.interface import ImageRequest, Pipeline
from store.queue import WorkQueue
from store.records import JobStatus
from store.tiers import load_tiers
from workers.batch import OOM_ERRORS, Batch, Running, requests_for
from workers.encode import encode_image
from workers.memory import MemoryModel, process_peak
from workers.metrics import WorkerMetrics
from workers.scheduler import Pending, Scheduler
from workers.settings import WorkerSettings
from workers.tasks import ONE_JOB_TASKS, run_task
from workers.webhooks import WebhookDispatcher

log = logging.getLogger("fluxgate.worker")


class Worker:
    def __init__(self, settings: WorkerSettings, pipelines: Mapping[str, Pipeline],
                 memory: MemoryModel | None = None) -> None:
        self.settings = settings
        self.pipelines = dict(pipelines)
        name = settings.worker_name or f"{socket.gethostname()}-{os.getpid()}"
        priorities = [tier.priority for tier in load_tiers(settings.tiers or None).values()]
        self.queue = WorkQueue(settings.redis_url, name, list(self.pipelines), settings.retention_s, priorities)
        self.memory = memory or MemoryModel(budget=2**62, operator_cap=self.max_batch)
        self.scheduler = Scheduler(settings.worker_aging_per_s)
        self.metrics = WorkerMetrics()
        self.device = torch.device(settings.device)
        self.session: Batch | None = None
        self.stop = threading.Event()
        self._last_reclaim = 0.0
        self._loaded = False  # the last read found more than one job waiting

    @property
    def max_batch(self) -> int:
        return 1 if self.settings.worker_batching == "off" else self.settings.worker_max_batch

    # -- the loop -----------------------------------------------------------------------------
    def run(self) -> None:
        self._wait_for_redis()
        self.queue.ensure_groups()
        beat = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        beat.start()
        hooks = WebhookDispatcher(self.settings.redis_url, self.queue.consumer, self.stop,
                                  self.settings.worker_webhook_attempts, self.settings.worker_webhook_backoff_s,
                                  self.settings.webhook_allow_private, self.settings.worker_webhook_claim_idle_s)
        threading.Thread(target=hooks.run, name="webhooks", daemon=True).start()
        log.info("worker %s serving %s (batching %s)", self.queue.consumer, ", ".join(self.pipelines),
                 self.settings.worker_batching)
        try:
            while not self.stop.is_set():
                try:
                    self.run_once(block_ms=500)
                except redis.ConnectionError as err:
                    # Redis restarting or unreachable: keep the loop, retry after a pause. Nothing is
                    # lost: unacked entries stay pending and are redelivered.
                    log.warning("redis unavailable (%s); retrying", err)
                    self._forget_local_work()
                    self.stop.wait(1.0)
                except Exception:  # a bug must not take the worker down; its jobs stay pending
                    log.exception("unexpected error in the worker loop")
                    self.stop.wait(1.0)
        finally:
            try:
                self.queue.retire()
            except redis.ConnectionError:
                pass

    def _forget_local_work(self) -> None:
        """After a Redis error mid-batch, the jobs this worker had taken (a batch, a session, read-ahead
        entries) stay pending under its own consumer name, where reclaim (dead consumers only) never
        looks: drop them locally and read the own pending list again, so they run once Redis is back."""
        self.session = None
        self.scheduler.pending.clear()
        self.queue.reread_pending()

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
                self.queue.write_metrics(self.metrics.snapshot())
            except redis.ConnectionError:
                pass
            self.stop.wait(self.settings.worker_heartbeat_s)

    def run_once(self, block_ms: int) -> None:
        """One scheduling round: fill the local queue, then run one batch or one session step."""
        idle = self.session is None and not self.scheduler
        self._fill(block_ms if idle else None)
        if self.session is not None:
            self._session_step()
            return
        key = self.scheduler.next_key()
        if key is None:
            return
        batch = self._start(self.scheduler.take(key, self.memory.cap(key)))
        if not batch:
            return
        # A redelivered job (its worker died while running it) runs alone: if it is what kills
        # workers, it must not take good jobs down with it again and use up their attempts.
        for running in [r for r in batch if r.job.attempts > 1]:
            batch.remove(running)
            if key[1] in ONE_JOB_TASKS:
                self._run_task(running)
            else:
                self._run_whole(key, [running])
        if not batch:
            return
        pipeline = self.pipelines[key[0]]
        task = key[1]
        if task in ONE_JOB_TASKS or any(r.job.params.get("rerank") for r in batch):
            for running in batch:  # one job at a time: each is one model call already
                self._run_task(running)
            return
        if self.settings.worker_batching == "step" and task == "text-to-image" and supports_sessions(pipeline):
            self.session = Batch(key, DenoiseSession(pipeline, key[2], key[3]))  # type: ignore[arg-type]
            self._join(batch)
            self._session_step()
        else:
            self._run_whole(key, batch)

    # -- reading and starting -----------------------------------------------------------------
    def _fill(self, block_ms: int | None) -> None:
        """Read new entries into the scheduler, keeping at most about one batch read ahead (entries
        read but not run age in the pending list; see the heartbeat-based reclaim)."""
        room = self.max_batch - len(self.scheduler)
        deliveries = self._reclaim_if_due()
        if room > 0:
            deliveries += self.queue.read(room, block_ms)
        loaded = len(deliveries) > 1 or self._loaded
        self._loaded = len(deliveries) > 1
        if deliveries and self.session is None and loaded and self.settings.worker_batch_wait_ms:
            # Under load, a few ms of waiting fills the batch: many images per forward pass. A lone
            # job on an idle queue does not wait: the wait would be pure latency.
            time.sleep(self.settings.worker_batch_wait_ms / 1000)
            deliveries += self.queue.read(max(1, room - len(deliveries)), None)
        for delivery in deliveries:
            job = self.queue.load(delivery.job_id)
            if job is None:
                self.queue.ack(delivery)
            else:
                self.scheduler.add([Pending(delivery, job)])

    def _reclaim_if_due(self) -> list:
        now = time.monotonic()
        if now - self._last_reclaim < self.settings.worker_heartbeat_s:
            return []
        self._last_reclaim = now
        return self.queue.reclaim(int(self.settings.worker_heartbeat_ttl_s * 1000))

    def _start(self, chosen: list[Pending]) -> list[Running]:
        """Start each chosen job (start.lua); drop (ack) those cancelled, expired or already done."""
        batch = []
        for item in chosen:
            state, job = self.queue.start(item.delivery, item.job)
            if state != "run" or job is None:
                self.queue.ack(item.delivery)
                continue
            if job.attempts > self.settings.worker_max_attempts:
                self.queue.finish(item.delivery, job, JobStatus.FAILED,
                                  error=f"the job was started {job.attempts - 1} times and its worker stopped "
                                        "each time; it is not retried again")
                continue
            self.metrics.queue_wait(job.variant, (job.started_at or time.time()) - job.created_at)
            inputs = [Image.open(io.BytesIO(data)).convert("RGB") if data else None
                      for data in self.queue.load_inputs(job.id, job.inputs)]
            if any(image is None for image in inputs):
                self.queue.finish(item.delivery, job, JobStatus.FAILED,
                                  error="the job's input images expired before it ran")
                continue
            batch.append(Running(item.delivery, job, inputs=inputs))  # type: ignore[arg-type]
        return batch

    # -- request-level batching ---------------------------------------------------------------
    def _run_whole(self, key: tuple, batch: list[Running]) -> None:
        requests = _requests(batch)
        pipeline = self.pipelines[key[0]]
        reporter = _ProgressReporter(self.queue, batch, self.settings.worker_progress_interval_s)
        started = time.monotonic()
        try:
            self._check_fault(len(requests), [r.prompt for r in requests])
            images = pipeline.generate(requests, reporter)
        except OOM_ERRORS as err:
            self._out_of_memory(key, batch, len(requests), err)
            return
        except redis.ConnectionError:
            raise  # Redis, not the job, failed (a progress write): the loop waits for it, the job is kept
        except Exception as err:  # a pipeline error must fail its job, not kill the worker
            self._isolate_failure(key, batch, err)
            return
        elapsed = time.monotonic() - started
        self.metrics.batch(key[0], len(requests), elapsed, max(r.steps for r in requests))
        self.metrics.peak_memory(key[0], process_peak(self.device))
        for running in batch:
            outputs = [images[i] for i in running.indices]
            self._complete(running, outputs, elapsed)

    def _isolate_failure(self, key: tuple, batch: list[Running], err: Exception,
                         retry: Callable[[], None] | None = None) -> None:
        """A batch raised: run its jobs one by one so only a poison job fails; a lone job is tried
        up to worker_max_attempts times (transient errors pass), then fails with the error."""
        if len(batch) > 1:
            log.warning("batch of %d jobs raised %s; running them one by one", len(batch), type(err).__name__)
            for running in batch:
                self._run_whole(key, [running])
            return
        running = batch[0]
        running.failures += 1
        log.warning("job %s failed (%d/%d): %s", running.job.id, running.failures,
                    self.settings.worker_max_attempts, err)
        if running.failures < self.settings.worker_max_attempts:
            (retry or (lambda: self._run_whole(key, batch)))()
            return
        self.metrics.failure(key[0])
        self.queue.finish(running.delivery, running.job, JobStatus.FAILED,
                          error=f"generation failed {running.failures} times: {type(err).__name__}: {err}")

    def _out_of_memory(self, key: tuple, batch: list[Running], size: int, err: BaseException) -> None:
        """Free memory, lower this key's cap to half the failed size, and run the same jobs again in
        batches within the new cap. No job is lost or failed by an OOM."""
        cap = self.memory.lower(key, size)
        log.warning("out of memory at %d images for %s (%s); cap lowered to %d", size, key, err, cap)
        self.metrics.oom(key[0])
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if len(batch) == 1:
            self._run_split(key, batch[0], cap)
            return
        for part in _chunks_by_images(batch, cap):
            self._run_whole(key, part)

    def _run_split(self, key: tuple, running: Running, cap: int) -> None:
        """One job with more images than fit: its images in parts of at most `cap`."""
        requests = requests_for(running.job, running.inputs)
        images: list = []
        started = time.monotonic()
        for start in range(0, len(requests), cap):
            part = requests[start:start + cap]
            try:
                self._check_fault(len(part))
                images += self.pipelines[key[0]].generate(part)
            except OOM_ERRORS as err:
                if cap == 1:
                    self.queue.finish(running.delivery, running.job, JobStatus.FAILED,
                                      error=f"out of memory even for one image: {err}")
                    return
                self._run_split(key, running, self.memory.lower(key, cap))
                return
        self._complete(running, images, time.monotonic() - started)

    def _check_fault(self, images: int, prompts: list[str] = ()) -> None:  # type: ignore[assignment]
        """Fault injection for tests and drills: an OOM above a batch size, and a pipeline error for a
        prompt containing a marker (a poison job), on any device."""
        limit = self.settings.worker_fault_oom_above
        if limit and images > limit:
            raise MemoryError(f"injected out-of-memory: {images} images > {limit}")
        marker = self.settings.worker_fault_poison_marker
        if marker and any(marker in p for p in prompts):
            raise RuntimeError(f"injected pipeline failure for a prompt containing {marker!r}")
        crash = self.settings.worker_fault_crash_marker
        if crash and any(crash in p for p in prompts):
            log.error("injected crash for a prompt containing %r: exiting the process", crash)
            os._exit(70)  # no cleanup, no ack: exactly what a native crash leaves behind

    # -- step-level batching ------------------------------------------------------------------
    def _join(self, batch: list[Running]) -> None:
        assert self.session is not None
        self.session.join(batch)

    def _session_step(self) -> None:
        session = self.session
        assert session is not None
        # Jobs of this key join while it is the scheduler's best key; otherwise the session drains
        # and the better key runs next (a busy key cannot starve the others).
        room = self.memory.cap(session.key) - session.images
        if room > 0 and self.scheduler.next_key() == session.key:
            self._join(self._start(self.scheduler.take(session.key, room)))
        try:
            self._check_fault(session.images, [r.job.prompt for r in session.jobs])
            started = time.monotonic()
            finished = session.step()
            self.metrics.step(session.key[0], session.images, time.monotonic() - started)
            self.metrics.peak_memory(session.key[0], process_peak(self.device))
        except OOM_ERRORS + (Exception,) as err:
            if isinstance(err, redis.ConnectionError):
                raise  # Redis, not the job, failed: see _forget_local_work
            if not isinstance(err, OOM_ERRORS):
                # Not memory: rerun the session's jobs from scratch, one by one, so only a poison job fails.
                self.session = None
                self._isolate_failure(session.key, session.shed(0) + session.jobs, err)
                return
            cap = self.memory.lower(session.key, session.images)
            log.warning("out of memory at %d images in a session (%s); cap lowered to %d", session.images, err, cap)
            self.metrics.oom(session.key[0])
            # The newest jobs leave and run now on their own, in batches within the new cap.
            for part in _chunks_by_images(session.shed(cap), cap):
                self._run_whole(session.key, part)
            return
        session.report_progress(self.queue, self.settings.worker_progress_interval_s)
        for running in session.cancel_requested(self.queue):
            self.queue.finish(running.delivery, running.job, JobStatus.CANCELED)
        for running, images in finished:
            self.queue.progress([running.job.id], running.job.steps, running.job.steps)
            self._complete(running, images, time.monotonic() - running.joined)
        if not session.images:
            self.session = None

    # -- other tasks --------------------------------------------------------------------------
    def _run_task(self, running: Running) -> None:
        """Upscale, caption, rank, or generate with reranking: one job per model call."""
        job = running.job
        pipeline = self.pipelines[job.variant]
        started = time.monotonic()
        try:
            self._check_fault(1, [job.prompt])
            images, result = run_task(pipeline, job, running.inputs)
        except redis.ConnectionError:
            raise  # Redis, not the job, failed: see _forget_local_work
        except Exception as err:
            self._isolate_failure(job.batch_key, [running], err, retry=lambda: self._run_task(running))
            return
        self.metrics.batch(job.variant, max(1, len(running.inputs)), time.monotonic() - started, 1)
        self._complete(running, images, time.monotonic() - started, result)

    # -- results ------------------------------------------------------------------------------
    def _complete(self, running: Running, images: list, elapsed: float, result: dict | None = None) -> None:
        job = running.job
        if running.canceled or any(img is None for img in images):
            self.queue.finish(running.delivery, job, JobStatus.CANCELED)
            return
        encoded = [encode_image(img, job.output_format) for img in images]
        self.queue.store_images(job.id, encoded)
        expires_at = time.time() + self.settings.retention_s
        extra = {"result": json.dumps(result, separators=(",", ":"))} if result is not None else {}
        self.queue.finish(running.delivery, job, JobStatus.SUCCEEDED, images=len(encoded),
                          expires_at=f"{expires_at:.3f}", run_seconds=f"{elapsed:.4f}",
                          progress_step=job.steps, progress_total=job.steps, **extra)
        self.metrics.images(job.variant, len(encoded))


def _requests(batch: list[Running]) -> list[ImageRequest]:
    requests: list[ImageRequest] = []
    for running in batch:
        running.indices = []
        for request in requests_for(running.job, running.inputs):
            running.indices.append(len(requests))
            requests.append(request)
    return requests


def _chunks_by_images(batch: list[Running], cap: int) -> list[list[Running]]:
    """Split jobs into batches of at most `cap` images (a job's images stay together)."""
    chunks: list[list[Running]] = [[]]
    size = 0
    for running in batch:
        if chunks[-1] and size + running.job.n > cap:
            chunks.append([])
            size = 0
        chunks[-1].append(running)
        size += running.job.n
    return [c for c in chunks if c]


class _ProgressReporter:
    """The pipeline's per-step callback: progress events (throttled) and cancellation."""

    def __init__(self, queue: WorkQueue, batch: list[Running], interval_s: float) -> None:
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
