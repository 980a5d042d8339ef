"""Throughput of the worker under closed-loop load, batching off vs request-level vs step-level,
measured side by side in one run through the HTTP API.

K clients each submit a job with `Prefer: wait=60`, wait for it to finish, and submit the next.
Each mode gets a fresh worker process over the same Redis and gateway.

Target on a 2-core CPU: at 16 concurrent 64 px schnell clients, >= 3x the images/s of batching off,
with p95 latency no worse than batching off.

Run: python benchmarks/throughput.py [--clients 16] [--seconds 20] [--model schnell] [--size 64]
On a GPU: add --device cuda --catalog real --model flux1-schnell --size 512 (real weights needed)
or use benchmarks/gpu_flux.py for random-weight model timings.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from store.embedded import EmbeddedRedis  # noqa: E402
from tests.conftest import make_key, start_gateway, start_worker  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def closed_loop(url: str, key: str, body: dict, clients: int, seconds: float) -> tuple[int, list[float], float]:
    latencies: list[float] = []
    images = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers={"x-key": key, "Prefer": "wait=60"}, timeout=120,
                                 limits=limits) as client:

        async def one_client(seed: int) -> None:
            nonlocal images
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                response = await client.post("/v1/generate", json={**body, "seed": seed})
                job = response.json()
                assert response.status_code == 200 and job["status"] == "succeeded", response.text
                latencies.append(time.perf_counter() - started)
                images += len(job["images"])
                seed += 1000

        started = time.perf_counter()
        await asyncio.gather(*(one_client(i) for i in range(clients)))
        elapsed = time.perf_counter() - started
    return images, latencies, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--model", default="schnell")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--catalog", default="demo")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-batch", type=int, default=16)
    args = parser.parse_args()
    body = {"model": args.model, "prompt": "a red circle on the left on a white background",
            "width": args.size, "height": args.size}

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp)
        server = EmbeddedRedis(logs / "redis").start()
        gateway, url = start_gateway(server.url, logs)
        try:
            key = make_key(server.url)
            for mode in ("off", "request", "step"):
                worker = start_worker(server.url, logs, variants=args.model, FLUXGATE_WORKER_BATCHING=mode,
                                      FLUXGATE_WORKER_MAX_BATCH=str(args.max_batch), FLUXGATE_CATALOG=args.catalog,
                                      FLUXGATE_DEVICE=args.device)
                try:
                    asyncio.run(closed_loop(url, key, body, args.clients, 3))  # warm-up
                    results[mode] = asyncio.run(closed_loop(url, key, body, args.clients, args.seconds))
                finally:
                    worker.stop()
        finally:
            gateway.stop()
            server.stop()

    print(f"{args.clients} closed-loop clients, {args.model} {args.size}x{args.size}, {args.seconds:.0f} s per mode")
    print(f"{'batching':>10} {'images/s':>9} {'p50 s':>7} {'p95 s':>7} {'vs off':>7}")
    base = results["off"][0] / results["off"][2]
    base_p95 = percentile(results["off"][1], 0.95)
    for mode, (images, latencies, elapsed) in results.items():
        rate = images / elapsed
        print(f"{mode:>10} {rate:9.1f} {statistics.median(latencies):7.3f} {percentile(latencies, 0.95):7.3f} "
              f"{rate / base:6.2f}x")
    for mode in ("request", "step"):
        images, latencies, elapsed = results[mode]
        print(f"{mode}: {images / elapsed / base:.2f}x the images/s of batching off (target >= 3x); "
              f"p95 {percentile(latencies, 0.95) / base_p95:.2f}x batching off's (target <= 1x)")


if __name__ == "__main__":
    main()
