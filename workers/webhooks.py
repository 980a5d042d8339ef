"""Webhook delivery: a thread in each worker consumes the webhook stream (one consumer group, so each
event goes to one worker) and POSTs each job event, signed per Standard Webhooks
(https://www.standardwebhooks.com: `webhook-id`, `webhook-timestamp`, `webhook-signature` =
"v1," + base64 HMAC-SHA256 of "{id}.{timestamp}.{body}" with the account's `whsec_` secret).

A failed delivery (a non-2xx answer or a network error) is retried with exponential backoff, up to
`worker_webhook_attempts` tries. Retries wait in a schedule, not in a sleep, so one slow or failing
receiver never holds up the others' events. An entry is acked only after success or the last try:
while it waits, its dispatcher re-claims it at every try (resetting its idle time), and an entry
left idle for `worker_webhook_claim_idle_s` (its worker died) is claimed by a live dispatcher and
delivered from its first try. Delivery is at least once; the stable `webhook-id` lets receivers
deduplicate.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import json
import logging
import threading
import time
from dataclasses import dataclass, field

import httpx
import redis

from store import keys
from store.records import Job
from store.webhook_targets import unsafe_target

log = logging.getLogger("fluxgate.webhooks")


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def event_body(job: Job, status: str) -> bytes:
    data = {"id": job.id, "status": status, "model": job.variant, "task": job.task, "images": job.images,
            "cost": job.cost, "error": job.error}
    return json.dumps({"type": f"job.{status}", "timestamp": int(time.time()), "data": data},
                      separators=(",", ":")).encode()


@dataclass(order=True)
class _Pending:
    due: float
    entry_id: str = field(compare=False)
    job_id: str = field(compare=False)
    status: str = field(compare=False)
    attempt: int = field(default=1, compare=False)


class WebhookDispatcher:
    def __init__(self, url: str, consumer: str, stop: threading.Event, attempts: int, backoff_s: float,
                 allow_private: bool = False, claim_idle_s: float = 120.0) -> None:
        self.redis = redis.Redis.from_url(url, decode_responses=True)
        self.consumer = consumer
        self.stop = stop
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.allow_private = allow_private
        self.claim_idle_ms = int(claim_idle_s * 1000)
        self.http = httpx.Client(timeout=10, follow_redirects=False)  # a redirect could point inward
        self.schedule: list[_Pending] = []  # a heap by due time
        self.held: set[str] = set()  # entry ids in the schedule

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self._ensure_group()
                self._claim_abandoned()
                self._send_due()
                wait_ms = 1000 if not self.schedule else (self.schedule[0].due - time.monotonic()) * 1000
                reply = self.redis.xreadgroup(keys.WEBHOOK_GROUP, self.consumer, {keys.WEBHOOKS: ">"}, count=10,
                                              block=max(1, min(1000, int(wait_ms))))
                for _stream, entries in reply or []:
                    for entry_id, fields in entries:
                        self._hold(_Pending(time.monotonic(), entry_id, fields.get("job", ""),
                                            fields.get("status", "")))
            except redis.ConnectionError:
                self.stop.wait(1.0)

    def _hold(self, item: _Pending) -> None:
        if item.entry_id not in self.held:
            self.held.add(item.entry_id)
            heapq.heappush(self.schedule, item)

    def _ensure_group(self) -> None:
        try:
            self.redis.xgroup_create(keys.WEBHOOKS, keys.WEBHOOK_GROUP, id="0", mkstream=True)
        except redis.ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise

    def _claim_abandoned(self) -> None:
        """Entries another dispatcher read and then left idle (its worker died): ours now."""
        _next, entries, *_ = self.redis.xautoclaim(keys.WEBHOOKS, keys.WEBHOOK_GROUP, self.consumer,
                                                   self.claim_idle_ms, "0-0", count=10)
        for entry_id, fields in entries:
            if fields:  # None: deleted meanwhile
                self._hold(_Pending(time.monotonic(), entry_id, fields.get("job", ""), fields.get("status", "")))

    def _send_due(self) -> None:
        while self.schedule and self.schedule[0].due <= time.monotonic() and not self.stop.is_set():
            item = heapq.heappop(self.schedule)
            # Still ours, and its idle time reset: a live dispatcher's waiting entry is never reclaimed.
            self.redis.xclaim(keys.WEBHOOKS, keys.WEBHOOK_GROUP, self.consumer, 0, [item.entry_id], justid=True)
            if self._try(item):
                self.redis.xack(keys.WEBHOOKS, keys.WEBHOOK_GROUP, item.entry_id)
                self.redis.xdel(keys.WEBHOOKS, item.entry_id)
                self.held.discard(item.entry_id)
            else:
                item.due = time.monotonic() + self.backoff_s * 2 ** (item.attempt - 1)
                item.attempt += 1
                heapq.heappush(self.schedule, item)

    def _try(self, item: _Pending) -> bool:
        """One delivery attempt; True when the entry is done with (delivered, or not to be sent)."""
        data = self.redis.hgetall(keys.job(item.job_id))
        if not data or not data.get("webhook_url"):
            return True
        job = Job.from_hash(data)
        refused = unsafe_target(job.webhook_url or "", self.allow_private)  # DNS may have changed since
        if refused:
            log.warning("webhook for job %s not sent: %s", job.id, refused)
            self.redis.hset(keys.job(job.id), "webhook_error", f"not sent: {refused}")
            return True
        secret = self.redis.hget(keys.account(job.account), "webhook_secret") or ""
        body = event_body(job, item.status)
        message_id = f"msg_{job.id}_{item.status}"  # stable across retries: receivers deduplicate on it
        timestamp = int(time.time())
        headers = {"content-type": "application/json", "webhook-id": message_id,
                   "webhook-timestamp": str(timestamp), "webhook-signature": sign(secret, message_id, timestamp, body)}
        try:
            response = self.http.post(job.webhook_url or "", content=body, headers=headers)
            if 200 <= response.status_code < 300:
                return True
            problem = f"HTTP {response.status_code}"
        except httpx.HTTPError as err:
            problem = type(err).__name__
        log.warning("webhook for job %s, try %d/%d: %s", job.id, item.attempt, self.attempts, problem)
        if item.attempt >= self.attempts:
            self.redis.hset(keys.job(job.id), "webhook_error", f"not delivered after {self.attempts} tries")
            return True
        return False
