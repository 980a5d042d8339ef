"""`fluxgate serve`: everything on one machine. An embedded Redis (AOF in the data directory), the
gateway and one worker as child processes; prints the URL and keys; Ctrl-C / SIGTERM stops all."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="interface for the gateway (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="gateway port (default 8000)")
    parser.add_argument("--data-dir", default=".fluxgate", help="Redis data and keys (default ./.fluxgate)")
    parser.add_argument("--catalog", default=os.environ.get("FLUXGATE_CATALOG", "demo"),
                        help="catalog name or TOML path (default: FLUXGATE_CATALOG or demo)")
    parser.add_argument("--device", default="cpu", help="torch device for the worker (default cpu)")
    parser.add_argument("--redis-port", type=int, default=0, help="embedded Redis port (default: a free one)")
    # everysec: a power cut may lose about the last second of writes; always: nothing, at a latency cost.
    parser.add_argument("--appendfsync", choices=["everysec", "always"], default="everysec",
                        help="embedded Redis AOF fsync policy (default everysec)")


def _child(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    # Own process group, so a Ctrl-C in the terminal reaches only us and we stop children in order.
    return subprocess.Popen([sys.executable, "-m", "cli.main", *command], env=env, start_new_session=True)


def _ensure_keys(redis_url: str, keys_file: Path) -> dict[str, str]:
    """The admin key (an `internal` account) and a first API key (a `free` account), created once.
    Their plaintext is kept only in keys_file (mode 0600) so a restart shows the same keys; Redis
    itself stores hashes only."""
    from cli.admin_store import with_accounts

    saved: dict[str, str] = json.loads(keys_file.read_text()) if keys_file.exists() else {}

    async def ensure(accounts):  # noqa: ANN001, ANN202
        for role, tier, admin in (("admin_key", "internal", True), ("api_key", "free", False)):
            if saved.get(role) and await accounts.lookup_key(saved[role]):
                continue
            account = await accounts.create_account("operator" if admin else "first account", tier)
            saved[role], _ = await accounts.create_key(account.id, role, admin=admin)

    with_accounts(redis_url, ensure)
    keys_file.write_text(json.dumps(saved, indent=2))
    keys_file.chmod(0o600)
    return saved


def _wait_http(url: str, timeout_s: float) -> bool:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


def run(args: argparse.Namespace) -> int:
    from store.embedded import EmbeddedRedis

    data_dir = Path(args.data_dir)
    redis_server = EmbeddedRedis(data_dir / "redis", port=args.redis_port or None,
                                 appendfsync=args.appendfsync).start()
    env = dict(os.environ, FLUXGATE_REDIS_URL=redis_server.url, FLUXGATE_CATALOG=args.catalog,
               FLUXGATE_DEVICE=args.device, PYTHONUNBUFFERED="1")
    keys = _ensure_keys(redis_server.url, data_dir / "keys.json")
    commands = {
        "gateway": ["gateway", "--host", args.host, "--port", str(args.port)],
        "worker": ["worker"],
    }
    children = {name: _child(cmd, env) for name, cmd in commands.items()}
    stopping = threading.Event()

    def _stop(_signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)

    url = f"http://{args.host}:{args.port}"
    if _wait_http(f"{url}/healthz", 30):
        print(f"\nfluxgate is running at {url}  (API docs: {url}/docs)\n"
              f"  admin key: {keys['admin_key']}\n"
              f"  API key:   {keys['api_key']}\n"
              f"  data:      {data_dir.resolve()}  (Redis {redis_server.url})\n\n"
              f"Try:\n  curl -s {url}/v1/generate -H 'x-key: {keys['api_key']}' -H 'Prefer: wait=30' \\\n"
              f"    -H 'content-type: application/json' \\\n"
              f"    -d '{{\"model\": \"schnell\", \"prompt\": \"a red circle\"}}'\n",
              flush=True)
    restarts = 0
    while not stopping.wait(0.5):
        for name, process in children.items():
            if process.poll() is not None:
                # A crashed child is restarted: accepted jobs wait in Redis meanwhile.
                restarts += 1
                print(f"fluxgate: {name} exited with {process.returncode}; restarting", file=sys.stderr, flush=True)
                time.sleep(min(5.0, 0.5 * restarts))
                children[name] = _child(commands[name], env)
    print("\nfluxgate: stopping", flush=True)
    for name in ("worker", "gateway"):  # the worker first: it finishes its batch while the gateway still answers
        process = children[name]
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
    redis_server.stop()
    return 0
