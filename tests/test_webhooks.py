"""Webhooks: signed per Standard Webhooks (verified with the independent `standardwebhooks`
package), retried until the receiver accepts, and refused for private addresses (SSRF guard)."""

from __future__ import annotations

import http.server
import threading
import time
from pathlib import Path

import redis
from fastapi.testclient import TestClient
from standardwebhooks import Webhook

from app.main import create_app
from app.settings import GatewaySettings
from store import keys
from store.embedded import free_port
from tests.conftest import Service, make_key, wait_until
from tests.test_service_jobs import PROMPT, finished


class Receiver(http.server.BaseHTTPRequestHandler):
    """Fails the first two deliveries with 500, then accepts; records every request."""

    received: list[tuple[dict[str, str], bytes, int]] = []
    fail_first = 2

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["content-length"]))
        status = 500 if len(Receiver.received) < Receiver.fail_first else 200
        Receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body, status))
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_webhook_is_signed_and_retried_until_delivered(tmp_path: Path, log_dir: Path) -> None:
    Receiver.received, Receiver.fail_first = [], 2
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # The receiver is on loopback, which the SSRF guard refuses unless the operator allows it.
    service = Service(tmp_path, log_dir, FLUXGATE_WEBHOOK_ALLOW_PRIVATE="true")
    try:
        service.worker(variants="schnell", FLUXGATE_WORKER_PROFILE_MEMORY="false",
                       FLUXGATE_WORKER_WEBHOOK_BACKOFF_S="0.2")
        body = {"model": "schnell", "prompt": PROMPT, "webhook_url": f"http://127.0.0.1:{port}/hook"}
        job_id = service.api.post("/v1/generate", json=body).json()["id"]
        assert finished(service.api, job_id)["status"] == "succeeded"
        wait_until(lambda: len(Receiver.received) >= 3, 30, 0.1, message="the third delivery")
        assert [status for _, _, status in Receiver.received] == [500, 500, 200]  # the third try lands
        secret = service.api.get("/v1/account").json()["webhook_secret"]
        ids = set()
        for headers, payload, _ in Receiver.received:
            event = Webhook(secret).verify(payload.decode(), headers)  # raises on a bad signature
            assert event["type"] == "job.succeeded" and event["data"]["id"] == job_id
            ids.add(headers["webhook-id"])
        assert len(ids) == 1  # the same message id on every retry, so receivers can deduplicate
        forged = dict(Receiver.received[-1][0], **{"webhook-signature": "v1,AAAA"})
        try:
            Webhook(secret).verify(Receiver.received[-1][1].decode(), forged)
            raise AssertionError("a forged signature verified")
        except Exception as err:  # noqa: BLE001  the package raises its own verification error
            assert "signature" in str(err).lower() or "verif" in str(err).lower()
    finally:
        service.close()
        server.shutdown()


def test_a_job_canceled_while_queued_is_reported(tmp_path: Path, log_dir: Path) -> None:
    Receiver.received, Receiver.fail_first = [], 0
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    service = Service(tmp_path, log_dir, FLUXGATE_WEBHOOK_ALLOW_PRIVATE="true")
    try:
        service.worker(variants="dev", FLUXGATE_WORKER_PROFILE_MEMORY="false")  # delivers; never runs schnell
        body = {"model": "schnell", "prompt": PROMPT, "webhook_url": f"http://127.0.0.1:{port}/hook"}
        job_id = service.api.post("/v1/generate", json=body).json()["id"]
        assert service.api.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "canceled"
        wait_until(lambda: Receiver.received, 30, 0.1, message="the canceled event")
        headers, payload, _ = Receiver.received[0]
        event = Webhook(service.api.get("/v1/account").json()["webhook_secret"]).verify(payload.decode(), headers)
        assert event["type"] == "job.canceled" and event["data"]["id"] == job_id
    finally:
        service.close()
        server.shutdown()


def test_webhook_url_ssrf_guard(redis_server) -> None:  # noqa: ANN001
    with TestClient(create_app(GatewaySettings(redis_url=redis_server.url))) as client:
        headers = {"x-key": make_key(redis_server.url)}
        for url in ("http://127.0.0.1:8080/x", "http://10.0.0.5/x", "http://169.254.169.254/latest",
                    "http://[::1]/x", "ftp://example.com/x", "http://user:pw@example.com/x", "not a url"):
            response = client.post("/v1/generate", json={"model": "schnell", "prompt": PROMPT, "webhook_url": url},
                                   headers=headers)
            assert response.status_code == 422 and "webhook_url" in response.text, (url, response.text)


