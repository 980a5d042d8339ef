"""Every Redis key name fluxgate uses. A key string written anywhere else is a bug.

All keys share the `fg:` prefix so an operator can share a Redis with other applications and
find (or flush) ours with one pattern.
"""

from __future__ import annotations

PREFIX = "fg:"

# Consumer group every worker joins on every variant stream.
WORKER_GROUP = "workers"


def job(job_id: str) -> str:
    """Hash: the job record (status, parameters, owner, timings, results)."""
    return f"{PREFIX}job:{job_id}"


def job_events(job_id: str) -> str:
    """Stream: the job's events (queued, running + progress, terminal); the SSE source."""
    return f"{PREFIX}job:{job_id}:events"


def job_image(job_id: str, index: int) -> str:
    """String: the encoded bytes of one result image, expiring with the retention period."""
    return f"{PREFIX}job:{job_id}:img:{index}"


def variant_stream(variant: str) -> str:
    """Stream: job ids waiting for a worker that serves this variant."""
    return f"{PREFIX}queue:{variant}"


def variant_queued(variant: str) -> str:
    """Counter: jobs of this variant accepted and not yet started (the queue position base)."""
    return f"{PREFIX}queue:{variant}:queued"


def api_key(key_hash: str) -> str:
    """Hash: an API key's record, found by the SHA-256 of the key (the key itself is never stored)."""
    return f"{PREFIX}apikey:{key_hash}"


def worker_heartbeat(consumer: str) -> str:
    """String with a TTL: present while the worker consumer is alive; its value lists its variants."""
    return f"{PREFIX}worker:{consumer}"


WORKER_HEARTBEAT_PATTERN = f"{PREFIX}worker:*"
