"""The worker's side of the data model (sync): consume variant streams, move jobs through their
states, store results, heartbeat, and reclaim the work of dead workers.

Delivery is at-least-once. An entry is acked only after its job's result is stored and its terminal
state written, in the same script (finish.lua), so a crash at any point leaves the entry pending
and another worker redoes it; finish.lua is idempotent by job id, so a duplicate never produces a
second result or a second terminal event.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from store import keys
from store.records import Job, event_json
from store.scripts import source


@dataclass(frozen=True)
class Delivery:
    stream: str
    variant: str
    entry_id: str
    job_id: str


class WorkQueue:
    def __init__(self, url: str, consumer: str, variants: list[str], retention_s: int,
                 priorities: list[int] | None = None) -> None:
        self.redis = redis.Redis.from_url(url, decode_responses=True)
        self._raw = redis.Redis.from_url(url)
        self.consumer = consumer
        self.variants = list(variants)
        # Every (variant, priority level) stream this worker consumes, and which variant each is.
        self.streams = {keys.variant_stream(v, p): v for v in self.variants for p in sorted(set(priorities or [0]))}
        self.retention_s = retention_s
        self._start = self.redis.register_script(source("start"))
        self._finish = self.redis.register_script(source("finish"))
        self._backlog_done = False

    def ensure_groups(self) -> None:
        for stream in self.streams:
            try:
                self.redis.xgroup_create(stream, keys.WORKER_GROUP, id="0", mkstream=True)
            except redis.ResponseError as err:
                if "BUSYGROUP" not in str(err):
                    raise

    # -- consuming ----------------------------------------------------------------------------
    def read(self, count: int, block_ms: int | None) -> list[Delivery]:
        """Up to `count` entries: on the first call this consumer's own pending ones (a restart under
        the same name), then new ones, blocking up to block_ms when none are waiting."""
        backlog = not self._backlog_done
        self._backlog_done = True  # the pending list is read once: later reads would repeat it
        streams = {stream: "0" if backlog else ">" for stream in self.streams}
        try:
            # The whole backlog at once: entries left out now would never be read again.
            reply = self.redis.xreadgroup(keys.WORKER_GROUP, self.consumer, streams,
                                          count=100_000 if backlog else count, block=None if backlog else block_ms)
        except redis.ResponseError as err:
            if "NOGROUP" not in str(err):
                raise
            # The streams were deleted under us (a flushed or replaced Redis): recreate and go on.
            self.ensure_groups()
            return []
        deliveries = self._parse(reply)
        return deliveries or (self.read(count, block_ms) if backlog else [])

    def reread_pending(self) -> None:
        """Read this consumer's own pending entries again on the next read (after losing local state)."""
        self._backlog_done = False

    def _parse(self, reply: list) -> list[Delivery]:
        out = []
        for stream, entries in reply or []:
            for entry_id, fields in entries:
                if fields:  # a trimmed entry reads as nil; nothing to run
                    out.append(Delivery(stream, self.streams[stream], entry_id, fields["job"]))
        return out

    def reclaim(self, min_idle_ms: int, count: int = 50) -> list[Delivery]:
        """Claim pending entries whose consumer has no live heartbeat (a crashed worker)."""
        claimed: list[Delivery] = []
        for stream, variant in self.streams.items():
            pending = self.redis.xpending_range(stream, keys.WORKER_GROUP, "-", "+", count, idle=min_idle_ms)
            dead = [p for p in pending if p["consumer"] != self.consumer
                    and not self.redis.exists(keys.worker_heartbeat(p["consumer"]))]
            if not dead:
                continue
            # XCLAIM with min-idle makes the claim race-free: a second reclaimer finds the entry
            # freshly claimed (idle reset) and gets nothing.
            entries = self.redis.xclaim(stream, keys.WORKER_GROUP, self.consumer, min_idle_ms,
                                        [p["message_id"] for p in dead])
            claimed += [Delivery(stream, variant, entry_id, fields["job"]) for entry_id, fields in entries if fields]
        return claimed

    # -- job state ----------------------------------------------------------------------------
    def start(self, delivery: Delivery, job: Job) -> tuple[str, Job | None]:
        """('run', the job as now started) if this worker should run it; else (the job's status, None)
        and the caller only acks the entry. `job` is the record as read before (for its keys)."""
        reply = self._start(
            keys=[keys.job(job.id), keys.job_events(job.id), keys.variant_queued(delivery.variant),
                  keys.account(job.account), keys.active_jobs(job.account), keys.daily_images(job.account, job.day),
                  keys.WEBHOOKS],
            args=[self.consumer, f"{time.time():.3f}", event_json(status="running"),
                  event_json(status="expired", error="the job was not started before its deadline"),
                  self.retention_s],
        )
        state = str(reply[0])
        if state != "run":
            return state, None
        return state, Job.from_hash(dict(zip(reply[1::2], reply[2::2], strict=True)))

    def load(self, job_id: str) -> Job | None:
        data = self.redis.hgetall(keys.job(job_id))
        return Job.from_hash(data) if data else None

    def progress(self, job_ids: list[str], step: int, total: int) -> None:
        data = event_json(status="running", step=step, total=total)
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hset(keys.job(job_id), mapping={"progress_step": step, "progress_total": total})
            pipe.xadd(keys.job_events(job_id), {"event": "progress", "data": data}, maxlen=2000, approximate=True)
        pipe.execute()

    def cancel_requested(self, job_ids: list[str]) -> set[str]:
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(keys.job(job_id), "cancel_requested")
        return {job_id for job_id, flag in zip(job_ids, pipe.execute(), strict=True) if flag == "1"}

    def load_inputs(self, job_id: str, count: int) -> list[bytes | None]:
        return list(self._raw.mget([keys.job_input(job_id, i) for i in range(count)])) if count else []

    def store_images(self, job_id: str, images: list[bytes]) -> None:
        pipe = self._raw.pipeline(transaction=False)
        for index, data in enumerate(images):
            pipe.set(keys.job_image(job_id, index), data, ex=self.retention_s)
        pipe.execute()

    def finish(self, delivery: Delivery | None, job: Job, status: str, **fields: str | int | float) -> bool:
        """Write a terminal status, settle or release the job's reservation, append the usage event
        (succeeded only) and ack the entry, in one script. False if the job was already terminal."""
        event = event_json(status=status, **{k: v for k, v in fields.items() if k in ("error", "images")})
        usage: list[str] = []
        if status == "succeeded":
            images = int(fields.get("images", job.n))
            usage = [
                "job", job.id, "account", job.account, "key", job.key_id, "variant", job.variant,
                "images", str(images), "width", str(job.width), "height", str(job.height),
                "megapixels", f"{job.width * job.height * images / 1e6:.6f}", "list_cost", str(job.cost),
                "created_at", f"{job.created_at:.3f}", "finished_at", f"{time.time():.3f}",
            ]
        extra = [str(x) for pair in fields.items() for x in pair]
        changed = self._finish(
            keys=[keys.job(job.id), keys.job_events(job.id),
                  delivery.stream if delivery else keys.variant_stream(job.variant, job.priority),
                  keys.account(job.account), keys.active_jobs(job.account), keys.daily_images(job.account, job.day),
                  keys.LEDGER, keys.account_ledger(job.account), keys.WEBHOOKS],
            args=[status, f"{time.time():.3f}", delivery.entry_id if delivery else "", keys.WORKER_GROUP,
                  self.retention_s, event, len(usage) // 2, *usage, *extra],
        )
        return bool(changed)

    def ack(self, delivery: Delivery) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.xack(delivery.stream, keys.WORKER_GROUP, delivery.entry_id)
        pipe.xdel(delivery.stream, delivery.entry_id)
        pipe.execute()

    # -- liveness -----------------------------------------------------------------------------
    def heartbeat(self, ttl_s: int) -> None:
        self.redis.set(keys.worker_heartbeat(self.consumer), ",".join(self.variants), ex=ttl_s)

    def write_metrics(self, values: dict[str, float]) -> None:
        if not values:
            return
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(keys.worker_metrics(self.consumer), mapping=values)
        pipe.expire(keys.worker_metrics(self.consumer), 3600)
        pipe.execute()

    def retire(self) -> None:
        self.redis.delete(keys.worker_heartbeat(self.consumer))
