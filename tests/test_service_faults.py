"""Faults: a worker killed mid-queue, Redis restarted with jobs queued. Nothing accepted is lost."""

from __future__ import annotations

import httpx
import redis

from store.embedded import EmbeddedRedis
from tests.conftest import Service, make_key, start_gateway, start_worker, wait_until
from tests.test_service_jobs import PROMPT, finished


def _succeeded_events(client: redis.Redis, job_id: str) -> int:
    return sum(1 for _, f in client.xrange(f"fg:job:{job_id}:events") if f[b"event"] == b"succeeded")


def test_worker_killed_mid_queue_every_job_completes_once(service: Service) -> None:
    # A paying account: every job is charged exactly once, reruns included.
    api = httpx.Client(base_url=service.url, headers={"x-key": make_key(service.redis.url, tier="paid",
                                                                         credits=10**6)}, timeout=30)
    client = redis.Redis.from_url(service.redis.url)
    ids = [api.post("/v1/generate", json={"model": "dev", "prompt": PROMPT, "seed": i, "steps": 50,
                                          "width": 128, "height": 128}).json()["id"] for i in range(12)]
    first = service.worker(variants="dev", FLUXGATE_WORKER_MAX_BATCH="2")
    wait_until(lambda: any(api.get(f"/v1/jobs/{i}").json()["status"] == "succeeded" for i in ids), 60,
               message="a first job to finish")
    first.kill()  # kill -9, mid-batch or between batches
    second = service.worker(variants="dev")
    for job_id in ids:
        job = finished(api, job_id, timeout_s=90)
        assert job["status"] == "succeeded", job["error"]
        assert len(job["images"]) == 1
        assert _succeeded_events(client, job_id) == 1
    # The kill really interrupted work: the second worker finished some, at least one of them a rerun.
    second_name = second.env["FLUXGATE_WORKER_NAME"]
    runners = [client.hmget(f"fg:job:{i}", "worker", "attempts") for i in ids]
    assert any(w == second_name.encode() for w, _ in runners)
    assert any(int(a) >= 2 for _, a in runners), runners
    account = api.get("/v1/account").json()
    cost = api.get(f"/v1/jobs/{ids[0]}").json()["cost"]
    assert (account["spent"], account["reserved"], account["balance"]) == (12 * cost, 0, 10**6 - 12 * cost)
    api.close()


def test_redis_restart_keeps_queued_jobs(tmp_path, log_dir) -> None:  # noqa: ANN001
    server = EmbeddedRedis(tmp_path / "redis").start()
    gateway, url = start_gateway(server.url, log_dir)
    worker = None
    try:
        with httpx.Client(base_url=url, headers={"x-key": make_key(server.url)}, timeout=30) as api:
            ids = [api.post("/v1/generate", json={"model": "schnell", "prompt": PROMPT, "seed": i}).json()["id"]
                   for i in range(5)]
            server.stop()  # SIGTERM: the AOF is flushed
            down = api.post("/v1/generate", json={"model": "schnell", "prompt": PROMPT})
            assert down.status_code == 503 and down.headers["retry-after"]
            server = EmbeddedRedis(tmp_path / "redis", port=server.port).start()
            worker = start_worker(server.url, log_dir, variants="schnell")
            for job_id in ids:
                assert finished(api, job_id)["status"] == "succeeded"
    finally:
        if worker:
            worker.stop()
        gateway.stop()
        server.stop()
