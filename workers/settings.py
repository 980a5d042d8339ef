"""Worker settings (FLUXGATE_WORKER_* and the shared FLUXGATE_* variables)."""

from __future__ import annotations

from store.settings import CommonSettings


class WorkerSettings(CommonSettings):
    device: str = "cpu"
    # Comma-separated variant names this worker serves; empty means every variant in the catalog.
    worker_variants: str = ""
    # Most images in one batch (an operator cap; the memory model may choose fewer).
    worker_max_batch: int = 8
    # How long a batch may wait for more jobs to fill it after the first arrives.
    worker_batch_wait_ms: int = 15
    # Progress events are written at most this often per job.
    worker_progress_interval_s: float = 0.1
    worker_heartbeat_s: float = 2.0
    worker_heartbeat_ttl_s: int = 6
    # A job whose run was started this many times without finishing (its worker died each time)
    # fails with a clear error instead of being retried forever.
    worker_max_attempts: int = 3
    # Stable consumer name (e.g. the pod name); default host-pid.
    worker_name: str = ""

    def variant_names(self) -> list[str]:
        return [v.strip() for v in self.worker_variants.split(",") if v.strip()]
