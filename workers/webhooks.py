"""Webhook delivery: a thread in each worker consumes the webhook stream (one consumer group, so each
event goes to one worker) and POSTs each job event, signed per Standard Webhooks
(https://www.standardwebhooks.com: `webhook-id`, `webhook-timestamp`, `webhook-signature` =
"v1," + base64 HMAC-SHA256 of "{id}.{timestamp}.{body}" with the account's `whsec_` secret).

A failed delivery (a non-2xx answer or a network error) is retried with exponential backoff, up to
`worker_webhook_attempts` tries; the entry is acked only after success or the last try, so a worker
that dies mid-delivery leaves it pending for another to reclaim.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time

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


class WebhookDispatcher:
    def __init__(self, url: str, consumer: str, stop: threading.Event, attempts: int, backoff_s: float,
                 allow_private: bool = False) -> None:
        self.redis = redis.Redis.from_url(url, decode_responses=True)
        self.consumer = consumer
        self.stop = stop
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.allow_private = allow_private
        self.http = httpx.Client(timeout=10, follow_redirects=False)  # a redirect could point inward

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self._ensure_group()
                reply = self.redis.xreadgroup(keys.WEBHOOK_GROUP, self.consumer, {keys.WEBHOOKS: ">"}, count=10,
                                              block=1000)
                for _stream, entries in reply or []:
                    for entry_id, fields in entries:
                        self._deliver(fields.get("job", ""), fields.get("status", ""))
                        self.redis.xack(keys.WEBHOOKS, keys.WEBHOOK_GROUP, entry_id)
                        self.redis.xdel(keys.WEBHOOKS, entry_id)
            except redis.ConnectionError:
                self.stop.wait(1.0)

    def _ensure_group(self) -> None:
        try:
            self.redis.xgroup_create(keys.WEBHOOKS, keys.WEBHOOK_GROUP, id="0", mkstream=True)
        except redis.ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise

    def _deliver(self, job_id: str, status: str) -> None:
        data = self.redis.hgetall(keys.job(job_id))
        if not data or not data.get("webhook_url"):
            return
        job = Job.from_hash(data)
        secret = self.redis.hget(keys.account(job.account), "webhook_secret") or ""
        body = event_body(job, status)
        message_id = f"msg_{job.id}_{status}"  # stable across retries: receivers deduplicate on it
        for attempt in range(1, self.attempts + 1):
            timestamp = int(time.time())
            headers = {"content-type": "application/json", "webhook-id": message_id,
                       "webhook-timestamp": str(timestamp), "webhook-signature": sign(secret, message_id, timestamp,
                                                                                       body)}
            refused = unsafe_target(job.webhook_url or "", self.allow_private)  # DNS may have changed since
            if refused:
                log.warning("webhook for job %s not sent: %s", job.id, refused)
                self.redis.hset(keys.job(job.id), "webhook_error", f"not sent: {refused}")
                return
            try:
                response = self.http.post(job.webhook_url or "", content=body, headers=headers)
                if 200 <= response.status_code < 300:
                    return
                problem = f"HTTP {response.status_code}"
            except httpx.HTTPError as err:
                problem = type(err).__name__
            log.warning("webhook for job %s, try %d/%d: %s", job.id, attempt, self.attempts, problem)
            if attempt < self.attempts and self.stop.wait(self.backoff_s * 2 ** (attempt - 1)):
                return
        self.redis.hset(keys.job(job.id), "webhook_error", f"not delivered after {self.attempts} tries")
