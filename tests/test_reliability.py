"""Reliability under faults and overload, with real processes over a real Redis (no mocks):
the gateway killed mid-burst, the worker cut off from Redis for ~10 s, a job that crashes the worker
process itself, and the per-variant queue-depth cap. Complements tests/test_service_faults.py (worker
kill -9, Redis restart) and tests/test_batching.py (OOM fallback, a poison job that raises)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import GatewaySettings
from store import keys
from store.embedded import EmbeddedRedis
from tests.conftest import Proc, Service, make_key, start_gateway, start_worker, wait_until
from tests.test_service_jobs import PROMPT, finished

SCHNELL = {"model": "schnell", "prompt": PROMPT}
# Fast workers: no start-up memory profiling (a few seconds each on a shared CPU).
FAST = {"FLUXGATE_WORKER_PROFILE_MEMORY": "false"}


def _job_ids(client: redis.Redis) -> set[str]:
    """Every job record in a private Redis (fg:job:<id>, not its :events / :img keys)."""
    prefix = keys.job("")
    return {k.removeprefix(prefix) for k in client.scan_iter(prefix + "*") if ":" not in k.removeprefix(prefix)}


@pytest.mark.timeout(90)
def test_gateway_killed_mid_burst_every_accepted_job_completes(service: Service, log_dir: Path) -> None:
    """kill -9 of a gateway while 16 clients submit: every 202 it sent completes, and so does every job
    it accepted whose 202 never reached the client (the submit is one atomic Lua call)."""
    client = redis.Redis.from_url(service.redis.url, decode_responses=True)
    service.worker(variants="schnell", **FAST)
    second, second_url = start_gateway(service.redis.url, log_dir)
    accepted: list[str] = []
    lock, enough = threading.Lock(), threading.Event()
    key = service.api.headers["x-key"]

    def submitter(seed: int) -> None:
        with httpx.Client(base_url=service.url, headers={"x-key": key}, timeout=10) as api:
            for i in range(100):  # bounded even if the kill never came
                try:
                    r = api.post("/v1/generate", json={**SCHNELL, "seed": seed * 1000 + i})
                except httpx.HTTPError:
                    return  # the gateway is gone: a connection error is the expected end
                assert r.status_code == 202, r.text  # an internal key has no limits: only 202 is right
                with lock:
                    accepted.append(r.json()["id"])
                    if len(accepted) >= 24:  # enough to show the property; more only costs CPU time
                        enough.set()

    try:
        with ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(submitter, s) for s in range(16)]
            assert enough.wait(40), "the burst did not reach 24 accepted jobs"
            service.gateway.kill()  # kill -9 with 16 requests in flight
            for f in futures:
                f.result()
        stored = _job_ids(client)
        assert set(accepted) <= stored
        with httpx.Client(base_url=second_url, headers={"x-key": key}, timeout=10) as api:
            for job_id in sorted(stored):  # the 202s, plus any accepted job whose answer was lost
                job = finished(api, job_id, timeout_s=60)
                assert job["status"] == "succeeded", job
    finally:
        second.stop()


@pytest.mark.timeout(90)
def test_worker_survives_a_10s_redis_outage(service: Service) -> None:
    """Redis stopped for 10 s while the worker is mid-batch, then restarted on the same port and data
    directory: the same worker process reconnects, every accepted job finishes, new jobs run."""
    api = service.api
    body = {"model": "dev", "prompt": PROMPT, "steps": 30, "width": 128, "height": 128}
    worker = service.worker(variants="dev", FLUXGATE_WORKER_MAX_BATCH="2", **FAST)
    ids = [api.post("/v1/generate", json={**body, "seed": i}).json()["id"] for i in range(6)]
    wait_until(lambda: api.get(f"/v1/jobs/{ids[0]}").json()["progress"]["step"] >= 1, 60, 0.02,
               message="the first batch to be running")
    server = service.redis
    server.stop()  # SIGTERM: the AOF is flushed; the worker's connections drop mid-batch
    time.sleep(10)
    service.redis = EmbeddedRedis(server.data_dir, port=server.port).start()
    # The gateway's first request on each connection that Redis dropped answers 503 + Retry-After.
    wait_until(lambda: api.get(f"/v1/jobs/{ids[0]}").status_code == 200, 10, message="the gateway to reconnect")
    for job_id in ids:
        job = finished(api, job_id, timeout_s=60)
        assert job["status"] == "succeeded", job
    after = api.post("/v1/generate", json={**body, "steps": 2}, headers={"Prefer": "wait=30"})
    assert after.status_code == 200 and after.json()["status"] == "succeeded"
    assert worker.process is not None and worker.process.poll() is None  # the same process throughout


@pytest.mark.timeout(120)
def test_job_that_crashes_the_worker_process_fails_after_3_tries(service: Service) -> None:
    """A prompt that kills its worker process (os._exit, like a native crash) is redelivered to the
    next worker by heartbeat-based reclaim, at most worker_max_attempts (3) times; the 4th start fails
    it with a clear error instead of crashing workers forever. Other jobs finish, and the workers the
    job did not reach stay up. Batching is off so each crash takes down only the poison job (a crash
    mid-batch also restarts its batch mates; see docs/reliability.md)."""
    api, client = service.api, redis.Redis.from_url(service.redis.url, decode_responses=True)
    env = {"FLUXGATE_WORKER_FAULT_CRASH_MARKER": "CRASH", "FLUXGATE_WORKER_BATCHING": "off", **FAST}
    # Four workers started together (one start-up time on the CPU, not four in a row).
    workers: list[Proc] = [start_worker(service.redis.url, service.log_dir, variants="schnell", wait=False, **env)
                           for _ in range(4)]
    service.workers += workers
    for proc in workers:
        name = proc.env["FLUXGATE_WORKER_NAME"]
        wait_until(lambda name=name: client.exists(keys.worker_heartbeat(name)), 60, message=f"{name} heartbeat")
    poison = api.post("/v1/generate", json={**SCHNELL, "prompt": "CRASH " + PROMPT}).json()["id"]
    good = [api.post("/v1/generate", json={**SCHNELL, "seed": i}).json()["id"] for i in range(4)]
    job = finished(api, poison, timeout_s=60)
    assert job["status"] == "failed", job
    assert "started 3 times" in job["error"] and "not retried" in job["error"], job["error"]
    assert int(client.hget(keys.job(poison), "attempts")) == 4  # 3 crashed runs + the start that failed it
    for job_id in good:
        assert finished(api, job_id, timeout_s=60)["status"] == "succeeded"
    dead = [p for p in workers if p.process is not None and p.process.poll() is not None]
    assert len(dead) == 3 and all(p.process.returncode == 70 for p in dead)  # type: ignore[union-attr]
    after = api.post("/v1/generate", json=SCHNELL, headers={"Prefer": "wait=30"})
    assert after.status_code == 200 and after.json()["status"] == "succeeded"  # the survivor still serves
    # The failed job freed its concurrency slot (nothing is held for it).
    assert not client.sismember(keys.active_jobs(client.hget(keys.job(poison), "account")), poison)


QUEUE_CATALOG = """
[variants.tiny]
family = "flux"
preset = "demo-flux1-schnell"
default_steps = 4
max_steps = 8
default_guidance = 0.0
max_guidance = 0.0
default_width = 64
default_height = 64
max_size = 128
max_pixels = 16384
max_queued = 3
"""


@pytest.mark.timeout(30)
def test_queue_depth_cap_turns_overload_into_503_with_retry_after(tmp_path: Path) -> None:
    """No worker, so nothing drains: the 4th submit meets the cap of 3 and gets 503 + Retry-After
    instead of growing the backlog; cancelling a queued job makes room again."""
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(QUEUE_CATALOG)
    server = EmbeddedRedis(tmp_path / "redis").start()
    try:
        app = create_app(GatewaySettings(redis_url=server.url, catalog=str(catalog)))
        headers = {"x-key": make_key(server.url)}
        body = {"model": "tiny", "prompt": PROMPT}
        with TestClient(app) as gw:
            ids = [gw.post("/v1/generate", json=body, headers=headers) for _ in range(3)]
            assert [r.status_code for r in ids] == [202, 202, 202]
            for _ in range(3):  # refused every time, not queued behind the cap
                full = gw.post("/v1/generate", json=body, headers=headers)
                assert full.status_code == 503, full.text
                assert int(full.headers["retry-after"]) > 0 and "overloaded" in full.json()["detail"]
            client = redis.Redis.from_url(server.url, decode_responses=True)
            assert client.xlen(keys.variant_stream("tiny", 20)) == 3
            assert int(client.get(keys.variant_queued("tiny"))) == 3
            gw.post(f"/v1/jobs/{ids[0].json()['id']}/cancel", headers=headers)
            assert gw.post("/v1/generate", json=body, headers=headers).status_code == 202
    finally:
        server.stop()
