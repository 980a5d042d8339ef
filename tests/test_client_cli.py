"""The Python client (sync and async) and the `fluxgate generate | jobs | usage` commands, against the
real gateway and worker processes."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from client import AsyncClient, Client, Event, FluxgateError
from store.embedded import EmbeddedRedis
from tests.conftest import ROOT, Proc, make_key

PROMPT = "a blue square on the right on a black background"


@pytest.fixture
def key(redis_server: EmbeddedRedis) -> str:
    return make_key(redis_server.url)


def fluxgate(*args: str, url: str, key: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLUXGATE_URL": url, "FLUXGATE_KEY": key, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "cli.main", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_sync_client_generate_with_events(gateway: str, key: str, worker: Proc,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[Event] = []
    with Client(gateway, key) as fg:
        job, images = fg.generate("dev", PROMPT, steps=6, seed=9, width=96, height=64, on_event=events.append)
        assert job["status"] == "succeeded" and job["seeds"] == [9]
        assert Image.open(io.BytesIO(images[0])).size == (96, 64)
        names = [e.event for e in events]
        assert names[-1] == "succeeded" and "progress" in names
        steps = [e.data["step"] for e in events if e.event == "progress"]
        assert steps == sorted(steps) and steps[-1] <= 6
        assert any(j["id"] == job["id"] for j in fg.jobs())  # recent succeeded jobs are listed
        assert fg.usage(group_by="variant")["total"]["images"] >= 1
        with pytest.raises(FluxgateError) as bad:
            fg.submit("nope", PROMPT)
        assert bad.value.status == 422 and "model" in str(bad.value)
        queued = fg.submit("schnell", PROMPT, n=1)
        assert fg.job(queued["id"])["id"] == queued["id"]
    monkeypatch.delenv("FLUXGATE_KEY", raising=False)
    with pytest.raises(ValueError, match="FLUXGATE_KEY"):
        Client(gateway)


def test_async_client_runs_jobs_concurrently(gateway: str, key: str, worker: Proc) -> None:
    async def main() -> list[tuple[dict, list[bytes]]]:
        async with AsyncClient(gateway, key) as fg:
            assert {m["id"] for m in await fg.models()} >= {"schnell", "dev", "klein"}
            assert (await fg.account())["tier"] == "internal"
            return await asyncio.gather(*(fg.generate("klein", PROMPT, seed=s, output_format="webp")
                                          for s in (1, 2, 3)))

    results = asyncio.run(main())
    assert [job["seeds"] for job, _ in results] == [[1], [2], [3]]
    assert all(Image.open(io.BytesIO(images[0])).format == "WEBP" for _, images in results)


def test_cli_generate_jobs_usage(gateway: str, key: str, worker: Proc, tmp_path: Path) -> None:
    done = fluxgate("generate", PROMPT, "--model", "schnell", "-o", "out.png", "-n", "2", "--seed", "3",
                    url=gateway, key=key, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert Image.open(tmp_path / "out.png").size == (64, 64) and (tmp_path / "out-2.png").exists()
    assert "seed 4" in done.stdout
    assert "4/4 succeeded" in done.stderr and "[" in done.stderr  # the progress bar's last state
    job_id = done.stderr.split("job ", 1)[1].split()[0]

    listed = fluxgate("jobs", url=gateway, key=key, cwd=tmp_path)
    assert listed.returncode == 0 and job_id in listed.stdout and "succeeded" in listed.stdout
    shown = json.loads(fluxgate("jobs", job_id, "--json", url=gateway, key=key, cwd=tmp_path).stdout)
    assert shown["seeds"] == [3, 4]
    usage = fluxgate("usage", "--by", "variant", url=gateway, key=key, cwd=tmp_path)
    assert usage.returncode == 0 and "schnell" in usage.stdout and "tier internal" in usage.stdout

    jpeg = fluxgate("generate", PROMPT, "-o", "x.jpg", "--quiet", url=gateway, key=key, cwd=tmp_path)
    assert jpeg.returncode == 0 and Image.open(tmp_path / "x.jpg").format == "JPEG"
    assert "[" not in jpeg.stderr
    refused = fluxgate("generate", PROMPT, "--model", "nope", url=gateway, key=key, cwd=tmp_path)
    assert refused.returncode == 1 and "unknown model" in refused.stderr
    bad_key = fluxgate("usage", url=gateway, key="fg_nope", cwd=tmp_path)
    assert bad_key.returncode == 1 and "401" in bad_key.stderr
