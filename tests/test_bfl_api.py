"""BFL-compatible routes: submit to /v1/<endpoint>, poll /v1/get_result, download result.sample the way
BFL's own examples do (x-key on the API, a bare GET for the sample)."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest
from PIL import Image

from store.embedded import EmbeddedRedis
from tests.conftest import Proc, make_key, wait_until
from tests.test_openai_api import start_idle_gateway

PROMPT = "a yellow star at the top on a white background"


def poll(polling_url: str, key: str, timeout_s: float = 60) -> dict:
    """What a BFL client does: GET polling_url until the status is not Pending."""
    def done() -> dict | None:
        result = httpx.get(polling_url, headers={"x-key": key, "accept": "application/json"}).json()
        return result if result["status"] != "Pending" else None

    return wait_until(done, timeout_s, interval_s=0.1, message="BFL result")


@pytest.fixture
def key(redis_server: EmbeddedRedis) -> str:
    return make_key(redis_server.url)


def test_submit_poll_and_download(gateway: str, key: str, worker: Proc) -> None:
    body = {"prompt": PROMPT, "width": 64, "height": 48, "seed": 3, "output_format": "png",
            "safety_tolerance": 2, "prompt_upsampling": False}  # BFL-only fields are accepted
    submitted = httpx.post(f"{gateway}/v1/flux-2-klein-4b", json=body, headers={"x-key": key})
    assert submitted.status_code == 200, submitted.text
    task = submitted.json()
    assert set(task) >= {"id", "polling_url", "cost"} and task["cost"] == 0.5  # credits: 500 milli-credits
    assert task["polling_url"] == f"{gateway}/v1/get_result?id={task['id']}"
    result = poll(task["polling_url"], key)
    assert result["status"] == "Ready" and result["result"]["seed"] == 3 and result["progress"] == 1.0
    sample = httpx.get(result["result"]["sample"])  # no key, as BFL clients download samples
    assert sample.status_code == 200
    png = Image.open(io.BytesIO(sample.content))
    assert png.format == "PNG" and png.size == (64, 48)
    job = httpx.get(f"{gateway}/v1/jobs/{task['id']}", headers={"x-key": key}).json()
    assert job["model"] == "klein"  # the endpoint table mapped the BFL name to the demo variant


def test_endpoint_table_and_aspect_ratio(gateway: str, key: str, redis_server: EmbeddedRedis) -> None:
    submitted = httpx.post(f"{gateway}/v1/flux-dev", json={"prompt": PROMPT, "aspect_ratio": "2:1"},
                           headers={"x-key": key}).json()
    job = httpx.get(f"{gateway}/v1/jobs/{submitted['id']}", headers={"x-key": key}).json()
    assert job["model"] == "dev" and (job["width"], job["height"]) == (96, 48)
    assert job["output_format"] == "jpeg"  # BFL's default
    free = make_key(redis_server.url, tier="free")
    assert httpx.post(f"{gateway}/v1/flux-dev", json={"prompt": PROMPT}, headers={"x-key": free}).status_code == 403
    refused = httpx.post(f"{gateway}/v1/flux-dev", json={"prompt": PROMPT, "input_image": "aGk="},
                         headers={"x-key": key})
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", "input_image"]
    assert httpx.post(f"{gateway}/v1/flux-dev", json={"prompt": PROMPT}).status_code == 401


def test_no_shadowing_of_other_routes(gateway: str, key: str) -> None:
    paths = httpx.get(f"{gateway}/openapi.json").json()["paths"]
    assert {"/v1/flux-dev", "/v1/flux-schnell", "/v1/flux-2-klein-4b", "/v1/get_result", "/v1/generate"} <= set(paths)
    # Only literal endpoint names exist: a variant name or any other word is not a BFL route.
    assert httpx.post(f"{gateway}/v1/schnell", json={"prompt": PROMPT}, headers={"x-key": key}).status_code == 404
    generated = httpx.post(f"{gateway}/v1/generate", json={"model": "schnell", "prompt": PROMPT},
                           headers={"x-key": key})
    assert generated.status_code == 202 and "events_url" in generated.json()


def test_task_not_found(gateway: str, key: str, redis_server: EmbeddedRedis) -> None:
    missing = httpx.get(f"{gateway}/v1/get_result", params={"id": "0" * 32}, headers={"x-key": key}).json()
    assert missing["status"] == "Task not found"
    assert httpx.get(f"{gateway}/v1/get_result", params={"id": "nope"}, headers={"x-key": key}).json()["status"] \
        == "Task not found"
    theirs = httpx.post(f"{gateway}/v1/flux-schnell", json={"prompt": PROMPT}, headers={"x-key": key}).json()
    other = make_key(redis_server.url)
    assert httpx.get(theirs["polling_url"], headers={"x-key": other}).json()["status"] == "Task not found"


def test_pending_then_error(redis_server: EmbeddedRedis, log_dir: Path, tmp_path: Path, key: str) -> None:
    proc, url = start_idle_gateway(redis_server.url, log_dir, tmp_path, FLUXGATE_BFL_ENDPOINTS="flux-idle=idle")
    try:
        task = httpx.post(f"{url}/v1/flux-idle", json={"prompt": PROMPT}, headers={"x-key": key}).json()
        pending = httpx.get(task["polling_url"], headers={"x-key": key}).json()
        assert pending["status"] == "Pending" and pending["progress"] == 0.0 and pending["result"] is None
        httpx.post(f"{url}/v1/jobs/{task['id']}/cancel", headers={"x-key": key})
        failed = httpx.get(task["polling_url"], headers={"x-key": key}).json()
        assert failed["status"] == "Error" and "canceled" in failed["details"]["error"]
    finally:
        proc.stop()


def test_flux2_tiers_are_served_with_their_own_limits_and_prices(gateway: str, key: str,
                                                                 redis_server: EmbeddedRedis) -> None:
    # The demo's flex/pro/max: klein's weights under their own defaults, prices and tiers.
    models = {m["id"]: m for m in httpx.get(f"{gateway}/v1/models", headers={"x-key": key}).json()}
    costs = [httpx.post(f"{gateway}/v1/generate", json={"model": name, "prompt": PROMPT},
                        headers={"x-key": key}).json()["cost"] for name in ("klein", "flex", "pro", "max")]
    assert costs == sorted(costs) and len(set(costs)) == 4, costs
    assert models["flex"]["limits"]["max_steps"] > models["klein"]["limits"]["max_steps"]
    submitted = httpx.post(f"{gateway}/v1/flux-2-pro", json={"prompt": PROMPT}, headers={"x-key": key}).json()
    job = httpx.get(f"{gateway}/v1/jobs/{submitted['id']}", headers={"x-key": key}).json()
    assert job["model"] == "pro"
    free = make_key(redis_server.url, tier="free")
    assert httpx.post(f"{gateway}/v1/flux-2-max", json={"prompt": PROMPT}, headers={"x-key": free}).status_code == 403
