"""Security properties, each shown against a real Redis: keys stored and found only by hash, revocation
at once, unguessable ids, another account's jobs invisible on every route, admin routes closed to other
keys, signed delivery links that cannot be forged or replayed after expiry, the body size limit, and no
secret in any log line of a real gateway and worker."""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import GatewaySettings
from store import apikeys, keys
from store.embedded import EmbeddedRedis
from tests.conftest import Service, make_key
from tests.test_service_jobs import PROMPT, finished

BODY = {"model": "schnell", "prompt": PROMPT}


@pytest.fixture
def gw(redis_server: EmbeddedRedis) -> Iterator[TestClient]:
    with TestClient(create_app(GatewaySettings(redis_url=redis_server.url))) as client:
        yield client


def test_keys_are_stored_and_found_only_by_hash(gw: TestClient, redis_server: EmbeddedRedis) -> None:
    """Why there is no timing oracle: the presented key is hashed (SHA-256) and the digest is looked up
    as an exact Redis key, so the time taken does not depend on how many leading characters of a real
    key a guess shares (nothing compares the secret character by character). A malformed key fails its
    CRC checksum (compared with compare_digest) before Redis is asked at all."""
    key = make_key(redis_server.url)
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    assert client.exists(keys.api_key(hashlib.sha256(key.encode()).hexdigest()))
    record = client.hgetall(keys.api_key(apikeys.hash_key(key)))
    assert key not in str(record) and key[3:20] not in str(record)  # the plaintext is stored nowhere
    assert gw.get("/v1/account", headers={"x-key": key}).status_code == 200
    # One changed character breaks the checksum: refused before any Redis lookup.
    forged = key[:10] + ("A" if key[10] != "A" else "B") + key[11:]
    assert not apikeys.well_formed(forged)
    for bad in (forged, "fg_" + "0" * 38, "x" * 10_000):
        r = gw.get("/v1/account", headers={"Authorization": f"Bearer {bad}"})
        assert r.status_code == 401 and "invalid or revoked" in r.json()["detail"]


def test_revoked_key_is_refused_on_the_next_request(gw: TestClient, redis_server: EmbeddedRedis) -> None:
    admin = {"x-key": make_key(redis_server.url, admin=True)}
    created = gw.post("/v1/admin/keys", json={"name": "to revoke", "tier": "internal"}, headers=admin).json()
    user = {"x-key": created["key"]}
    assert gw.post("/v1/generate", json=BODY, headers=user).status_code == 202
    assert gw.post(f"/v1/admin/keys/{created['id']}/revoke", headers=admin).status_code == 204
    for method, path in (("GET", "/v1/account"), ("POST", "/v1/generate")):
        assert gw.request(method, path, json=BODY, headers=user).status_code == 401  # no cache, no grace period


def test_job_ids_carry_128_random_bits(gw: TestClient, redis_server: EmbeddedRedis) -> None:
    headers = {"x-key": make_key(redis_server.url)}
    ids = [gw.post("/v1/generate", json=BODY, headers=headers).json()["id"] for _ in range(64)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids) and len(set(ids)) == len(ids)
    # secrets.token_hex(16): every one of the 128 bits varies; none is fixed (no counter, no timestamp).
    bits = [int(i, 16) for i in ids]
    ones = [sum((b >> pos) & 1 for b in bits) for pos in range(128)]
    assert all(0 < n < len(ids) for n in ones), "a bit position never changes across 64 ids"
    assert 0.4 < sum(ones) / (128 * len(ids)) < 0.6
    # Image URLs are the job id plus an index: as unguessable as the job id, and keyed besides.


def test_another_accounts_job_is_404_on_every_route(gw: TestClient, redis_server: EmbeddedRedis) -> None:
    owner, other = {"x-key": make_key(redis_server.url)}, {"x-key": make_key(redis_server.url)}
    job_id = gw.post("/v1/generate", json=BODY, headers=owner).json()["id"]
    assert gw.get(f"/v1/jobs/{job_id}", headers=owner).status_code == 200
    for method, path in (("GET", f"/v1/jobs/{job_id}"), ("POST", f"/v1/jobs/{job_id}/cancel"),
                         ("GET", f"/v1/jobs/{job_id}/events"), ("GET", f"/v1/jobs/{job_id}/images/0")):
        r = gw.request(method, path, headers=other)
        assert r.status_code == 404, (path, r.status_code)
    assert job_id not in gw.get("/v1/jobs", headers=other).text
    # BFL polling answers "Task not found", exactly as for an id that never existed.
    assert gw.get("/v1/get_result", params={"id": job_id}, headers=other).json()["status"] == "Task not found"
    assert gw.get(f"/v1/jobs/{job_id}", headers=owner).json()["status"] == "queued"  # not cancelled by `other`


