"""Worker settings (FLUXGATE_WORKER_* and the shared FLUXGATE_* variables)."""

from __future__ import annotations

from typing import Literal

from store.settings import CommonSettings


class WorkerSettings(CommonSettings):
    device: str = "cpu"
    # Comma-separated variant names this worker serves; empty means every variant in the catalog.
    worker_variants: str = ""
    # off: one image per forward pass; request: jobs batched when they start together; step: jobs of
    # the same size join a running batch between denoising steps (distilled FLUX; others: request).
    worker_batching: Literal["off", "request", "step"] = "step"
    # Most images in one batch (an operator cap; the memory model may choose fewer).
    worker_max_batch: int = 8
    # Memory batches may use: bytes or e.g. "20GiB"; empty = free memory at start-up minus 10%.
    worker_memory_budget: str = ""
    # Measure peak memory per variant at start-up (two small batches each) to size batches.
    worker_profile_memory: bool = True
    # Priority points a waiting job gains per second, so free-tier work is never starved by paid.
    worker_aging_per_s: float = 1.0
    # Fault injection (tests, drills): raise an out-of-memory error for batches above this size.
    worker_fault_oom_above: int = 0
    # Fault injection: the pipeline raises for prompts containing this marker (a poison job).
    worker_fault_poison_marker: str = ""
    # Fault injection: the worker process exits at once (os._exit, like a segfault in a CUDA kernel)
    # when a batch holds a prompt containing this marker.
    worker_fault_crash_marker: str = ""
    # How long a batch may wait for more jobs to fill it after the first arrives.
    worker_batch_wait_ms: int = 15
    # Progress events are written at most this often per job.
    worker_progress_interval_s: float = 0.1
    worker_heartbeat_s: float = 2.0
    worker_heartbeat_ttl_s: int = 6
    # A job whose run was started this many times without finishing (its worker died each time)
    # fails with a clear error instead of being retried forever.
    worker_max_attempts: int = 3
    # Webhook deliveries: tries per event, and the first retry's delay (doubling after each try).
    worker_webhook_attempts: int = 5
    worker_webhook_backoff_s: float = 1.0
    # An undelivered webhook entry idle this long belongs to a dead worker: another one takes it over.
    # Live dispatchers touch their waiting entries at every try, so this only needs to exceed one try
    # (10 s HTTP timeout) plus the longest backoff.
    worker_webhook_claim_idle_s: float = 120.0
    # Stable consumer name (e.g. the pod name); default host-pid.
    worker_name: str = ""

    def variant_names(self) -> list[str]:
        return [v.strip() for v in self.worker_variants.split(",") if v.strip()]
