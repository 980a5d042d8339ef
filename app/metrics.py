"""Prometheus `/metrics` and the per-request access log.

Request series come from this process. Queue, worker and job series are read from Redis at scrape
time, so every gateway replica reports the same cluster-wide values: aggregate them with max(), not
sum(). Job latency, images and credits are tailed from the usage ledger (one event per succeeded
job, written by the worker's settle script), so each job is counted once per replica however many
clients poll it.
"""

from __future__ import annotations

import time
from typing import Any

import redis.exceptions
from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from app.logging import get_logger
from store import keys
from store.jobstore import JobStore

_LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
_access_log = get_logger("http")


class Metrics:
    """All series in one registry per app, so tests can build several apps in one process."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("fluxgate_http_requests", "HTTP requests by route template and status",
                                ["method", "route", "status"], registry=r)
        self.request_seconds = Histogram("fluxgate_http_request_duration_seconds", "HTTP request duration",
                                         ["method", "route"], registry=r)
        self.job_seconds = Histogram("fluxgate_job_latency_seconds",
                                     "submit to finish of succeeded jobs (from the usage ledger)",
                                     ["variant"], buckets=_LATENCY_BUCKETS, registry=r)
        self.jobs = Counter("fluxgate_jobs_succeeded", "succeeded jobs", ["variant"], registry=r)
        self.images = Counter("fluxgate_images", "images generated", ["variant"], registry=r)
        self.credits = Counter("fluxgate_credits_charged_millicredits", "milli-credits charged", ["variant"],
                               registry=r)
        self.queue_depth = Gauge("fluxgate_queue_depth", "jobs accepted and not yet started", ["variant"],
                                 registry=r)
        self.queue_pending = Gauge("fluxgate_queue_pending", "stream entries delivered to a worker, not acked",
                                   ["variant"], registry=r)
        self.queue_lag = Gauge("fluxgate_queue_lag", "stream entries not yet delivered to the workers group "
                               "(Redis >= 7; what KEDA scales on)", ["variant"], registry=r)
        self.stream_length = Gauge("fluxgate_queue_stream_length", "XLEN of the variant's streams", ["variant"],
                                   registry=r)
        self.workers = Gauge("fluxgate_workers_live", "worker consumers with a live heartbeat", registry=r)
        self.variant_workers = Gauge("fluxgate_variant_workers_live", "live workers serving the variant",
                                     ["variant"], registry=r)
        self.redis_up = Gauge("fluxgate_redis_up", "1 when the last scrape reached Redis", registry=r)
        # Written by each worker to Redis with its heartbeat (workers/metrics.py): counters and sums per
        # variant, e.g. forward_images_sum / forward_passes = mean batch size, queue_wait_seconds_sum /
        # started_jobs = mean queue wait, run_seconds_sum / forward_passes = step time, images,
        # oom_errors, failed_jobs, max_batch_images, peak_memory_bytes.
        self.worker_stats = Gauge("fluxgate_worker_stat", "a worker's own metrics (see workers/metrics.py)",
                                  ["worker", "variant", "name"], registry=r)
        # Set at the first scrape from Redis's clock (stream ids use it, not this host's): only ledger events
        # after that are counted, as counters start at 0 with the process anyway.
        self.ledger_cursor: str | None = None

    def observe_ledger(self, fields: dict[str, str]) -> None:
        variant = fields.get("variant", "unknown")
        self.jobs.labels(variant).inc()
        self.images.labels(variant).inc(int(fields.get("images", 0)))
        self.credits.labels(variant).inc(int(fields.get("credits", 0)))
        try:
            self.job_seconds.labels(variant).observe(float(fields["finished_at"]) - float(fields["created_at"]))
        except (KeyError, ValueError):
            pass


def _streams(variant: str, priorities: list[int]) -> list[str]:
    """The variant's stream keys: one per priority level."""
    return sorted({keys.variant_stream(variant, p) for p in priorities})


