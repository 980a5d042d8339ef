"""Batching and scheduling: step-level sessions, priorities with aging, memory caps, OOM fallback,
deadlines. Real pipelines; the service-level tests run real worker processes over a real Redis."""

from __future__ import annotations

import time

import httpx
import numpy as np
import redis
import torch

from models.flux.pipeline import load_flux_pipeline
from models.flux.session import DenoiseSession
from models.interface import ImageRequest
from store.queue import Delivery
from store.records import Job, JobStatus
from tests.conftest import Service, make_key, wait_until
from tests.test_service_jobs import PROMPT, finished
from workers.memory import Fit, MemoryModel, measure_peak
from workers.scheduler import Pending, Scheduler


def _job(i: int, priority: int, created_at: float, width: int = 64, n: int = 1) -> Pending:
    job = Job(id=f"{i:032x}", account="a", key_id="k", variant="schnell", status=JobStatus.QUEUED, prompt="p",
              width=width, height=64, steps=4, guidance=0.0, n=n, seeds=list(range(n)), output_format="png",
              cost=1, priority=priority, created_at=created_at)
    return Pending(Delivery("s", "schnell", f"{i}-0", job.id), job)


def test_session_rows_joining_midway_equal_running_alone() -> None:
    for preset in ("demo-flux1-dev", "demo-flux2-klein"):
        pipe = load_flux_pipeline(preset, {})
        requests = [ImageRequest("a red circle", 1, 64, 64, 4, 3.5), ImageRequest("蓝色的正方形", 2, 64, 64, 6, 2.0),
                    ImageRequest("a green triangle", 3, 64, 64, 2, 1.0)]
        alone = [np.asarray(pipe.generate([r])[0], dtype=int) for r in requests]
        session = DenoiseSession(pipe, 64, 64)
        results = {}
        first = session.add(requests[:1])
        results.update(session.step())  # one step done before the others join
        later = session.add(requests[1:])
        while len(session):
            results.update(session.step())
        for handle, expected in zip(first + later, alone, strict=True):
            assert np.abs(np.asarray(results[handle], dtype=int) - expected).max() <= 1, preset


def test_session_drop_removes_rows() -> None:
    pipe = load_flux_pipeline("demo-flux1-schnell", {})
    session = DenoiseSession(pipe, 64, 64)
    handles = session.add([ImageRequest("x", s, 64, 64, 4, 0.0) for s in range(3)])
    session.step()
    session.drop(handles[1:2])
    done = []
    while len(session):
        done += [h for h, _ in session.step()]
    assert sorted(done) == [handles[0], handles[2]]


def test_scheduler_priority_then_aging() -> None:
    now = time.time()
    scheduler = Scheduler(aging_per_s=1.0)
    scheduler.add([_job(1, 0, now - 2), _job(2, 10, now), _job(3, 0, now - 30)])
    # Paid (10) beats a free job that waited 2 s, but a free job that waited 30 s beats both.
    assert [p.job.id[-1] for p in scheduler.take(("schnell", "text-to-image", 64, 64, 0), 1)] == ["3"]
    assert [p.job.id[-1] for p in scheduler.take(("schnell", "text-to-image", 64, 64, 0), 1)] == ["2"]
    # Only jobs of the chosen key join a batch; the cap counts images.
    scheduler.add([_job(4, 0, now, width=128), _job(5, 0, now, n=3), _job(6, 0, now, n=2)])
    taken = scheduler.take(("schnell", "text-to-image", 64, 64, 0), 4)
    # Job 1 (still waiting, oldest) and job 5 make 4 images; job 6's 2 more would exceed the cap.
    assert [p.job.id[-1] for p in taken] == ["1", "5"]
    assert sorted(p.job.id[-1] for p in scheduler.pending) == ["4", "6"]


def test_memory_model_caps() -> None:
    model = MemoryModel(budget=1000, operator_cap=16)
    model.fits["v"] = Fit(base=100, per_image=200, pixels=64 * 64)
    assert model.cap(("v", "text-to-image", 64, 64, 0)) == 4  # (1000 - 100) // 200
    assert model.cap(("v", "text-to-image", 128, 64, 0)) == 2  # twice the pixels per image
    assert model.cap(("other", "text-to-image", 64, 64, 0)) == 16  # unmeasured: the operator cap
    assert model.lower(("v", "text-to-image", 64, 64, 0), 4) == 2
    assert model.cap(("v", "text-to-image", 64, 64, 0)) == 2


