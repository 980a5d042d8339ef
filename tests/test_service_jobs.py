"""Jobs end to end: real gateway and worker processes over a real Redis."""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor

import httpx
from PIL import Image

from tests.conftest import Proc, Service, wait_until

PROMPT = "a blue square on the right on a black background"


def finished(api: httpx.Client, job_id: str, timeout_s: float = 60) -> dict:
    def terminal() -> dict | None:
        job = api.get(f"/v1/jobs/{job_id}").json()
        return job if job["status"] not in ("queued", "running") else None

    return wait_until(terminal, timeout_s, interval_s=0.1, message=f"job {job_id} to finish")


def read_sse(response: httpx.Response) -> list[tuple[str, str, dict]]:
    events, current = [], {}
    for line in response.iter_lines():
        if line.startswith(":"):
            continue
        if not line:
            if current:
                events.append((current["id"], current["event"], json.loads(current["data"])))
            current = {}
            continue
        name, _, value = line.partition(": ")
        current[name] = value
    return events


def test_submit_poll_png(api: httpx.Client, worker: Proc) -> None:
    submitted = api.post("/v1/generate", json={"model": "schnell", "prompt": PROMPT, "width": 96, "height": 64,
                                               "seed": 42, "n": 2})
    assert submitted.status_code == 202
    job = finished(api, submitted.json()["id"])
    assert job["status"] == "succeeded", job
    assert [img["seed"] for img in job["images"]] == [42, 43]
    assert job["progress"] == {"step": 4, "total": 4}
    assert job["timings"]["started_at"] >= job["timings"]["created_at"]
    assert job["expires_at"] > job["timings"]["finished_at"]
    for image in job["images"]:
        response = api.get(image["url"])
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        png = Image.open(io.BytesIO(response.content))
        assert png.format == "PNG" and png.size == (96, 64)
    assert api.get(job["images"][0]["url"].replace("/images/0", "/images/2")).status_code == 404


def test_same_seed_same_image_and_formats(api: httpx.Client, worker: Proc) -> None:
    body = {"model": "klein", "prompt": PROMPT, "seed": 5, "output_format": "webp"}
    first = finished(api, api.post("/v1/generate", json=body).json()["id"])
    second = finished(api, api.post("/v1/generate", json={**body, "output_format": "png"}).json()["id"])
    webp = api.get(first["images"][0]["url"])
    assert webp.headers["content-type"] == "image/webp"
    assert Image.open(io.BytesIO(webp.content)).format == "WEBP"
    again = finished(api, api.post("/v1/generate", json={**body, "output_format": "png"}).json()["id"])
    assert api.get(second["images"][0]["url"]).content == api.get(again["images"][0]["url"]).content


def test_prefer_wait_returns_the_finished_job(api: httpx.Client, worker: Proc) -> None:
    response = api.post("/v1/generate", json={"model": "schnell", "prompt": PROMPT},
                        headers={"Prefer": "wait=30"})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "succeeded" and response.json()["images"]


def test_sse_sequence_and_resume(api: httpx.Client, worker: Proc) -> None:
    job_id = api.post("/v1/generate", json={"model": "dev", "prompt": PROMPT, "steps": 10}).json()["id"]
    with api.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = read_sse(response)
    names = [name for _, name, _ in events]
    assert names[0] == "queued" and names[1] == "running" and names[-1] == "succeeded", names
    progress = [data for _, name, data in events if name == "progress"]
    assert progress and progress[-1]["step"] == progress[-1]["total"] == 10
    assert [p["step"] for p in progress] == sorted(p["step"] for p in progress)
    # Resuming after the first event replays everything after it, and nothing before.
    with api.stream("GET", f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": events[0][0]}) as response:
        resumed = read_sse(response)
    assert [e[0] for e in resumed] == [e[0] for e in events[1:]]


def test_cancel_while_queued_never_runs(service: Service) -> None:
    api = service.api
    # No worker runs yet, so the job stays queued.
    job_id = api.post("/v1/generate", json={"model": "dev", "prompt": PROMPT}).json()["id"]
    canceled = api.post(f"/v1/jobs/{job_id}/cancel").json()
    assert canceled["status"] == "canceled"
    assert api.get(f"/v1/jobs/{job_id}/images/0").status_code == 404
    later = api.post("/v1/generate", json={"model": "dev", "prompt": PROMPT, "steps": 2}).json()["id"]
    service.worker(variants="dev")
    assert finished(api, later)["status"] == "succeeded"
    job = api.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "canceled" and job["timings"]["started_at"] is None
    # The account's job list shows every state, newest first.
    listed = [(j["id"], j["status"]) for j in api.get("/v1/jobs").json()]
    assert listed[:2] == [(later, "succeeded"), (job_id, "canceled")], listed


def test_cancel_while_running_stops_at_next_step(api: httpx.Client, worker: Proc) -> None:
    job_id = api.post("/v1/generate", json={"model": "dev", "prompt": PROMPT, "steps": 50, "width": 128,
                                            "height": 128, "n": 1}).json()["id"]
    wait_until(lambda: api.get(f"/v1/jobs/{job_id}").json()["progress"]["step"] >= 1, 60, 0.02,
               message="the job to start running")
    assert api.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    job = finished(api, job_id)
    assert job["status"] == "canceled", job
    assert job["progress"]["step"] < 50 and job["images"] == []


def test_fifty_concurrent_submits_all_complete(api: httpx.Client, worker: Proc) -> None:
    def submit(i: int) -> str:
        response = api.post("/v1/generate", json={"model": "schnell", "prompt": PROMPT, "seed": i})
        assert response.status_code == 202, response.text
        return response.json()["id"]

    with ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(submit, range(50)))
    assert len(set(ids)) == 50
    for job_id in ids:
        job = finished(api, job_id, timeout_s=120)
        assert job["status"] == "succeeded" and len(job["images"]) == 1