async def refresh(metrics: Metrics, store: JobStore, variants: list[str], priorities: list[int]) -> None:
    """Bring the Redis-derived series up to date (called at each scrape)."""
    redis = store.redis
    for variant in variants:
        metrics.queue_depth.labels(variant).set(await store.queued_count(variant))
        pending = length = lag = 0
        lag_known = False
        for stream in _streams(variant, priorities):
            if not await redis.exists(stream):
                continue
            length += await redis.xlen(stream)
            for group in await redis.xinfo_groups(stream):
                if group.get("name") == keys.WORKER_GROUP:
                    pending += int(group.get("pending") or 0)
                    if group.get("lag") is not None:
                        lag, lag_known = lag + int(group["lag"]), True
        metrics.stream_length.labels(variant).set(length)
        metrics.queue_pending.labels(variant).set(pending)
        if lag_known:
            metrics.queue_lag.labels(variant).set(lag)
    workers = await store.live_workers()
    metrics.workers.set(len(workers))
    for variant in variants:
        metrics.variant_workers.labels(variant).set(sum(variant in served for served in workers.values()))
    metrics.worker_stats.clear()  # workers come and go: only the current ones
    async for name in redis.scan_iter(match=keys.WORKER_METRICS_PATTERN, count=100):
        worker = name.removeprefix(keys.worker_metrics(""))
        for field, value in (await redis.hgetall(name)).items():
            variant, _, stat = field.partition(":")
            metrics.worker_stats.labels(worker, variant, stat).set(float(value))
    if metrics.ledger_cursor is None:
        seconds, micros = await redis.time()
        metrics.ledger_cursor = f"{int(seconds) * 1000 + int(micros) // 1000}-0"
    while True:  # tail the ledger in pages
        entries = await redis.xrange(keys.LEDGER, min=f"({metrics.ledger_cursor}", max="+", count=500)
        for entry_id, fields in entries:
            metrics.observe_ledger(fields)
            metrics.ledger_cursor = entry_id
        if len(entries) < 500:
            break


router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response, include_in_schema=True)
async def metrics_endpoint(request: Request) -> Response:
    """Prometheus text format. No key: scrape it from inside the cluster; keep it off the public ingress."""
    metrics: Metrics = request.app.state.metrics
    tiers = request.app.state.tiers
    try:
        await refresh(metrics, request.app.state.store, list(request.app.state.catalog.variants),
                      sorted({t.priority for t in tiers.values()}))
        metrics.redis_up.set(1)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        metrics.redis_up.set(0)  # still serve the request series
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


def route_template(scope: dict) -> str:
    """`/v1/jobs/{job_id}` for `/v1/jobs/3f..`: each path segment that is a path parameter's value becomes
    `{name}`. Worked out from the matched path parameters rather than router internals, which differ
    between FastAPI versions (included routers do not expose their prefixed path)."""
    if "endpoint" not in scope:
        return "unmatched"  # 404 before any route matched: never the raw path (unbounded labels)
    by_value = {str(v): k for k, v in (scope.get("path_params") or {}).items()}
    segments = scope.get("path", "").split("/")
    return "/".join(f"{{{by_value[s]}}}" if s in by_value else s for s in segments)


class ObservabilityMiddleware:
    """Counts and times each request by its route template (`/v1/jobs/{job_id}`, never the raw path, so
    job ids do not explode the label set) and writes one JSON access-log line carrying the job id."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = {"code": 500}

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self._record(scope, status["code"], time.perf_counter() - start)

    def _record(self, scope: dict, status: int, seconds: float) -> None:
        template = route_template(scope)
        method = scope["method"]
        self.metrics.requests.labels(method, template, str(status)).inc()
        self.metrics.request_seconds.labels(method, template).observe(seconds)
        if template == "/metrics" or template.startswith("/health") or template.startswith("/ready"):
            return  # probes and scrapes would drown the log
        params = scope.get("path_params") or {}
        job_id = scope.get("state", {}).get("job_id") or params.get("job_id")
        fields: dict[str, Any] = {"method": method, "route": template, "status": status,
                                  "duration_ms": round(seconds * 1000, 1)}
        if job_id:
            fields["job_id"] = job_id
        # The path, not the query string: a delivery URL's signature must not land in the logs.
        _access_log.info("%s %s %d", method, scope.get("path", ""), status, extra=fields)