def test_measure_peak_sees_a_real_allocation() -> None:
    def allocate() -> None:
        block = torch.ones(64, 2**20 // 4 * 1)  # 64 MiB of float32
        block.add_(1)

    peak = measure_peak(allocate, torch.device("cpu"))
    assert 40 * 2**20 < peak < 200 * 2**20, peak


def test_oom_halves_the_batch_and_loses_nothing(service: Service) -> None:
    api, client = service.api, redis.Redis.from_url(service.redis.url, decode_responses=True)
    ids = [api.post("/v1/generate", json={"model": "schnell", "prompt": PROMPT, "seed": i, "n": 1 + i % 4}
                    ).json()["id"] for i in range(8)]
    worker = service.worker(variants="schnell", FLUXGATE_WORKER_FAULT_OOM_ABOVE="2",
                            FLUXGATE_WORKER_BATCHING="request", FLUXGATE_WORKER_BATCH_WAIT_MS="200")
    for job_id in ids:
        job = finished(api, job_id)
        assert job["status"] == "succeeded" and len(job["images"]) == job["n"], job["error"]
    name = worker.env["FLUXGATE_WORKER_NAME"]
    expected = sum(1 + i % 4 for i in range(8))
    # Metrics reach Redis with the next heartbeat.
    metrics = wait_until(lambda: (m := client.hgetall(f"fg:workermetrics:{name}")) and
                         float(m.get("schnell:images", 0)) == expected and m, 10)
    assert float(metrics["schnell:oom_errors"]) >= 1
    assert float(metrics["schnell:max_batch_images"]) <= 2


def test_step_batching_lets_a_short_job_finish_first(service: Service) -> None:
    api = service.api
    service.worker(variants="dev", FLUXGATE_WORKER_BATCHING="step")
    body = {"model": "dev", "prompt": PROMPT, "width": 128, "height": 128}
    long_id = api.post("/v1/generate", json={**body, "steps": 50}).json()["id"]
    wait_until(lambda: api.get(f"/v1/jobs/{long_id}").json()["progress"]["step"] >= 2, 60, 0.01)
    short_id = api.post("/v1/generate", json={**body, "steps": 3}).json()["id"]
    short, long = finished(api, short_id), finished(api, long_id)
    assert short["status"] == long["status"] == "succeeded"
    # The short job joined the running batch instead of waiting for the 50-step one to finish.
    assert short["timings"]["finished_at"] < long["timings"]["finished_at"]
    assert short["timings"]["started_at"] < long["timings"]["finished_at"]


def test_paid_runs_before_free(service: Service) -> None:
    free = {"x-key": make_key(service.redis.url, tier="free")}
    paid = {"x-key": make_key(service.redis.url, tier="paid", credits=10**6)}
    body = {"model": "schnell", "prompt": PROMPT}
    free_ids = [service.api.post("/v1/generate", json=body, headers=free).json()["id"] for _ in range(2)]
    paid_id = service.api.post("/v1/generate", json=body, headers=paid).json()["id"]
    service.worker(variants="schnell", FLUXGATE_WORKER_BATCHING="off")
    jobs = {}
    for job_id, headers in [*((i, free) for i in free_ids), (paid_id, paid)]:
        with httpx.Client(base_url=service.url, headers=headers) as client:
            jobs[job_id] = finished(client, job_id)
    assert all(j["status"] == "succeeded" for j in jobs.values())
    assert jobs[paid_id]["timings"]["started_at"] <= min(jobs[i]["timings"]["started_at"] for i in free_ids)


def test_deadline_expires_unstarted_job_without_charge(service: Service) -> None:
    headers = {"x-key": make_key(service.redis.url, tier="paid", credits=1000)}
    body = {"model": "schnell", "prompt": PROMPT, "deadline_s": 0.2}
    job_id = service.api.post("/v1/generate", json=body, headers=headers).json()["id"]
    assert service.api.get("/v1/account", headers=headers).json()["reserved"] == 300
    time.sleep(0.4)
    service.worker(variants="schnell")
    with httpx.Client(base_url=service.url, headers=headers) as client:
        job = finished(client, job_id)
    assert job["status"] == "expired" and "deadline" in job["error"] and job["images"] == []
    account = service.api.get("/v1/account", headers=headers).json()
    assert (account["balance"], account["reserved"], account["spent"]) == (1000, 0, 0)


def test_poison_job_fails_alone_and_the_worker_stays_up(service: Service) -> None:
    api = service.api
    body = {"model": "schnell", "prompt": PROMPT}
    good = [api.post("/v1/generate", json={**body, "seed": i}).json()["id"] for i in range(3)]
    poison = api.post("/v1/generate", json={**body, "prompt": "POISON " + PROMPT}).json()["id"]
    service.worker(variants="schnell", FLUXGATE_WORKER_FAULT_POISON_MARKER="POISON",
                   FLUXGATE_WORKER_BATCH_WAIT_MS="100")
    job = finished(api, poison)
    assert job["status"] == "failed" and "failed 3 times" in job["error"] and "POISON" in job["error"]
    for job_id in good:  # batched with the poison job, isolated from it
        assert finished(api, job_id)["status"] == "succeeded"
    after = api.post("/v1/generate", json=body, headers={"Prefer": "wait=30"})
    assert after.status_code == 200 and after.json()["status"] == "succeeded"  # the worker is still up
