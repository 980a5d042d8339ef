"""The gateway's contract without running jobs: auth, validation, models, health, Redis down."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import GatewaySettings
from store.embedded import free_port
from tests.conftest import make_key

GOOD = {"model": "schnell", "prompt": "a red circle on the left on a white background"}


def test_gateway_never_imports_torch() -> None:
    code = (
        "import sys\n"
        "from app.main import create_app\n"
        "from fastapi.testclient import TestClient\n"
        "TestClient(create_app()).get('/healthz')\n"
        "assert 'torch' not in sys.modules, 'gateway imported torch'\n"
        "assert 'models' not in sys.modules and 'workers' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_v1_route_needs_a_key(gateway: str) -> None:
    routes = [("POST", "/v1/generate"), ("GET", "/v1/models"), ("GET", "/v1/jobs/" + "0" * 32),
              ("GET", "/v1/jobs/" + "0" * 32 + "/events"), ("POST", "/v1/jobs/" + "0" * 32 + "/cancel"),
              ("GET", "/v1/jobs/" + "0" * 32 + "/images/0"), ("POST", "/v1/admin/keys")]
    for method, path in routes:
        missing = httpx.request(method, gateway + path, json=GOOD)
        assert missing.status_code == 401, (method, path)
        assert "API key" in missing.json()["detail"]
        wrong = httpx.request(method, gateway + path, json=GOOD, headers={"Authorization": "Bearer fg_nope"})
        assert wrong.status_code == 401, (method, path)


def test_bearer_and_x_key_both_work(gateway: str, redis_server) -> None:  # noqa: ANN001
    key = make_key(redis_server.url)
    assert httpx.get(f"{gateway}/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert httpx.get(f"{gateway}/v1/models", headers={"x-key": key}).status_code == 200


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"model": "nope"}, "model"),
        ({"width": 72}, "width"),
        ({"height": 8}, "height"),
        ({"width": 4096}, "width"),
        ({"steps": 0}, "steps"),
        ({"steps": 1000}, "steps"),
        ({"guidance": 5.0}, "guidance"),  # schnell takes no guidance
        ({"n": 0}, "n"),
        ({"n": 5}, "n"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x" * 2001}, "prompt"),
        ({"seed": -1}, "seed"),
        ({"output_format": "gif"}, "output_format"),
        ({"colour": "red"}, "colour"),
        ({"width": "wide"}, "width"),
    ],
)
def test_bad_input_names_the_field(api: httpx.Client, change: dict, field: str) -> None:
    response = api.post("/v1/generate", json={**GOOD, **change})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert any(field in [str(p) for p in item["loc"]] for item in detail), detail
    assert all(item["msg"] for item in detail)


def test_too_many_pixels(api: httpx.Client) -> None:
    response = api.post("/v1/generate", json={**GOOD, "model": "dev", "width": 128, "height": 144})
    assert response.status_code == 422
    assert "pixels" in response.text or "between" in response.text


def test_invalid_json(api: httpx.Client) -> None:
    response = api.post("/v1/generate", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code in (400, 422)
    assert response.json()["detail"]


def test_models_lists_the_catalog(api: httpx.Client) -> None:
    models = {m["id"]: m for m in api.get("/v1/models").json()}
    assert {"schnell", "dev", "klein"} <= set(models)
    assert models["schnell"]["defaults"]["steps"] == 4
    assert models["dev"]["limits"]["max_size"] == 128
    assert models["schnell"]["price"]["first_megapixel_millicredits"] > 0


def test_admin_creates_keys_and_others_cannot(gateway: str, redis_server) -> None:  # noqa: ANN001
    admin = make_key(redis_server.url, admin=True)
    created = httpx.post(f"{gateway}/v1/admin/keys", json={"name": "alice"}, headers={"x-key": admin})
    assert created.status_code == 201
    new_key = created.json()["key"]
    assert new_key.startswith("fg_")
    assert httpx.get(f"{gateway}/v1/models", headers={"x-key": new_key}).status_code == 200
    refused = httpx.post(f"{gateway}/v1/admin/keys", json={}, headers={"x-key": new_key})
    assert refused.status_code == 403
    # Only the hash is stored: the plaintext key appears nowhere in Redis.
    import redis

    client = redis.Redis.from_url(redis_server.url)
    for name in client.scan_iter("fg:apikey:*"):
        assert new_key.encode() not in name
        assert all(new_key.encode() not in v for v in client.hgetall(name).values())


def test_submit_returns_202_with_links(api: httpx.Client, gateway: str) -> None:
    response = api.post("/v1/generate", json={**GOOD, "model": "dev", "n": 2, "seed": 7})
    assert response.status_code == 202
    body = response.json()
    assert len(body["id"]) == 32 and body["status"] == "queued"
    assert body["polling_url"] == f"{gateway}/v1/jobs/{body['id']}"
    assert body["events_url"].endswith("/events") and body["cancel_url"].endswith("/cancel")
    assert body["queue_position"] >= 1 and body["cost"] > 0
    job = api.get(body["polling_url"]).json()
    assert job["seeds"] == [7, 8] and job["steps"] == 20 and job["width"] == 64


def test_another_accounts_job_is_404(api: httpx.Client, gateway: str, redis_server) -> None:  # noqa: ANN001
    job_id = api.post("/v1/generate", json=GOOD).json()["id"]
    other = {"x-key": make_key(redis_server.url)}
    for path in ("", "/events", "/images/0"):
        assert httpx.get(f"{gateway}/v1/jobs/{job_id}{path}", headers=other).status_code == 404
    assert httpx.post(f"{gateway}/v1/jobs/{job_id}/cancel", headers=other).status_code == 404
    assert api.get(f"/v1/jobs/{job_id}").status_code == 200


def test_redis_down_is_503_with_retry_after() -> None:
    settings = GatewaySettings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with TestClient(create_app(settings)) as client:
        response = client.post("/v1/generate", json=GOOD, headers={"x-key": "fg_" + "a" * 38})
        # A malformed key is refused before Redis is touched; a well-formed one needs Redis.
        assert response.status_code == 401
        from store import apikeys

        response = client.post("/v1/generate", json=GOOD, headers={"x-key": apikeys.generate()})
        assert response.status_code == 503
        assert response.headers["retry-after"]
        assert client.get("/readyz").status_code == 503
        assert client.get("/healthz").status_code == 200
