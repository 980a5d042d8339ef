"""Shared fixtures: a real redis-server per test session, real gateway and worker processes."""

from __future__ import annotations

import os

# The test models are tiny: one thread each is faster than two threads fighting over two cores with
# the gateway, the workers and the test process (set before torch is imported; children inherit it).
os.environ.setdefault("OMP_NUM_THREADS", "1")
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from store.embedded import EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parents[1]


class Proc:
    """A fluxgate child process (gateway or worker) started with `python -m cli.main ...`."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args, self.env, self.log = args, env, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        out = self.log.open("ab")
        self.process = subprocess.Popen([sys.executable, "-m", "cli.main", *self.args], env=self.env, cwd=ROOT,
                                        stdout=out, stderr=subprocess.STDOUT)
        return self

    def kill(self) -> None:
        """kill -9: no cleanup, exactly like a crash."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


def env_for(redis_url: str, **extra: str) -> dict[str, str]:
    defaults = {"FLUXGATE_CATALOG": "demo", "PYTHONUNBUFFERED": "1", "FLUXGATE_WORKER_HEARTBEAT_S": "0.5",
                "FLUXGATE_WORKER_HEARTBEAT_TTL_S": "2"}
    # FLUXGATE_CATALOG from the environment wins: the suite can run against another catalog.
    defaults["FLUXGATE_CATALOG"] = os.environ.get("FLUXGATE_CATALOG", "demo")
    return {**os.environ, **defaults, "FLUXGATE_REDIS_URL": redis_url, **extra}


def wait_until(predicate, timeout_s: float, interval_s: float = 0.05, message: str = "condition"):  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {message}")


def start_gateway(redis_url: str, log_dir: Path, **extra: str) -> tuple[Proc, str]:
    port = free_port()
    proc = Proc(["gateway", "--port", str(port)], env_for(redis_url, **extra), log_dir / f"gateway-{port}.log").start()
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(healthy, 30, message="gateway /healthz")
    return proc, url


def start_worker(redis_url: str, log_dir: Path, variants: str = "", wait: bool = True, **extra: str) -> Proc:
    name = f"test-worker-{free_port()}"
    env = env_for(redis_url, FLUXGATE_WORKER_NAME=name, FLUXGATE_WORKER_VARIANTS=variants, **extra)
    proc = Proc(["worker"], env, log_dir / f"{name}.log").start()
    if wait:
        client = redis.Redis.from_url(redis_url)
        wait_until(lambda: client.exists(f"fg:worker:{name}"), 60, message=f"worker {name} heartbeat")
        client.close()
    return proc


def make_key(redis_url: str, admin: bool = False, tier: str = "internal", credits: int = 0,
             account: str | None = None) -> str:
    """A new API key; with no account given, for a new account of `tier` (internal: no limits)."""
    import asyncio

    from store.accounts import AccountStore
    from store.jobstore import JobStore

    async def create() -> str:
        store = JobStore(redis_url, 3600)
        accounts = AccountStore(store.redis)
        try:
            account_id = account or (await accounts.create_account("test", tier, credits)).id
            key, _ = await accounts.create_key(account_id, "test", admin=admin)
            return key
        finally:
            await store.close()

    return asyncio.run(create())


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gateway(redis_server: EmbeddedRedis, log_dir: Path) -> Iterator[str]:
    proc, url = start_gateway(redis_server.url, log_dir)
    yield url
    proc.stop()


@pytest.fixture(scope="session")
def worker(redis_server: EmbeddedRedis, log_dir: Path) -> Iterator[Proc]:
    """One worker serving every demo variant, shared by the tests that only need jobs to run."""
    proc = start_worker(redis_server.url, log_dir)
    yield proc
    proc.stop()


@pytest.fixture
def api(gateway: str, redis_server: EmbeddedRedis) -> Iterator[httpx.Client]:
    """An HTTP client with a fresh API key (its own account) for each test."""
    with httpx.Client(base_url=gateway, headers={"x-key": make_key(redis_server.url)}, timeout=30) as client:
        yield client


class Service:
    """A private Redis + gateway for tests that must control exactly which workers run."""

    def __init__(self, tmp_path: Path, log_dir: Path, **env: str) -> None:
        self.redis = EmbeddedRedis(tmp_path / "redis").start()
        self.gateway, self.url = start_gateway(self.redis.url, log_dir, **env)
        self.log_dir = log_dir
        self.env = env  # extra environment for its gateway and workers (e.g. FLUXGATE_CATALOG)
        self.workers: list[Proc] = []
        self.api = httpx.Client(base_url=self.url, headers={"x-key": make_key(self.redis.url)}, timeout=30)

    def worker(self, variants: str = "", **extra: str) -> Proc:
        proc = start_worker(self.redis.url, self.log_dir, variants=variants, **{**self.env, **extra})
        self.workers.append(proc)
        return proc

    def close(self) -> None:
        self.api.close()
        for proc in self.workers:
            proc.stop()
        self.gateway.stop()
        self.redis.stop()


@pytest.fixture
def service(tmp_path: Path, log_dir: Path) -> Iterator[Service]:
    svc = Service(tmp_path, log_dir)
    yield svc
    svc.close()
