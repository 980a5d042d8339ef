"""Billing under concurrency, through a real gateway process and worker over a real Redis: the
admission script is atomic, so limits hold exactly however many requests race."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.conftest import Service, make_key
from tests.test_service_jobs import PROMPT, finished

TIERS = """
[tiers.free]
images_per_day = 50

[tiers.paid]
pays_credits = true

[tiers.internal]
"""
BODY = {"model": "schnell", "prompt": PROMPT}


def _race(url: str, headers: dict, bodies: list[dict], workers: int = 32) -> list[httpx.Response]:
    def post(body: dict) -> httpx.Response:
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            return client.post("/v1/generate", json=body)

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(post, bodies))


def test_daily_quota_and_balance_hold_exactly_under_concurrency(tmp_path: Path, log_dir: Path) -> None:
    tiers = tmp_path / "tiers.toml"
    tiers.write_text(TIERS)
    service = Service(tmp_path, log_dir, FLUXGATE_TIERS=str(tiers))
    try:
        # 200 concurrent submits against a daily quota of 50 (no worker: every job stays open).
        free = {"x-key": make_key(service.redis.url, tier="free")}
        codes = [r.status_code for r in _race(service.url, free, [{**BODY, "seed": i} for i in range(200)])]
        assert codes.count(202) == 50 and codes.count(429) == 150, codes

        # A balance worth exactly 10 images (schnell: 300 milli-credits each), 40 racing submits.
        paid = {"x-key": make_key(service.redis.url, tier="paid", credits=3000)}
        responses = _race(service.url, paid, [{**BODY, "seed": i} for i in range(40)])
        accepted = [r.json()["id"] for r in responses if r.status_code == 202]
        assert len(accepted) == 10 and sum(r.status_code == 402 for r in responses) == 30
        with httpx.Client(base_url=service.url, headers=paid, timeout=30) as api:
            account = api.get("/v1/account").json()
            assert (account["balance"], account["reserved"]) == (0, 3000)

            # One Idempotency-Key replayed 20 times concurrently: one job (and one reservation).
            api.post(f"/v1/jobs/{accepted[0]}/cancel")  # frees 300 for it
            replayed = _race(service.url, {**paid, "Idempotency-Key": "order-1"}, [BODY] * 20)
            assert {r.status_code for r in replayed} == {202}
            assert len({r.json()["id"] for r in replayed}) == 1

            # Run everything: 9 + 1 images are charged, the canceled one is not.
            service.worker(variants="schnell", FLUXGATE_WORKER_PROFILE_MEMORY="false")
            for job_id in [*accepted[1:], replayed[0].json()["id"]]:
                assert finished(api, job_id)["status"] == "succeeded"
            account = api.get("/v1/account").json()
            assert (account["balance"], account["reserved"], account["spent"]) == (0, 0, 3000)
            assert api.get(f"/v1/jobs/{accepted[0]}").json()["status"] == "canceled"

        # The ledger export sums to the change in the account's balance.
        admin = {"x-key": make_key(service.redis.url, admin=True)}
        export = httpx.get(f"{service.url}/v1/admin/usage/export", headers=admin, timeout=30).text
        events = [json.loads(line) for line in export.splitlines()]
        mine = [e for e in events if e["account"] == account["id"]]
        assert len(mine) == 10 and sum(int(e["credits"]) for e in mine) == 3000 - account["balance"]
    finally:
        service.close()


def test_failed_job_is_not_charged(tmp_path: Path, log_dir: Path) -> None:
    service = Service(tmp_path, log_dir)
    try:
        paid = {"x-key": make_key(service.redis.url, tier="paid", credits=1000)}
        with httpx.Client(base_url=service.url, headers=paid, timeout=30) as api:
            job_id = api.post("/v1/generate", json={**BODY, "prompt": "POISON " + PROMPT}).json()["id"]
            service.worker(variants="schnell", FLUXGATE_WORKER_FAULT_POISON_MARKER="POISON",
                           FLUXGATE_WORKER_PROFILE_MEMORY="false")
            assert finished(api, job_id)["status"] == "failed"
            account = api.get("/v1/account").json()
            assert (account["balance"], account["reserved"], account["spent"]) == (1000, 0, 0)
    finally:
        service.close()
