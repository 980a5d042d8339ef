"""A bounded load test against a real `fluxgate serve` (loopback only; it stops by itself).

Starts `fluxgate serve` in a temporary data directory, then N submits plus polls at C concurrency:
each client submits a job and polls it until it finishes, then submits the next. Reports every
status code seen (only 202/200 and the designed 429/503 are acceptable), submit latency p50/p99,
jobs completed, and the resident memory of the gateway and of Redis before and after.

A second phase sends a free-tier burst to show the designed 429s (rate limit) with Retry-After.

Run: python benchmarks/load_test.py [--submits 2000] [--concurrency 64] [--max-seconds 600]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from store.embedded import free_port  # noqa: E402

BODY = {"model": "schnell", "prompt": "a red circle on the left on a white background"}
DESIGNED = {200, 202, 429, 503}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def rss_by_role(serve: psutil.Process) -> dict[str, int]:
    """Resident memory of the gateway and the Redis server among `fluxgate serve`'s children."""
    out: dict[str, int] = {}
    for child in serve.children(recursive=True):
        try:
            cmd = " ".join(child.cmdline())
            role = "redis" if "redis-server" in cmd else "gateway" if " gateway" in cmd else None
            if role:
                out[role] = out.get(role, 0) + child.memory_info().rss
        except psutil.Error:
            pass
    return out


async def run_load(url: str, key: str, submits: int, concurrency: int, max_seconds: float) -> dict:
    statuses: collections.Counter[int] = collections.Counter()
    latencies: list[float] = []
    completed = 0
    remaining = iter(range(submits))
    deadline = time.monotonic() + max_seconds
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers={"x-key": key}, timeout=60, limits=limits) as client:

        async def one_client() -> None:
            nonlocal completed
            for seed in remaining:
                if time.monotonic() > deadline:
                    return
                started = time.perf_counter()
                try:
                    response = await client.post("/v1/generate", json={**BODY, "seed": seed})
                except httpx.TransportError as err:  # not designed: counted and reported
                    statuses[f"connection error: {type(err).__name__}"] += 1  # type: ignore[index]
                    continue
                latencies.append(time.perf_counter() - started)
                statuses[response.status_code] += 1
                if response.status_code != 202:
                    await asyncio.sleep(float(response.headers.get("retry-after", "1")))
                    continue
                polling_url = response.json()["polling_url"]
                while time.monotonic() < deadline:
                    try:
                        job = await client.get(polling_url)
                    except httpx.TransportError as err:
                        statuses[f"connection error: {type(err).__name__}"] += 1  # type: ignore[index]
                        continue
                    statuses[job.status_code] += 1
                    if job.status_code == 200 and job.json()["status"] not in ("queued", "running"):
                        completed += job.json()["status"] == "succeeded"
                        break
                    await asyncio.sleep(0.25)  # a polite poll interval; SSE is the push alternative

        started = time.monotonic()
        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    return {"statuses": statuses, "latencies": latencies, "completed": completed, "elapsed": elapsed}


async def free_burst(url: str, key: str, requests: int) -> collections.Counter[int]:
    async with httpx.AsyncClient(base_url=url, headers={"x-key": key}, timeout=30) as client:
        responses = await asyncio.gather(*(client.post("/v1/generate", json=BODY) for _ in range(requests)))
    for response in responses:
        if response.status_code == 429:
            assert response.headers.get("retry-after"), "a 429 without Retry-After"
    return collections.Counter(r.status_code for r in responses)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submits", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-seconds", type=float, default=600)
    parser.add_argument("--catalog", default=os.environ.get("FLUXGATE_CATALOG", "demo"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as data_dir:
        port = free_port()
        command = [sys.executable, "-m", "cli.main", "serve", "--port", str(port), "--data-dir", data_dir,
                   "--catalog", args.catalog]
        log = open(Path(tempfile.gettempdir()) / "fluxgate-load-serve.log", "wb")  # noqa: SIM115
        serve = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                 cwd=Path(__file__).resolve().parents[1], env=dict(os.environ))
        url = f"http://127.0.0.1:{port}"
        try:
            keys_file = Path(data_dir) / "keys.json"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if keys_file.exists() and httpx.get(f"{url}/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            keys = json.loads(keys_file.read_text())
            admin = {"x-key": keys["admin_key"]}
            internal = httpx.post(f"{url}/v1/admin/keys", json={"name": "load", "tier": "internal"},
                                  headers=admin).json()["key"]
            process = psutil.Process(serve.pid)
            before = rss_by_role(process)
            load = asyncio.run(run_load(url, internal, args.submits, args.concurrency, args.max_seconds))
            after = rss_by_role(process)
            burst = asyncio.run(free_burst(url, keys["api_key"], 40))
        finally:
            serve.send_signal(signal.SIGTERM)
            serve.wait(60)

    statuses, latencies = load["statuses"], load["latencies"]
    undesigned = {code: n for code, n in statuses.items() if code not in DESIGNED}
    ms = [x * 1000 for x in latencies]
    print(f"{len(latencies)} submits (+ polls) at concurrency {args.concurrency} in {load['elapsed']:.1f} s; "
          f"{load['completed']} jobs succeeded")
    print(f"status codes: {dict(statuses)}; undesigned: {undesigned or 'none'}")
    print(f"submit latency: p50 {statistics.median(ms):.1f} ms, p99 {percentile(ms, 0.99):.1f} ms, "
          f"max {max(ms):.1f} ms")
    for role in ("gateway", "redis"):
        print(f"{role} RSS: {before.get(role, 0) / 2**20:.1f} MiB before, {after.get(role, 0) / 2**20:.1f} MiB after")
    print(f"free-tier burst of 40: {dict(burst)} (429s are the designed rate/concurrency limits, with Retry-After)")


if __name__ == "__main__":
    main()
