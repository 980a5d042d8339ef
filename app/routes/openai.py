"""OpenAI-compatible `POST /v1/images/generations`, so the official `openai` SDKs (and tools built on
them) can use this server by changing only base_url and api_key.

OpenAI's endpoint is synchronous, so this one submits a normal job and waits for it (up to
FLUXGATE_OPENAI_WAIT_S). Errors use OpenAI's `{"error": {message, type, param, code}}` shape.
"""

from __future__ import annotations

import base64
import re
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.auth import CurrentCaller, Store
from app.routes.bfl import compat_settings, delivery_url
from app.routes.generate import submit_job
from app.routes.urls import job_urls
from app.schemas import MAX_PROMPT_CHARS, GenerateRequest
from store.records import JobStatus

router = APIRouter(prefix="/v1/images", tags=["openai"])

_SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")


class OpenAIImageRequest(BaseModel):
    # OpenAI fields with no meaning here (quality, style, background, moderation, user, ...) are accepted
    # and ignored, so requests written for OpenAI pass unchanged.
    model_config = ConfigDict(extra="ignore")

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    model: str | None = Field(default=None, description="a catalog variant; default: the catalog's first")
    n: int = Field(default=1, ge=1, le=4)
    size: str | None = Field(default=None, description="WxH, or auto for the variant's default")
    response_format: Literal["b64_json", "url"] | None = None
    output_format: Literal["png", "jpeg", "webp"] | None = None
    # Extensions beyond OpenAI's API (pass them with the SDK's extra_body=).
    seed: int | None = Field(default=None, ge=0, lt=2**63 - 16)
    steps: int | None = None
    guidance: float | None = Field(default=None, allow_inf_nan=False)


def _error(status: int, message: str, param: str | None = None, code: str | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    if status == 429:
        kind = "rate_limit_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}},
                        status_code=status, headers=headers)


def _from_http(err: HTTPException) -> JSONResponse:
    """Our HTTPException (plain text or FastAPI's list of field errors) in OpenAI's error shape."""
    detail: Any = err.detail
    param = None
    if isinstance(detail, list) and detail:
        param = str(detail[0].get("loc", ["", ""])[-1])
        detail = "; ".join(str(d.get("msg")) for d in detail)
    # OpenAI answers every invalid parameter with 400; the SDKs map 422 to a different exception.
    status = 400 if err.status_code == 422 else err.status_code
    return _error(status, str(detail), param=param, headers=dict(err.headers or {}))


def _from_validation(err: ValidationError) -> JSONResponse:
    first = err.errors()[0]
    param = ".".join(str(p) for p in first["loc"]) or None
    return _error(400, f"{param}: {first['msg']}" if param else first["msg"], param=param)


@router.post("/generations", responses={400: {"description": "invalid request (OpenAI error shape)"},
                                        504: {"description": "not finished in time; poll the job"}})
async def create_image(request: Request, caller: CurrentCaller, store: Store,
                       payload: Annotated[dict[str, Any], Body()]) -> JSONResponse:
    """Generate images and answer when they are done: `{created, data: [{b64_json | url}], ...}`."""
    try:
        body = OpenAIImageRequest.model_validate(payload)
    except ValidationError as err:
        return _from_validation(err)
    catalog = request.app.state.catalog
    model = body.model or next(iter(catalog.variants))
    width = height = None
    if body.size and body.size != "auto":
        match = _SIZE.match(body.size)
        if not match:
            return _error(400, f"size must be WIDTHxHEIGHT or auto (got {body.size!r})", param="size")
        width, height = int(match.group(1)), int(match.group(2))
    output_format = body.output_format or "png"
    try:
        generate = GenerateRequest(model=model, prompt=body.prompt, width=width, height=height, n=body.n,
                                   seed=body.seed, steps=body.steps, guidance=body.guidance,
                                   output_format=output_format)
        # An Idempotency-Key (the SDKs can send one) makes a retried request the same job, charged once.
        submitted = await submit_job(request, caller, store, generate,
                                     request.headers.get("idempotency-key"))
    except ValidationError as err:
        return _from_validation(err)
    except HTTPException as err:
        return _from_http(err)

    job_id = submitted.job.id
    wait_s = compat_settings(request).openai_wait_s
    job = await store.wait_terminal(job_id, wait_s)
    if job is None:
        # The job goes on; a retry would start (and bill) another one, so tell the SDK not to retry.
        polling_url = job_urls(request, job_id)["polling_url"]
        return _error(504, f"job {job_id} did not finish within {wait_s} s; it is still running: poll "
                           f"{polling_url} with the same key", code="timeout",
                      headers={"x-should-retry": "false", "Location": polling_url})
    if job.status != JobStatus.SUCCEEDED:
        message = f"job {job_id} {job.status}: {job.error or 'no images were produced'} (not charged)"
        return _error(500 if job.status == JobStatus.FAILED else 409, message, code=f"job_{job.status}",
                      headers={"x-should-retry": "false"})

    data = []
    for index in range(job.images):
        if body.response_format == "url":
            data.append({"url": await delivery_url(request, store, job, index), "seed": job.seeds[index]})
        else:
            raw = await store.image(job.id, index)
            if raw is None:
                return _error(500, f"job {job_id}: image {index} is missing", code="image_missing")
            data.append({"b64_json": base64.b64encode(raw).decode(), "seed": job.seeds[index]})
    return JSONResponse({
        "created": int(job.created_at or time.time()), "data": data, "output_format": job.output_format,
        "size": f"{job.width}x{job.height}", "id": job.id, "model": job.variant, "cost": job.cost,
    })
