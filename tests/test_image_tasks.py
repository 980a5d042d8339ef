"""Image-conditioned tasks through the API: reference images, upscale, caption, rank, rerank, and
the validation of image inputs. Real gateway and worker processes over a real Redis."""

from __future__ import annotations

import base64
import io

import httpx
from PIL import Image

from models.demo.world import Attributes, render
from tests.conftest import Proc, Service, make_key
from tests.test_service_jobs import PROMPT, finished

WAIT = {"Prefer": "wait=60"}


def b64_png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def shape(color: str = "red", shape: str = "circle", seed: int = 0, size: int = 64) -> Image.Image:
    return render(Attributes(bg="white", color=color, shape=shape, position="left"), size=size, seed=seed)


def test_reference_images_upload_and_earlier_job(api: httpx.Client, worker: Proc) -> None:
    first = api.post("/v1/generate", json={"model": "klein", "prompt": PROMPT,
                                           "reference_images": [b64_png(shape())]}, headers=WAIT).json()
    assert first["status"] == "succeeded" and first["task"] == "reference", first
    again = api.post("/v1/generate", json={"model": "klein", "prompt": PROMPT,
                                           "reference_images": [f"{first['id']}/0", first["images"][0]["url"]]},
                     headers=WAIT).json()
    assert again["status"] == "succeeded" and len(again["images"]) == 1
    image = Image.open(io.BytesIO(api.get(again["images"][0]["url"]).content))
    assert image.size == (64, 64)


def test_image_inputs_are_validated(api: httpx.Client, gateway: str, redis_server) -> None:  # noqa: ANN001
    def refused(body: dict, field: str, text: str) -> None:
        response = api.post("/v1/generate", json={"model": "klein", "prompt": PROMPT, **body})
        assert response.status_code == 422, response.text
        assert field in str(response.json()["detail"]) and text in response.text, response.text

    refused({"reference_images": ["not base64!"]}, "reference_images", "base64")
    refused({"reference_images": [base64.b64encode(b"GIF89a...").decode()]}, "reference_images", "readable")
    refused({"reference_images": [b64_png(Image.new("RGB", (1, 600)))]}, "reference_images", "aspect")
    refused({"reference_images": [b64_png(shape())] * 5}, "reference_images", "at most 4")
    refused({"image": b64_png(shape())}, "mask", "both image and mask")
    refused({"model": "schnell", "reference_images": [b64_png(shape())]}, "model", "does not do reference")
    refused({"reference_images": ["0" * 32 + "/0"]}, "reference_images", "no image 0")
    # A decompression bomb is refused from its header, before decoding.
    bomb = io.BytesIO()
    Image.new("1", (5000, 5000)).save(bomb, format="PNG")
    refused({"reference_images": [base64.b64encode(bomb.getvalue()).decode()]}, "reference_images", "pixels")
    # Another account's image cannot be used as a reference.
    other = httpx.Client(base_url=gateway, headers={"x-key": make_key(redis_server.url)}, timeout=30)
    theirs = other.post("/v1/generate", json={"model": "schnell", "prompt": PROMPT}, headers=WAIT).json()
    refused({"reference_images": [f"{theirs['id']}/0"]}, "reference_images", "no image 0")


def test_caption_rank_upscale_and_rerank(api: httpx.Client, worker: Proc) -> None:
    red, blue = shape("red", "circle"), shape("blue", "square", seed=1)
    caption = api.post("/v1/caption", json={"model": "cogview", "image": b64_png(red), "language": "zh"},
                       headers=WAIT).json()
    assert caption["status"] == "succeeded" and caption["task"] == "caption", caption
    assert len(caption["result"]["captions"]) == 1 and isinstance(caption["result"]["captions"][0], str)

    ranked = api.post("/v1/rank", json={"model": "cogview", "prompt": PROMPT,
                                        "images": [b64_png(red), b64_png(blue), b64_png(red)]}, headers=WAIT).json()
    assert ranked["status"] == "succeeded", ranked
    scores, order = ranked["result"]["scores"], ranked["result"]["order"]
    assert sorted(order) == [0, 1, 2] and scores[order[0]] == max(scores)
    assert scores[0] == scores[2]  # the same image scores the same

    up = api.post("/v1/upscale", json={"model": "cogview", "image": b64_png(red)}, headers=WAIT).json()
    assert up["status"] == "succeeded" and up["images"][0]["width"] == 128, up
    assert Image.open(io.BytesIO(api.get(up["images"][0]["url"]).content)).size == (128, 128)

    single = api.post("/v1/generate", json={"model": "cogview", "prompt": PROMPT}).json()
    reranked = api.post("/v1/generate", json={"model": "cogview", "prompt": PROMPT, "rerank": 3},
                        headers=WAIT).json()
    assert reranked["status"] == "succeeded" and reranked["result"]["candidates_per_image"] == 3
    assert reranked["cost"] == 3 * single["cost"]  # every candidate is billed, and the cost says so
    assert finished(api, single["id"])["status"] == "succeeded"
    refused = api.post("/v1/generate", json={"model": "schnell", "prompt": PROMPT, "rerank": 2})
    assert refused.status_code == 422 and "cannot rerank" in refused.text


FILL_CATALOG = """
[variants.fill]
family = "flux"
preset = "demo-flux1-fill"
tasks = ["inpaint"]
default_steps = 4
max_steps = 8
default_guidance = 30.0
max_guidance = 50.0
default_width = 64
default_height = 64
max_size = 128
max_pixels = 16384
"""


def test_inpainting_runs_the_fill_architecture(tmp_path, log_dir) -> None:  # noqa: ANN001
    # The Fill architecture at demo size (untrained: this checks the path, not the picture).
    catalog = tmp_path / "fill.toml"
    catalog.write_text(FILL_CATALOG)
    service = Service(tmp_path, log_dir, FLUXGATE_CATALOG=str(catalog))
    try:
        service.worker(variants="fill", FLUXGATE_WORKER_PROFILE_MEMORY="false")
        mask = Image.new("L", (64, 64), 0)
        mask.paste(255, (16, 16, 48, 48))
        body = {"model": "fill", "prompt": PROMPT, "image": b64_png(shape()), "mask": b64_png(mask.convert("RGB"))}
        job = service.api.post("/v1/generate", json=body, headers=WAIT).json()
        assert job["status"] == "succeeded" and job["task"] == "inpaint", job
        assert Image.open(io.BytesIO(service.api.get(job["images"][0]["url"]).content)).size == (64, 64)
        text_only = service.api.post("/v1/generate", json={"model": "fill", "prompt": PROMPT})
        assert text_only.status_code == 422 and "does not do text-to-image" in text_only.text
    finally:
        service.close()
