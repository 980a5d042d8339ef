"""Image-conditioned tasks through the API: reference images, upscale, caption, rank, rerank, and
the validation of image inputs. Real gateway and worker processes over a real Redis."""

from __future__ import annotations

import base64
import dataclasses
import io

import httpx
import numpy as np
from PIL import Image

from models.demo.captions import caption, parse_caption
from models.demo.judge import judge
from models.demo.world import Attributes, object_box_mask, render
from tests.conftest import Proc, make_key
from tests.test_service_jobs import PROMPT, finished

WAIT = {"Prefer": "wait=60"}
# Misses allowed in six fresh scenes, from the demo CogView's measured accuracy (README).
CAPTION_MISSES = 1
UPSCALE_MISSES = 1


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


def test_a_reference_gives_its_background_to_a_prompt_that_names_none(api: httpx.Client, worker: Proc) -> None:
    # klein with one reference (FLUX.2 multi-reference): the prompt says what to draw but not on what,
    # so the background must come from the reference: black from a black scene, gray from a gray one.
    prompt = "a red circle on the left"
    for bg, other in (("black", Attributes("black", "green", "square", "right")),
                      ("gray", Attributes("gray", "blue", "triangle", "top")),
                      ("white", Attributes("white", "yellow", "circle", "bottom"))):
        job = api.post("/v1/generate", json={"model": "klein", "prompt": prompt, "seed": 3,
                                             "reference_images": [b64_png(render(other, 64, seed=1))]},
                       headers=WAIT).json()
        assert job["status"] == "succeeded", job
        seen = judge(Image.open(io.BytesIO(api.get(job["images"][0]["url"]).content)).convert("RGB"))
        assert (seen.bg, seen.color, seen.position) == (bg, "red", "left"), (bg, seen)


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
    too_big = api.post("/v1/generate", json={"model": "cogview", "prompt": PROMPT, "width": 128, "height": 128})
    assert too_big.status_code == 422 and "64 px sides only" in too_big.text, too_big.text


SCENES = [Attributes("white", "red", "circle", "left"), Attributes("black", "blue", "square", "right"),
          Attributes("gray", "yellow", "triangle", "top"), Attributes("white", "green", "square", "bottom"),
          Attributes("black", "orange", "triangle", "center"), Attributes("gray", "red", "circle", "right")]


def run_task(api: httpx.Client, route: str, body: dict) -> dict:
    job = api.post(route, json=body, headers=WAIT).json()
    assert job["status"] == "succeeded", job
    return job


def test_captions_parse_to_the_attributes_of_the_image(api: httpx.Client, worker: Proc) -> None:
    for language in ("en", "zh"):
        right = 0
        for i, attrs in enumerate(SCENES):
            job = run_task(api, "/v1/caption", {"model": "cogview", "image": b64_png(render(attrs, 64, seed=i)),
                                                "language": language, "seed": i})
            text = job["result"]["captions"][0]
            right += parse_caption(text) == attrs
        # The demo captioner's accuracy is measured in the README (benchmarks/cogview_demo_eval.py).
        assert right >= len(SCENES) - CAPTION_MISSES, (language, right)


def test_rank_puts_the_image_that_matches_the_prompt_first(api: httpx.Client, worker: Proc) -> None:
    images = [b64_png(render(attrs, 64, seed=i)) for i, attrs in enumerate(SCENES[:4])]
    for i, attrs in enumerate(SCENES[:4]):
        for language in ("en", "zh"):
            job = run_task(api, "/v1/rank", {"model": "cogview", "prompt": caption(attrs, language),
                                             "images": images})
            assert job["result"]["order"][0] == i, (attrs, language, job["result"])


def test_an_upscale_keeps_the_attributes(api: httpx.Client, worker: Proc) -> None:
    kept = 0
    for i, attrs in enumerate(SCENES):
        job = run_task(api, "/v1/upscale", {"model": "cogview", "image": b64_png(render(attrs, 64, seed=i)),
                                            "prompt": caption(attrs), "seed": i})
        image = Image.open(io.BytesIO(api.get(job["images"][0]["url"]).content)).convert("RGB")
        assert image.size == (128, 128)
        kept += judge(image) == attrs
    assert kept >= len(SCENES) - UPSCALE_MISSES, kept


def test_inpainting_paints_the_prompt_into_the_mask_and_keeps_the_rest(api: httpx.Client, worker: Proc) -> None:
    # The demo Fill model: each scene's object is masked and the prompt asks for another colour there.
    cases = [(Attributes("white", "red", "circle", "left"), "blue"),
             (Attributes("black", "green", "square", "right"), "yellow"),
             (Attributes("gray", "yellow", "triangle", "top"), "purple"),
             (Attributes("white", "blue", "square", "bottom"), "orange"),
             (Attributes("black", "orange", "circle", "center"), "red"),
             (Attributes("gray", "purple", "square", "left"), "green")]
    recoloured = 0
    for i, (attrs, color) in enumerate(cases):
        source = render(attrs, 64, seed=i)
        mask = object_box_mask(source)
        wanted = dataclasses.replace(attrs, color=color)
        body = {"model": "fill", "prompt": caption(wanted), "seed": i, "image": b64_png(source),
                "mask": b64_png(mask.convert("RGB"))}
        job = api.post("/v1/generate", json=body, headers=WAIT).json()
        assert job["status"] == "succeeded" and job["task"] == "inpaint", job
        out = Image.open(io.BytesIO(api.get(job["images"][0]["url"]).content)).convert("RGB")
        seen = judge(out)
        assert (seen.bg, seen.position) == (attrs.bg, attrs.position), (attrs, color, seen)
        outside = np.asarray(mask) == 0  # the unmasked pixels are kept (within the AE's round trip)
        diff = np.abs(np.asarray(out).astype(float) - np.asarray(source).astype(float))[outside].mean()
        assert diff < 8, (attrs, diff)
        recoloured += seen.color == color
    # Colour is the attribute the demo Fill gets right 97% of the time (train_edit.py): allow one miss.
    assert recoloured >= len(cases) - 1, recoloured

    text_only = api.post("/v1/generate", json={"model": "fill", "prompt": PROMPT})
    assert text_only.status_code == 422 and "does not do text-to-image" in text_only.text
