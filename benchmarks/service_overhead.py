"""Service overhead, measured side by side in one run.

(a) End-to-end latency of one small job (HTTP submit with `Prefer: wait` -> Redis -> worker ->
    stored PNG -> HTTP answer) minus the pipeline's own time (`timings.run_seconds`): p50/p95.
(b) POST /v1/generate throughput (requests/s, K concurrent clients) vs a bare FastAPI endpoint
    served the same way on the same machine, and the ratio.

Targets: overhead p50 <= 15 ms; submit throughput >= 0.5x the bare endpoint.
Run: python benchmarks/service_overhead.py [--jobs 40] [--requests 900] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from store.embedded import EmbeddedRedis, free_port  # noqa: E402
from tests.conftest import make_key, start_gateway, start_worker, wait_until  # noqa: E402

BARE_APP = """
from fastapi import FastAPI
app = FastAPI()

@app.post("/bare")
async def bare(body: dict) -> dict:
    return {"id": "x", "status": "queued"}
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def overhead(url: str, key: str, jobs: int) -> list[float]:
    body = {"model": "schnell", "prompt": "a red circle on the left on a white background", "steps": 1}
    out = []
    with httpx.Client(base_url=url, headers={"x-key": key, "Prefer": "wait=30"}, timeout=60) as client:
        for i in range(jobs + 3):
            started = time.perf_counter()
            response = client.post("/v1/generate", json={**body, "seed": i})
            elapsed = time.perf_counter() - started
            job = response.json()
            assert response.status_code == 200 and job["status"] == "succeeded", response.text
            if i >= 3:  # the first jobs warm up the worker's caches
                out.append(elapsed - job["timings"]["run_seconds"])
    return out


async def throughput(url: str, path: str, headers: dict[str, str], requests: int, concurrency: int) -> float:
    body = {"model": "schnell", "prompt": "a red circle on the left on a white background"}
    counter = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30, limits=limits) as client:
        for _ in range(20):  # warm-up
            await client.post(path, json=body)

        async def loop() -> None:
            for _ in counter:
                response = await client.post(path, json=body)
                assert response.status_code in (200, 202), response.text

        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        return requests / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=40)
    # Stays under the demo variants' queue-depth cap (1,000): phase (b) runs with no worker, so every
    # accepted job stays queued, and beyond the cap submits would be (fast) 503s.
    parser.add_argument("--requests", type=int, default=900)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp)
        server = EmbeddedRedis(logs / "redis").start()
        gateway, url = start_gateway(server.url, logs)
        bare_port = free_port()
        (logs / "bare_app.py").write_text(BARE_APP)
        bare = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "bare_app:app", "--port", str(bare_port), "--log-level", "warning",
             "--no-access-log"], cwd=logs, env=dict(os.environ))
        worker = start_worker(server.url, logs, variants="schnell")
        try:
            key = make_key(server.url)
            wait_until(lambda: httpx.get(f"http://127.0.0.1:{bare_port}/docs").status_code == 200, 30)
            latencies = overhead(url, key, args.jobs)
            worker.stop()  # (b) measures the gateway alone; jobs just queue
            ours = asyncio.run(throughput(url, "/v1/generate", {"x-key": key}, args.requests, args.concurrency))
            base = asyncio.run(throughput(f"http://127.0.0.1:{bare_port}", "/bare", {}, args.requests,
                                          args.concurrency))
        finally:
            worker.stop()
            bare.terminate()
            gateway.stop()
            server.stop()

    ms = [x * 1000 for x in latencies]
    print(f"(a) service overhead per job, {len(ms)} jobs: p50 {statistics.median(ms):.1f} ms, "
          f"p95 {percentile(ms, 0.95):.1f} ms   (target p50 <= 15 ms)")
    print(f"(b) submit throughput, {args.requests} requests at concurrency {args.concurrency}: "
          f"POST /v1/generate {ours:.0f} req/s, bare FastAPI endpoint {base:.0f} req/s, "
          f"ratio {ours / base:.2f}x   (target >= 0.5x)")


if __name__ == "__main__":
    main()
