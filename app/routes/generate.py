"""POST /v1/generate: validate against the variant, price, submit atomically, optionally wait."""

from __future__ import annotations

import re
import secrets
import time

from fastapi import APIRouter, Header, HTTPException, Request
from fastapi.responses import JSONResponse

from app.auth import CurrentKey, Store
from app.routes.urls import job_response, job_urls
from app.schemas import GenerateRequest, JobResponse, SubmitResponse
from store.catalog import Variant
from store.records import Job, JobStatus

router = APIRouter(prefix="/v1", tags=["generate"])

_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d+)", re.IGNORECASE)


def _invalid(field: str, message: str) -> HTTPException:
    # Same shape as FastAPI's own validation errors, so clients parse one format.
    return HTTPException(422, [{"loc": ["body", field], "msg": message, "type": "value_error"}])


def _resolve(body: GenerateRequest, variant: Variant) -> tuple[int, int, int, float]:
    """Defaults filled in and every variant limit checked; raises 422 naming the field."""
    width = body.width if body.width is not None else variant.default_width
    height = body.height if body.height is not None else variant.default_height
    for field, side in (("width", width), ("height", height)):
        if side % variant.size_multiple:
            raise _invalid(field, f"{field} must be a multiple of {variant.size_multiple} (got {side})")
        if not variant.min_size <= side <= variant.max_size:
            raise _invalid(field, f"{field} must be between {variant.min_size} and {variant.max_size} "
                                  f"for {variant.name} (got {side})")
    if width * height > variant.max_pixels:
        raise _invalid("width", f"{width}x{height} is {width * height} pixels; {variant.name} allows at most "
                                f"{variant.max_pixels}")
    steps = body.steps if body.steps is not None else variant.default_steps
    if not variant.min_steps <= steps <= variant.max_steps:
        raise _invalid("steps", f"steps must be between {variant.min_steps} and {variant.max_steps} "
                                f"for {variant.name} (got {steps})")
    guidance = body.guidance if body.guidance is not None else variant.default_guidance
    if not variant.min_guidance <= guidance <= variant.max_guidance:
        raise _invalid("guidance", f"guidance must be between {variant.min_guidance} and "
                                   f"{variant.max_guidance} for {variant.name} (got {guidance})")
    return width, height, steps, guidance


def _prefer_wait(prefer: str | None, limit: int) -> int:
    match = _PREFER_WAIT.search(prefer or "")
    return min(int(match.group(1)), limit) if match else 0


@router.post(
    "/generate", status_code=202, response_model=SubmitResponse,
    responses={200: {"model": JobResponse, "description": "finished within `Prefer: wait=N`"}},
)
async def generate(
    body: GenerateRequest, request: Request, key: CurrentKey, store: Store,
    prefer: str | None = Header(default=None, description="wait=N (N <= 60): answer 200 with the finished job"),
) -> SubmitResponse | JSONResponse:
    catalog = request.app.state.catalog
    variant = catalog.get(body.model)
    if variant is None:
        raise _invalid("model", f"unknown model {body.model!r}; available: {', '.join(catalog.variants)}")
    width, height, steps, guidance = _resolve(body, variant)
    seed = body.seed if body.seed is not None else secrets.randbelow(2**31)
    job = Job(
        id=secrets.token_hex(16),  # 128 random bits: ids are unguessable
        account=key.account, key_id=key.id, variant=variant.name, status=JobStatus.QUEUED,
        prompt=body.prompt, width=width, height=height, steps=steps, guidance=guidance, n=body.n,
        seeds=[seed + i for i in range(body.n)], output_format=body.output_format,
        cost=variant.cost(width, height, body.n), created_at=time.time(),
    )
    position = await store.submit(job)
    wait_s = _prefer_wait(prefer, request.app.state.settings.max_wait_s)
    if wait_s:
        finished = await store.wait_terminal(job.id, wait_s)
        if finished is not None:
            return JSONResponse(job_response(request, finished).model_dump(mode="json"), status_code=200,
                                headers={"Preference-Applied": f"wait={wait_s}"})
    return SubmitResponse(id=job.id, status="queued", queue_position=position, cost=job.cost,
                          **job_urls(request, job.id))
