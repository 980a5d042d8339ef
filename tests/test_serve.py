"""`fluxgate serve` as a new user runs it: embedded Redis + gateway + worker, keys printed and
persisted, a real image, SIGTERM stops every child, and a restart reuses the data and keys."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from store.embedded import free_port
from tests.conftest import ROOT, wait_until


def _serve(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--port", str(port), "--data-dir",
                             str(data_dir)], cwd=ROOT, env=dict(os.environ), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _stop(process: subprocess.Popen[bytes]) -> str:
    children = psutil.Process(process.pid).children(recursive=True)
    assert any("redis-server" in " ".join(c.cmdline()) for c in children)
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=60)[0].decode()
    assert process.returncode == 0, output
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"children left running: {alive}"
    return output


def test_serve_end_to_end_and_restart(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "data", free_port()
    url = f"http://127.0.0.1:{port}"
    process = _serve(data_dir, port)
    try:
        wait_until(lambda: _ready(url), 90, 0.2, message="fluxgate serve to be ready")
        keys = json.loads((data_dir / "keys.json").read_text())
        assert oct((data_dir / "keys.json").stat().st_mode)[-3:] == "600"
        job = httpx.post(f"{url}/v1/generate", json={"model": "schnell", "prompt": "a red circle", "seed": 1},
                         headers={"x-key": keys["api_key"], "Prefer": "wait=30"}, timeout=40).json()
        assert job["status"] == "succeeded"
        png = httpx.get(job["images"][0]["url"], headers={"x-key": keys["api_key"]}).content
        assert png.startswith(b"\x89PNG")
    finally:
        output = _stop(process)
    assert keys["api_key"] in output and keys["admin_key"] in output and url in output

    # A restart finds the same data: the same keys work and the finished job is still there.
    process = _serve(data_dir, port)
    try:
        wait_until(lambda: _ready(url), 90, 0.2, message="fluxgate serve to restart")
        assert json.loads((data_dir / "keys.json").read_text()) == keys
        again = httpx.get(f"{url}/v1/jobs/{job['id']}", headers={"x-key": keys["api_key"]}).json()
        assert again["status"] == "succeeded"
    finally:
        _stop(process)
    time.sleep(0.1)
