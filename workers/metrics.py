"""Per-variant worker metrics: batch sizes, queue wait, step time, images, OOMs, peak memory.

Kept as plain counters and sums in memory; the heartbeat thread writes a snapshot to Redis
(store.queue.WorkQueue.write_metrics) where the gateway's /metrics and operators read it.
"""

from __future__ import annotations

import threading
from collections import defaultdict


class WorkerMetrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, float] = defaultdict(float)

    def _add(self, variant: str, **values: float) -> None:
        with self._lock:
            for name, value in values.items():
                self._values[f"{variant}:{name}"] += value

    def batch(self, variant: str, images: int, seconds: float, steps: int) -> None:
        """A whole request-level batch ran (steps forward passes)."""
        self._add(variant, batches=1, batch_images_sum=images, forward_passes=steps,
                  forward_images_sum=images * steps, run_seconds_sum=seconds)
        self._max(variant, "max_batch_images", images)

    def step(self, variant: str, images: int, seconds: float) -> None:
        """One forward pass of a step-level batch."""
        self._add(variant, forward_passes=1, forward_images_sum=images, run_seconds_sum=seconds)
        self._max(variant, "max_batch_images", images)

    def images(self, variant: str, count: int) -> None:
        self._add(variant, images=count, jobs=1)

    def queue_wait(self, variant: str, seconds: float) -> None:
        self._add(variant, queue_wait_seconds_sum=max(0.0, seconds), started_jobs=1)

    def failure(self, variant: str) -> None:
        self._add(variant, failed_jobs=1)

    def oom(self, variant: str) -> None:
        self._add(variant, oom_errors=1)

    def peak_memory(self, variant: str, peak_bytes: int) -> None:
        self._max(variant, "peak_memory_bytes", peak_bytes)

    def _max(self, variant: str, name: str, value: float) -> None:
        with self._lock:
            key = f"{variant}:{name}"
            self._values[key] = max(self._values[key], value)

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return dict(self._values)
