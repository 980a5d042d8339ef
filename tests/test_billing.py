"""Accounts, tiers, quotas, credits, settlement, idempotency and usage, over a real Redis.

The gateway runs in-process (TestClient) so each test can pick its own tier table; jobs run on the
session's real worker process.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import GatewaySettings
from store.embedded import EmbeddedRedis
from store.queue import WorkQueue
from store.records import Job
from tests.conftest import make_key, wait_until

SCHNELL = {"model": "schnell", "prompt": "a green triangle at the top on a gray background"}
TIERS = """
[tiers.free]
max_megapixels = 0.01
images_per_day = 5
requests_per_minute = 4
concurrent_jobs = 2

[tiers.paid]
pays_credits = true
priority = 10

[tiers.internal]
priority = 20
"""


@pytest.fixture
def gateway_app(redis_server, tmp_path: Path):  # noqa: ANN001, ANN201
    tiers = tmp_path / "tiers.toml"
    tiers.write_text(TIERS)
    app = create_app(GatewaySettings(redis_url=redis_server.url, tiers=str(tiers)))
    with TestClient(app) as client:
        yield client


def admin_headers(redis_url: str) -> dict[str, str]:
    return {"x-key": make_key(redis_url, admin=True)}


def wait_job(client: TestClient, headers: dict, job_id: str) -> dict:
    def done() -> dict | None:
        job = client.get(f"/v1/jobs/{job_id}", headers=headers).json()
        return job if job["status"] not in ("queued", "running") else None

    return wait_until(done, 60, 0.05, message=f"job {job_id}")


def account_of(client: TestClient, headers: dict) -> dict:
    return client.get("/v1/account", headers=headers).json()


def test_rate_limit_is_429_with_headers(gateway_app: TestClient, redis_server) -> None:  # noqa: ANN001
    headers = {"x-key": make_key(redis_server.url, tier="free")}
    # No worker serves "dev" for free accounts: check rate before concurrency by cancelling each job.
    codes = []
    for _ in range(5):
        response = gateway_app.post("/v1/generate", json={**SCHNELL, "steps": 1}, headers=headers)
        codes.append(response.status_code)
        if response.status_code == 202:
            gateway_app.post(f"/v1/jobs/{response.json()['id']}/cancel", headers=headers)
    assert codes[:4] == [202] * 4 and codes[4] == 429, codes
    assert "rate limit" in response.json()["detail"]
    assert 1 <= int(response.headers["retry-after"]) <= 61
    assert '"requests";q=4;w=60' in response.headers["ratelimit-policy"]
    assert '"requests";r=0' in response.headers["ratelimit"]


def test_daily_quota_and_concurrency(gateway_app: TestClient, redis_server, worker) -> None:  # noqa: ANN001
    headers = {"x-key": make_key(redis_server.url, tier="free")}
    first = gateway_app.post("/v1/generate", json={**SCHNELL, "n": 3}, headers=headers)
    assert first.status_code == 202
    wait_job(gateway_app, headers, first.json()["id"])
    too_many = gateway_app.post("/v1/generate", json={**SCHNELL, "n": 3}, headers=headers)
    assert too_many.status_code == 429 and "daily quota" in too_many.json()["detail"]
    assert int(too_many.headers["retry-after"]) > 0
    assert account_of(gateway_app, headers)["remaining"]["images_today"] == 2
    # A cancelled job gives its images back to the daily quota.
    ok = gateway_app.post("/v1/generate", json={**SCHNELL, "n": 2, "steps": 8}, headers=headers)
    assert ok.status_code == 202


def test_concurrency_cap(tmp_path: Path) -> None:
    # A Redis no worker reads: jobs stay open, so two of them fill the free tier's cap.
    server = EmbeddedRedis(tmp_path / "idle").start()
    try:
        tiers = tmp_path / "tiers.toml"
        tiers.write_text(TIERS)
        with TestClient(create_app(GatewaySettings(redis_url=server.url, tiers=str(tiers)))) as client:
            headers = {"x-key": make_key(server.url, tier="free")}
            responses = [client.post("/v1/generate", json=SCHNELL, headers=headers) for _ in range(3)]
            assert [r.status_code for r in responses] == [202, 202, 429]
            assert "concurrency" in responses[2].json()["detail"] and responses[2].headers["retry-after"]
            assert '"concurrency";r=0' in responses[2].headers["ratelimit"]
            # Cancelling one frees its slot at once.
            client.post(f"/v1/jobs/{responses[0].json()['id']}/cancel", headers=headers)
            assert client.post("/v1/generate", json=SCHNELL, headers=headers).status_code == 202
    finally:
        server.stop()


def test_tier_may_not_use_variant_or_size(gateway_app: TestClient, redis_server) -> None:  # noqa: ANN001
    headers = {"x-key": make_key(redis_server.url, tier="free")}
    response = gateway_app.post("/v1/generate", json={**SCHNELL, "model": "dev"}, headers=headers)
    assert response.status_code == 403 and "free tier may not use dev" in response.json()["detail"]
    response = gateway_app.post("/v1/generate", json={**SCHNELL, "width": 128, "height": 128}, headers=headers)
    assert response.status_code == 403 and "megapixels" in response.json()["detail"]


def test_credits_reserved_charged_once_and_released(gateway_app: TestClient, redis_server, worker) -> None:  # noqa: ANN001
    headers = {"x-key": make_key(redis_server.url, tier="paid", credits=1100)}
    price = 300  # schnell: 300 milli-credits for the first megapixel
    job = gateway_app.post("/v1/generate", json={**SCHNELL, "n": 2}, headers=headers)
    assert job.status_code == 202 and job.json()["cost"] == 2 * price
    assert wait_job(gateway_app, headers, job.json()["id"])["status"] == "succeeded"
    account = account_of(gateway_app, headers)
    assert (account["balance"], account["reserved"], account["spent"]) == (1100 - 2 * price, 0, 2 * price)
    # 500 left: two images (600) are refused with 402, nothing reserved.
    refused = gateway_app.post("/v1/generate", json={**SCHNELL, "n": 2}, headers=headers)
    assert refused.status_code == 402 and "insufficient credits" in refused.json()["detail"]
    # A cancelled job's reservation comes back.
    queued = gateway_app.post("/v1/generate", json={**SCHNELL, "model": "klein"}, headers=headers)
    assert queued.status_code == 202
    gateway_app.post(f"/v1/jobs/{queued.json()['id']}/cancel", headers=headers)
    final = wait_job(gateway_app, headers, queued.json()["id"])
    account = account_of(gateway_app, headers)
    if final["status"] == "canceled":
        assert (account["balance"], account["spent"]) == (1100 - 2 * price, 2 * price)
    else:  # it finished before the cancel arrived: charged once
        assert account["spent"] == 2 * price + final["cost"]
    assert account["reserved"] == 0


def test_settlement_is_idempotent_by_job_id(gateway_app: TestClient, redis_server, worker) -> None:  # noqa: ANN001
    headers = {"x-key": make_key(redis_server.url, tier="paid", credits=5000)}
    job_id = gateway_app.post("/v1/generate", json=SCHNELL, headers=headers).json()["id"]
    wait_job(gateway_app, headers, job_id)
    before = account_of(gateway_app, headers)
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    job = Job.from_hash(client.hgetall(f"fg:job:{job_id}"))
    # A duplicate delivery finishing again (or failing after the fact) changes nothing.
    queue = WorkQueue(redis_server.url, "duplicate", ["schnell"], 3600)
    assert queue.finish(None, job, "succeeded", images=1) is False
    assert queue.finish(None, job, "failed", error="late") is False
    assert account_of(gateway_app, headers) == before
    ledger = [f for _, f in client.xrange(f"fg:account:{job.account}:ledger")]
    assert [f["job"] for f in ledger] == [job_id] and ledger[0]["credits"] == str(job.cost)


def test_idempotency_key(gateway_app: TestClient, redis_server, worker) -> None:  # noqa: ANN001
    headers = {"x-key": make_key(redis_server.url, tier="paid", credits=5000), "Idempotency-Key": "order-17"}
    first = gateway_app.post("/v1/generate", json=SCHNELL, headers=headers)
    again = gateway_app.post("/v1/generate", json=SCHNELL, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"] and again.headers["idempotent-replayed"] == "true"
    wait_job(gateway_app, headers, first.json()["id"])
    assert account_of(gateway_app, headers)["spent"] == first.json()["cost"]
    other = gateway_app.post("/v1/generate", json={**SCHNELL, "seed": 3}, headers=headers)
    assert other.status_code == 422 and "different request body" in other.text
    too_long = gateway_app.post("/v1/generate", json=SCHNELL, headers={**headers, "Idempotency-Key": "k" * 256})
    assert too_long.status_code == 422


def test_usage_and_export(gateway_app: TestClient, redis_server, worker) -> None:  # noqa: ANN001
    headers = {"x-key": make_key(redis_server.url, tier="paid", credits=10_000)}
    for body in (SCHNELL, {**SCHNELL, "n": 2}, {**SCHNELL, "model": "klein"}):
        wait_job(gateway_app, headers, gateway_app.post("/v1/generate", json=body, headers=headers).json()["id"])
    by_variant = gateway_app.get("/v1/usage", params={"group_by": "variant"}, headers=headers).json()
    groups = {g["group"]: g for g in by_variant["groups"]}
    assert groups["schnell"]["images"] == 3 and groups["schnell"]["credits"] == 900
    assert groups["klein"]["jobs"] == 1 and by_variant["total"]["jobs"] == 3
    by_day = gateway_app.get("/v1/usage", headers=headers).json()
    assert len(by_day["groups"]) == 1 and by_day["total"]["images"] == 4
    empty = gateway_app.get("/v1/usage", params={"from": "2020-01-01", "to": "2020-01-02"}, headers=headers)
    assert empty.json()["total"]["jobs"] == 0

    admin = admin_headers(redis_server.url)
    assert gateway_app.get("/v1/admin/usage/export", headers=headers).status_code == 403
    first = gateway_app.get("/v1/admin/usage/export", params={"limit": 2}, headers=admin)
    lines = [json.loads(line) for line in first.text.splitlines()]
    assert len(lines) == 2 and first.headers["next-cursor"] == lines[-1]["cursor"]
    rest = gateway_app.get("/v1/admin/usage/export", params={"cursor": first.headers["next-cursor"],
                                                              "format": "csv", "limit": 100000}, headers=admin)
    rows = list(csv.DictReader(io.StringIO(rest.text)))
    assert rows and all(r["cursor"] > lines[-1]["cursor"] for r in rows)
    assert {"job", "account", "key", "variant", "images", "megapixels", "credits"} <= set(rows[0])


def test_admin_accounts_keys_revoke(gateway_app: TestClient, redis_server) -> None:  # noqa: ANN001
    admin = admin_headers(redis_server.url)
    account = gateway_app.post("/v1/admin/accounts", json={"name": "acme", "tier": "paid", "credits": 50},
                               headers=admin).json()
    assert account["tier"] == "paid" and account["balance"] == 50
    bad = gateway_app.post("/v1/admin/accounts", json={"tier": "gold"}, headers=admin)
    assert bad.status_code == 422 and "unknown tier" in bad.text
    created = gateway_app.post("/v1/admin/keys", json={"account": account["id"], "name": "ci"}, headers=admin)
    key = created.json()["key"]
    user = {"x-key": key}
    assert gateway_app.get("/v1/account", headers=user).json()["balance"] == 50
    credited = gateway_app.post(f"/v1/admin/accounts/{account['id']}/credits", json={"amount": 950}, headers=admin)
    assert credited.json()["balance"] == 1000
    gateway_app.put(f"/v1/admin/accounts/{account['id']}/tier", json={"tier": "free"}, headers=admin)
    assert gateway_app.get("/v1/account", headers=user).json()["tier"] == "free"
    listed = gateway_app.get(f"/v1/admin/accounts/{account['id']}/keys", headers=admin).json()
    assert [k["id"] for k in listed] == [created.json()["id"]] and "key" not in listed[0]
    assert gateway_app.post(f"/v1/admin/keys/{created.json()['id']}/revoke", headers=admin).status_code == 204
    assert gateway_app.get("/v1/account", headers=user).status_code == 401  # refused at once
    assert gateway_app.post("/v1/admin/accounts", json={}, headers=user).status_code == 401


def test_every_v1_response_carries_quota_headers(gateway_app: TestClient, redis_server) -> None:  # noqa: ANN001
    headers = {"x-key": make_key(redis_server.url, tier="free")}
    for response in (gateway_app.get("/v1/models", headers=headers),
                     gateway_app.get("/v1/jobs/" + "0" * 32, headers=headers),
                     gateway_app.post("/v1/generate", json={**SCHNELL, "model": "nope"}, headers=headers)):
        assert "ratelimit" in response.headers and "x-credits-balance" in response.headers, response


def test_cli_accounts_and_keys(redis_server) -> None:  # noqa: ANN001
    def cli(*args: str) -> str:
        return subprocess.run([sys.executable, "-m", "cli.main", *args], check=True, capture_output=True,
                              text=True, env={**__import__("os").environ, "FLUXGATE_REDIS_URL": redis_server.url},
                              ).stdout

    account = json.loads(cli("accounts", "create", "--name", "cli", "--tier", "paid", "--credits", "7"))
    assert cli("accounts", "add-credits", account["id"], "3").strip() == "10"
    key = cli("keys", "create", "--account", account["id"]).splitlines()[0]
    assert key.startswith("fg_")
    listed = [json.loads(line) for line in cli("keys", "list", account["id"]).splitlines()]
    assert len(listed) == 1 and key not in json.dumps(listed)
    assert "revoked" in cli("keys", "revoke", listed[0]["id"])