def test_the_worker_checks_the_target_again_before_sending(tmp_path: Path, log_dir: Path) -> None:
    # The gateway accepted a loopback URL (operator allowed it there); a worker that does not allow
    # private targets, as after a DNS change to an inward address, refuses to send and records why.
    Receiver.received, Receiver.fail_first = [], 0
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    service = Service(tmp_path, log_dir, FLUXGATE_WEBHOOK_ALLOW_PRIVATE="true")
    try:
        service.worker(variants="schnell", FLUXGATE_WORKER_PROFILE_MEMORY="false",
                       FLUXGATE_WEBHOOK_ALLOW_PRIVATE="false")
        body = {"model": "schnell", "prompt": PROMPT, "webhook_url": f"http://127.0.0.1:{port}/hook"}
        job_id = service.api.post("/v1/generate", json=body).json()["id"]
        assert finished(service.api, job_id)["status"] == "succeeded"
        client = redis.Redis.from_url(service.redis.url, decode_responses=True)
        error = wait_until(lambda: client.hget(keys.job(job_id), "webhook_error"), 30, 0.1,
                           message="the refusal to be recorded")
        assert "non-public address (127.0.0.1)" in error and Receiver.received == []
        client.close()
    finally:
        service.close()
        server.shutdown()


def recording_server(status: int) -> tuple[http.server.ThreadingHTTPServer, list[float]]:
    """A receiver answering `status` to every POST; returns it and the arrival times."""
    arrivals: list[float] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["content-length"]))
            arrivals.append(time.monotonic())
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, arrivals


def test_a_failing_receiver_does_not_hold_up_other_deliveries(tmp_path: Path, log_dir: Path) -> None:
    failing, failed_at = recording_server(500)
    healthy, delivered_at = recording_server(200)
    service = Service(tmp_path, log_dir, FLUXGATE_WEBHOOK_ALLOW_PRIVATE="true")
    try:
        service.worker(variants="schnell", FLUXGATE_WORKER_PROFILE_MEMORY="false",
                       FLUXGATE_WORKER_WEBHOOK_BACKOFF_S="3", FLUXGATE_WORKER_WEBHOOK_ATTEMPTS="3")
        url = "http://127.0.0.1:{}/hook"
        first = service.api.post("/v1/generate", json={"model": "schnell", "prompt": PROMPT,
                                                       "webhook_url": url.format(failing.server_port)}).json()
        assert finished(service.api, first["id"])["status"] == "succeeded"
        wait_until(lambda: failed_at, 30, 0.05, message="the first, failing try")
        second = service.api.post("/v1/generate", json={"model": "schnell", "prompt": PROMPT,
                                                        "webhook_url": url.format(healthy.server_port)}).json()
        assert finished(service.api, second["id"])["status"] == "succeeded"
        wait_until(lambda: delivered_at, 30, 0.05, message="the healthy receiver's event")
        # Delivered while the failing one waits out its 3 s backoff, not after its retries.
        assert len(failed_at) == 1 and delivered_at[0] - failed_at[0] < 3, (failed_at, delivered_at)
        wait_until(lambda: len(failed_at) == 3, 30, 0.1, message="all three tries of the failing one")
    finally:
        service.close()
        failing.shutdown()
        healthy.shutdown()


def test_an_event_left_by_a_dead_worker_is_delivered_by_another(tmp_path: Path, log_dir: Path) -> None:
    receiver, arrivals = recording_server(200)
    service = Service(tmp_path, log_dir, FLUXGATE_WEBHOOK_ALLOW_PRIVATE="true")
    try:
        body = {"model": "schnell", "prompt": PROMPT, "webhook_url": f"http://127.0.0.1:{receiver.server_port}/h"}
        job_id = service.api.post("/v1/generate", json=body).json()["id"]
        client = redis.Redis.from_url(service.redis.url, decode_responses=True)
        client.xgroup_create(keys.WEBHOOKS, keys.WEBHOOK_GROUP, id="0", mkstream=True)
        assert service.api.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "canceled"
        # A worker read the event and died before delivering it: it stays pending on that consumer.
        taken = client.xreadgroup(keys.WEBHOOK_GROUP, "dead-worker", {keys.WEBHOOKS: ">"}, count=10)
        assert len(taken[0][1]) == 1
        service.worker(variants="dev", FLUXGATE_WORKER_PROFILE_MEMORY="false",
                       FLUXGATE_WORKER_WEBHOOK_CLAIM_IDLE_S="1")
        wait_until(lambda: arrivals, 30, 0.1, message="the reclaimed event's delivery")
        wait_until(lambda: client.xpending(keys.WEBHOOKS, keys.WEBHOOK_GROUP)["pending"] == 0, 10, 0.1,
                   message="the entry to be acked")
        client.close()
    finally:
        service.close()
        receiver.shutdown()
