"""The gateway's side of the data model (asyncio): keys, submitting, reading and cancelling jobs."""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis.asyncio as aioredis

from store import keys
from store.accounts import now_windows
from store.records import TERMINAL_EVENTS, Job, JobStatus, event_json
from store.scripts import source


@dataclass(frozen=True)
class Event:
    id: str  # the stream entry id, used as the SSE id and Last-Event-ID
    event: str
    data: str


@dataclass(frozen=True)
class Admission:
    """The caller's limits for this submit (from their tier), checked inside the submit script."""

    requests_per_minute: int = 0  # 0 = unlimited
    images_per_day: int = 0
    concurrent_jobs: int = 0
    reserve: int = 0  # milli-credits taken from the balance now, charged or given back at the end
    fingerprint: str = ""  # of the request body, when it carries an Idempotency-Key
    idempotency_key: str = ""  # hash of the Idempotency-Key header
    max_queued: int = 0  # the variant's queue-depth cap (0 = unlimited): overload answers 503, not a backlog


@dataclass(frozen=True)
class SubmitResult:
    outcome: str  # ok | idempotent | idempotency_mismatch | rate | concurrency | daily | credits | queue_full
    value: str  # queue position | existing job id | retry seconds | limit | balance


IDEMPOTENCY_TTL_S = 24 * 3600


class JobStore:
    def __init__(self, url: str, retention_s: int) -> None:
        # Two clients on one URL: text replies for records, raw bytes for images.
        self.redis = client = aioredis.from_url(url, decode_responses=True)
        self._raw = aioredis.from_url(url)
        self.retention_s = retention_s
        self._submit = client.register_script(source("submit"))
        self._cancel = client.register_script(source("cancel"))

    async def close(self) -> None:
        await self.redis.aclose()
        await self._raw.aclose()

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    # -- jobs ---------------------------------------------------------------------------------
    async def submit(self, job: Job, admission: Admission) -> SubmitResult:
        """Check limits, reserve, create and enqueue the job in one atomic script."""
        minute, minute_left, day, day_left = now_windows(job.created_at)
        job = job.model_copy(update={"day": day})
        idem = keys.idempotency(job.account, admission.idempotency_key or "-")
        outcome, value = await self._submit(
            keys=[
                keys.job(job.id), keys.job_events(job.id), keys.variant_stream(job.variant, job.priority),
                keys.variant_queued(job.variant), keys.account(job.account), keys.rate_window(job.account, minute),
                keys.daily_images(job.account, day), keys.active_jobs(job.account), idem,
                keys.account_jobs(job.account),
            ],
            args=[
                job.id, event_json(status="queued", created_at=job.created_at),
                admission.requests_per_minute, minute_left, admission.images_per_day, day_left,
                admission.concurrent_jobs, job.n, admission.reserve, admission.fingerprint, IDEMPOTENCY_TTL_S,
                admission.max_queued, *job.to_fields(),
            ],
        )
        return SubmitResult(str(outcome), str(value))

    async def get(self, job_id: str) -> Job | None:
        data = await self.redis.hgetall(keys.job(job_id))
        return Job.from_hash(data) if data else None

    async def cancel(self, job: Job) -> str:
        canceled = event_json(status="canceled")
        result = await self._cancel(
            keys=[keys.job(job.id), keys.job_events(job.id), keys.variant_queued(job.variant),
                  keys.account(job.account), keys.active_jobs(job.account), keys.daily_images(job.account, job.day),
                  keys.WEBHOOKS],
            args=[f"{time.time():.3f}", self.retention_s, canceled],
        )
        return str(result)

    async def events(self, job_id: str, after: str = "0", block_ms: int | None = None) -> list[Event]:
        """Events after the stream id `after`; blocks up to block_ms for the first one if asked."""
        reply = await self.redis.xread({keys.job_events(job_id): after}, count=100, block=block_ms)
        if not reply:
            return []
        return [Event(entry_id, f["event"], f["data"]) for entry_id, f in reply[0][1]]

    async def wait_terminal(self, job_id: str, timeout_s: float) -> Job | None:
        """The job once it is terminal, or None if it is not terminal within timeout_s. Reads the
        record only when a terminal event arrives (progress events just move the cursor)."""
        deadline = time.monotonic() + timeout_s
        after = "0"
        job = await self.get(job_id)
        while job is not None and not JobStatus(job.status).terminal:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                return None
            events = await self.events(job_id, after, block_ms=min(remaining_ms, 1000))
            if events:
                after = events[-1].id
            if not events or any(e.event in TERMINAL_EVENTS for e in events):
                job = await self.get(job_id)  # also rechecked each idle second (an expired record)
        return job

    async def put_inputs(self, job_id: str, images: list[bytes]) -> None:
        """Input images, stored before the job is admitted (if it is refused they just expire)."""
        pipe = self._raw.pipeline(transaction=False)
        for index, data in enumerate(images):
            pipe.set(keys.job_input(job_id, index), data, ex=self.retention_s)
        await pipe.execute()

    async def image(self, job_id: str, index: int) -> bytes | None:
        return await self._raw.get(keys.job_image(job_id, index))

    async def queued_count(self, variant: str) -> int:
        return int(await self.redis.get(keys.variant_queued(variant)) or 0)

    async def live_workers(self) -> dict[str, list[str]]:
        """Live worker consumers and the variants each serves (from their heartbeat keys)."""
        workers: dict[str, list[str]] = {}
        async for name in self.redis.scan_iter(match=keys.WORKER_HEARTBEAT_PATTERN, count=100):
            value = await self.redis.get(name)
            if value is not None:
                workers[name.removeprefix(keys.worker_heartbeat(""))] = value.split(",")
        return workers
