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


def job_input(job_id: str, index: int) -> str:
    """String: the bytes of one input image (reference, inpainting image/mask, image to upscale...)."""
    return f"{PREFIX}job:{job_id}:input:{index}"


def variant_stream(variant: str, priority: int = 0) -> str:
    """Stream: job ids waiting for a worker that serves this variant, one stream per priority level
    (a deep free-tier backlog must not sit in front of a paid job)."""
    return f"{PREFIX}queue:{variant}:p{priority}"


VARIANT_STREAM_PATTERN = f"{PREFIX}queue:*:p*"


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


def worker_metrics(consumer: str) -> str:
    """Hash with a TTL: the worker's metrics ("variant:name" -> value), refreshed with its heartbeat."""
    return f"{PREFIX}workermetrics:{consumer}"


WORKER_METRICS_PATTERN = f"{PREFIX}workermetrics:*"


def key_by_id(key_id: str) -> str:
    """String: the hash of the API key with this public id (for listing and revoking by id)."""
    return f"{PREFIX}keyid:{key_id}"


def account(account_id: str) -> str:
    """Hash: an account (name, tier, balance, reserved and spent milli-credits)."""
    return f"{PREFIX}account:{account_id}"


ACCOUNTS = f"{PREFIX}accounts"  # Set: every account id


def account_keys(account_id: str) -> str:
    """Set: the public ids of the account's API keys."""
    return f"{PREFIX}account:{account_id}:keys"


def rate_window(account_id: str, minute: int) -> str:
    """Counter with a TTL: submits in one fixed one-minute window."""
    return f"{PREFIX}account:{account_id}:rate:{minute}"


def daily_images(account_id: str, day: str) -> str:
    """Counter with a TTL: images admitted on one UTC day (YYYYMMDD), released ones given back."""
    return f"{PREFIX}account:{account_id}:daily:{day}"


def active_jobs(account_id: str) -> str:
    """Set: the account's queued and running job ids (the concurrency cap)."""
    return f"{PREFIX}account:{account_id}:active"


def idempotency(account_id: str, key_hash: str) -> str:
    """Hash with a TTL: the request fingerprint and job id an Idempotency-Key created."""
    return f"{PREFIX}account:{account_id}:idem:{key_hash}"


def account_jobs(account_id: str) -> str:
    """Stream: every job the account submitted, newest last (capped; GET /v1/jobs reads it)."""
    return f"{PREFIX}account:{account_id}:jobs"


def account_ledger(account_id: str) -> str:
    """Stream: the account's usage events (one per succeeded job)."""
    return f"{PREFIX}account:{account_id}:ledger"


LEDGER = f"{PREFIX}ledger"  # Stream: every usage event, for billing exports
WEBHOOKS = f"{PREFIX}webhooks"  # Stream: job events to deliver to webhook URLs (group WEBHOOK_GROUP)
WEBHOOK_GROUP = "webhooks"


DELIVERY_SECRET = f"{PREFIX}delivery:secret"  # String: HMAC secret of signed image delivery URLs (all gateways)
