"""/metrics (Prometheus text format) and the gateway's JSON-lines logs, from real processes."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from store.embedded import EmbeddedRedis
from tests.conftest import Proc, make_key, wait_until

PROMPT = "a red circle on the left on a white background"


def scrape(gateway: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(f"{gateway}/metrics")  # no key: scraped from inside the cluster
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_requests_jobs_and_queues(api: httpx.Client, gateway: str, worker: Proc) -> None:
    before = scrape(gateway)
    done = api.post("/v1/generate", json={"model": "schnell", "prompt": PROMPT, "n": 2},
                    headers={"Prefer": "wait=30"}).json()
    assert done["status"] == "succeeded"
    api.get(f"/v1/jobs/{done['id']}")
    api.get(f"/v1/jobs/{'0' * 32}")  # a 404 on a matched route
    api.get("/no/such/path")

    def ledger_seen() -> dict | None:
        samples = scrape(gateway)
        seen = value(samples, "fluxgate_jobs_succeeded_total", variant="schnell")
        return samples if seen > value(before, "fluxgate_jobs_succeeded_total", variant="schnell") else None

    after = wait_until(ledger_seen, 10, interval_s=0.2, message="the ledger event in /metrics")
    delta = {name: value(after, name, variant="schnell") - value(before, name, variant="schnell")
             for name in ("fluxgate_images_total", "fluxgate_job_latency_seconds_count")}
    assert delta["fluxgate_images_total"] >= 2 and delta["fluxgate_job_latency_seconds_count"] >= 1
    # Requests by route template (never the raw path: job ids would explode the label set).
    assert value(after, "fluxgate_http_requests_total", method="POST", route="/v1/generate", status="200") >= 1
    assert value(after, "fluxgate_http_requests_total", method="GET", route="/v1/jobs/{job_id}", status="200") >= 1
    assert value(after, "fluxgate_http_requests_total", method="GET", route="/v1/jobs/{job_id}", status="404") >= 1
    assert value(after, "fluxgate_http_requests_total", method="GET", route="unmatched", status="404") >= 1
    assert not any(done["id"] in labels_text for (_, labels) in after for labels_text in map(str, labels))
    # Queues and workers, read from Redis at scrape time.
    assert value(after, "fluxgate_workers_live") >= 1 and value(after, "fluxgate_redis_up") == 1
    for variant in ("schnell", "dev", "klein"):
        assert ("fluxgate_queue_depth", (("variant", variant),)) in after
        assert value(after, "fluxgate_variant_workers_live", variant=variant) >= 1
    # The worker's own metrics (batch sizes, queue wait, step time, images), written with its heartbeat.
    def worker_stat(samples: dict, stat: str) -> float:
        return sum(v for (name, labels), v in samples.items() if name == "fluxgate_worker_stat"
                   and ("variant", "schnell") in labels and ("name", stat) in labels)

    def worker_reported() -> dict | None:
        samples = scrape(gateway)
        return samples if worker_stat(samples, "images") >= 2 else None

    stats = wait_until(worker_reported, 10, 0.2, message="worker metrics in /metrics")
    assert worker_stat(stats, "forward_passes") >= 1 and worker_stat(stats, "forward_images_sum") >= 2
    assert worker_stat(stats, "started_jobs") >= 1 and worker_stat(stats, "max_batch_images") >= 1


def test_logs_are_json_lines_with_job_ids_and_no_keys(gateway: str, redis_server: EmbeddedRedis, log_dir: Path,
                                                      worker: Proc) -> None:
    key = make_key(redis_server.url)
    with httpx.Client(base_url=gateway, headers={"x-key": key}, timeout=30) as client:
        job_id = client.post("/v1/generate", json={"model": "klein", "prompt": PROMPT}).json()["id"]
        client.get(f"/v1/jobs/{job_id}")
        client.get(f"/v1/typo/{key}")  # a key pasted into a URL must still not be logged
    log = log_dir / f"gateway-{gateway.rsplit(':', 1)[1]}.log"

    def lines() -> list[dict] | None:
        entries = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        return entries if any(e.get("route") == "/v1/typo/{key}" or "/v1/typo/" in e["msg"] for e in entries) \
            else None

    entries = wait_until(lines, 10, message="the access log lines")  # every line parses as JSON
    submit = [e for e in entries if e.get("route") == "/v1/generate" and e.get("job_id") == job_id]
    assert submit and submit[0]["status"] == 202 and submit[0]["level"] == "info" and "duration_ms" in submit[0]
    assert any(e.get("route") == "/v1/jobs/{job_id}" and e.get("job_id") == job_id for e in entries)
    assert key not in log.read_text()
    assert "[redacted]" in log.read_text()