def test_delivery_links_cannot_be_forged_or_used_after_expiry(gw: TestClient, redis_server: EmbeddedRedis) -> None:
    headers = {"x-key": make_key(redis_server.url)}
    job_id = gw.post("/v1/generate", json=BODY, headers=headers).json()["id"]
    gw.get(f"/delivery/{job_id}/0", params={"exp": 1, "sig": "x"})  # the first delivery request creates the secret
    secret = redis.Redis.from_url(redis_server.url).get(keys.DELIVERY_SECRET)
    assert secret and len(secret) >= 64  # 256 random bits, shared by all gateways through Redis

    def sign(job: str, index: int, exp: int) -> str:  # what the server signs; see app/routes/bfl.py
        return hmac.new(secret, f"{job}/{index}/{exp}".encode(), hashlib.sha256).hexdigest()[:40]

    future, past = int(time.time()) + 600, int(time.time()) - 1
    good = sign(job_id, 0, future)
    assert gw.get(f"/delivery/{job_id}/0", params={"exp": future, "sig": good}).status_code == 404  # not run yet
    for params, path in (({"exp": future, "sig": "0" * 40}, f"/delivery/{job_id}/0"),       # forged
                         ({"exp": future + 1, "sig": good}, f"/delivery/{job_id}/0"),        # exp extended
                         ({"exp": future, "sig": good}, f"/delivery/{job_id}/1"),            # other image
                         ({"exp": past, "sig": sign(job_id, 0, past)}, f"/delivery/{job_id}/0"),  # expired
                         ({"exp": future, "sig": "é" * 40}, f"/delivery/{job_id}/0")):       # non-ASCII
        assert gw.get(path, params=params).status_code == 403, params


def test_every_admin_route_needs_the_admin_key(gw: TestClient, redis_server: EmbeddedRedis) -> None:
    user = {"x-key": make_key(redis_server.url)}
    routes = [(m.upper(), p) for p, ops in gw.app.openapi()["paths"].items() if p.startswith("/v1/admin")
              for m in ops]
    assert len(routes) >= 10
    for method, template in routes:
        path = template.replace("{account_id}", "acct_0").replace("{key_id}", "key_0")
        body = {"tier": "free", "amount": 1, "name": "x"} if method in ("POST", "PUT") else None
        assert gw.request(method, path, json=body).status_code == 401, path
        assert gw.request(method, path, json=body, headers=user).status_code == 403, path


def test_request_body_limit_is_413(gw: TestClient, redis_server: EmbeddedRedis) -> None:
    headers = {"x-key": make_key(redis_server.url), "content-type": "application/json"}
    big = b'{"model":"schnell","prompt":"' + b"a" * (17 * 2**20) + b'"}'
    r = gw.post("/v1/generate", content=big, headers=headers)  # declared Content-Length
    assert r.status_code == 413 and "limit" in r.json()["detail"]

    assert gw.post("/v1/generate", json=BODY, headers=headers).status_code == 202  # normal requests unaffected


@pytest.mark.timeout(90)
def test_no_secret_in_any_log_line(service: Service) -> None:
    """A real gateway and worker: keys created through the admin API, jobs submitted with both header
    forms, a bad key tried, a key pasted into a prompt; then neither the API keys nor the admin key
    appear anywhere in their logs."""
    admin_key = make_key(service.redis.url, admin=True)
    worker = service.worker(variants="schnell", FLUXGATE_WORKER_PROFILE_MEMORY="false")
    with httpx.Client(base_url=service.url, timeout=30) as http:
        created = http.post("/v1/admin/keys", json={"name": "logged?", "tier": "internal"},
                            headers={"Authorization": f"Bearer {admin_key}"}).json()
        key = created["key"]
        pasted = {**BODY, "prompt": f"{PROMPT} {key}"}
        ids = [http.post("/v1/generate", json=pasted, headers={"x-key": key}).json()["id"],
               http.post("/v1/generate", json=BODY, headers={"Authorization": f"Bearer {key}"}).json()["id"]]
        http.get("/v1/account", headers={"x-key": key[:-1] + "0"})
        api = httpx.Client(base_url=service.url, headers={"x-key": key}, timeout=30)
        for job_id in ids:
            assert finished(api, job_id)["status"] == "succeeded"
        api.close()
    secrets_ = {key, admin_key, service.api.headers["x-key"], key[3:35], admin_key[3:35]}
    logs = {p: Path(p).read_text(errors="replace") for p in (service.gateway.log, worker.log)}
    assert all(text for text in logs.values())  # both really logged something
    for path, text in logs.items():
        for secret in secrets_:
            assert secret not in text, f"a key appears in {path}"
