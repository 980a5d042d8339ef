"""The OpenAI-compatible images route, driven by the official `openai` SDK against real processes."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import redis
from PIL import Image

from store import keys
from store.catalog import load_catalog
from store.embedded import EmbeddedRedis, free_port
from tests.conftest import Proc, env_for, make_key, wait_until

PROMPT = "a green triangle in the middle on a black background"
# A variant that only an extra gateway knows: no worker serves it, so its jobs stay queued.
IDLE_VARIANT = """
[variants.idle]
family = "flux"
preset = "demo-flux1-schnell"
default_steps = 4
max_steps = 8
default_guidance = 0.0
max_guidance = 0.0
default_width = 64
default_height = 64
max_size = 128
max_pixels = 16384
"""


def start_idle_gateway(redis_url: str, log_dir: Path, tmp: Path, **env: str) -> tuple[Proc, str]:
    catalog = tmp / "catalog.toml"
    catalog.write_text(load_catalog("demo").path.read_text() + IDLE_VARIANT)
    port = free_port()
    proc = Proc(["gateway", "--port", str(port), "--catalog", str(catalog)], {**env_for(redis_url), **env},
                log_dir / f"gateway-idle-{port}.log").start()
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(healthy, 30, message="idle gateway /healthz")
    return proc, url


@pytest.fixture
def client(gateway: str, redis_server: EmbeddedRedis) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway}/v1", api_key=make_key(redis_server.url), max_retries=0) as sdk:
        yield sdk


def test_b64_json_images(client: openai.OpenAI, worker: Proc) -> None:
    result = client.images.generate(model="schnell", prompt=PROMPT, n=2, size="96x64",
                                    response_format="b64_json", extra_body={"seed": 11})
    assert result.created > 0 and result.size == "96x64" and result.output_format == "png"
    assert len(result.data) == 2
    for image in result.data:
        png = Image.open(io.BytesIO(base64.b64decode(image.b64_json)))
        assert png.format == "PNG" and png.size == (96, 64)
    # Same seed, same image: the second image of the first call used seed 12.
    again = client.images.generate(model="schnell", prompt=PROMPT, size="96x64", extra_body={"seed": 12})
    assert again.data[0].b64_json == result.data[1].b64_json


def test_url_response_is_a_signed_link(client: openai.OpenAI, worker: Proc) -> None:
    result = client.images.generate(model="klein", prompt=PROMPT, response_format="url", output_format="webp")
    url = result.data[0].url
    assert url and "/delivery/" in url
    plain = httpx.get(url)  # no key: like an OpenAI URL, the link itself grants access
    assert plain.status_code == 200 and plain.headers["content-type"] == "image/webp"
    assert Image.open(io.BytesIO(plain.content)).format == "WEBP"
    assert httpx.get(url.replace("sig=", "sig=0")).status_code == 403
    expired = url.split("exp=")[0] + "exp=1&sig=" + url.split("sig=")[1]
    assert httpx.get(expired).status_code == 403


def test_errors_use_openai_shapes(client: openai.OpenAI, gateway: str, redis_server: EmbeddedRedis) -> None:
    with pytest.raises(openai.BadRequestError) as bad_model:
        client.images.generate(model="dall-e-3", prompt=PROMPT)
    assert "unknown model" in bad_model.value.message and bad_model.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError) as bad_size:
        client.images.generate(model="schnell", prompt=PROMPT, size="big")
    assert bad_size.value.body["param"] == "size"
    with pytest.raises(openai.BadRequestError) as too_many:
        client.images.generate(model="schnell", prompt=PROMPT, n=9)
    assert too_many.value.body["param"] == "n"
    free = openai.OpenAI(base_url=f"{gateway}/v1", api_key=make_key(redis_server.url, tier="free"), max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        free.images.generate(model="dev", prompt=PROMPT)  # the demo catalog keeps dev off the free tier
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{gateway}/v1", api_key="fg_nope", max_retries=0).images.generate(prompt=PROMPT)


def test_slow_job_is_a_504_that_is_not_retried(redis_server: EmbeddedRedis, log_dir: Path, tmp_path: Path) -> None:
    proc, url = start_idle_gateway(redis_server.url, log_dir, tmp_path, FLUXGATE_OPENAI_WAIT_S="1")
    key = make_key(redis_server.url)
    try:
        # max_retries=2 as by default: x-should-retry: false must stop the SDK from submitting again.
        sdk = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=2)
        with pytest.raises(openai.InternalServerError) as timeout:
            sdk.images.generate(model="idle", prompt=PROMPT)
        assert timeout.value.status_code == 504 and timeout.value.body["code"] == "timeout"
        polling_url = timeout.value.response.headers["location"]
        account = httpx.get(f"{url}/v1/account", headers={"x-key": key}).json()
        with redis.Redis.from_url(redis_server.url) as client:
            assert client.scard(keys.active_jobs(account["id"])) == 1  # one job: the SDK did not resubmit
        job = httpx.get(polling_url, headers={"x-key": key}).json()
        assert job["status"] == "queued" and job["model"] == "idle"
        assert httpx.post(job["cancel_url"], headers={"x-key": key}).json()["status"] == "canceled"
    finally:
        proc.stop()
