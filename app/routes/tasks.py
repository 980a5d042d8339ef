"""Image tasks as jobs: upscale (CogView super-resolution), caption, rank. Same admission, billing,
polling, events and `Prefer: wait` as /v1/generate; results are images (upscale) or `result`."""

from __future__ import annotations

from fastapi import APIRouter, Header, HTTPException, Request
from fastapi.responses import JSONResponse

from app.auth import Caller, CurrentCaller, Store
from app.images import resolve_image
from app.routes.generate import _prefer_wait, submit_job
from app.routes.urls import job_response, job_urls
from app.schemas import CaptionRequest, GenerateRequest, JobResponse, RankRequest, SubmitResponse, UpscaleRequest
from store.jobstore import JobStore

router = APIRouter(prefix="/v1", tags=["image tasks"])

_RESPONSES = {200: {"model": JobResponse, "description": "finished within `Prefer: wait=N`"},
              402: {"description": "insufficient credits"}, 403: {"description": "tier may not use this"},
              429: {"description": "rate, concurrency or daily limit; see Retry-After"}}
PreferHeader = Header(default=None, description="wait=N (N <= 60): answer 200 with the finished job")


def _variant_size(request: Request, model: str) -> int:
    variant = request.app.state.catalog.get(model)
    if variant is None:
        raise HTTPException(422, [{"loc": ["body", "model"], "type": "value_error",
                                   "msg": f"unknown model {model!r}"}])
    return variant.default_width


async def _admit(request: Request, caller: Caller, store: JobStore, body: GenerateRequest,
                 task: str, inputs: list[bytes], params: dict, prefer: str | None) -> SubmitResponse | JSONResponse:
    submitted = await submit_job(request, caller, store, body, task=task, inputs=inputs, params=params)
    job = submitted.job
    wait_s = _prefer_wait(prefer, request.app.state.settings.max_wait_s)
    if wait_s:
        finished = await store.wait_terminal(job.id, wait_s)
        if finished is not None:
            return JSONResponse(job_response(request, finished).model_dump(mode="json"), status_code=200)
    return SubmitResponse(id=job.id, status="queued", queue_position=submitted.queue_position, cost=job.cost,
                          **job_urls(request, job.id))


@router.post("/upscale", status_code=202, response_model=SubmitResponse, responses=_RESPONSES)
async def upscale(body: UpscaleRequest, request: Request, caller: CurrentCaller, store: Store,
                  prefer: str | None = PreferHeader) -> SubmitResponse | JSONResponse:
    """Twice the resolution, in the model's token space (CogView's super-resolution)."""
    side = 2 * _variant_size(request, body.model)
    image = await resolve_image("image", body.image, store, caller.account_id)
    job_body = GenerateRequest(model=body.model, prompt=body.prompt or "-", width=side, height=side,
                               seed=body.seed, output_format=body.output_format)
    return await _admit(request, caller, store, job_body, "upscale", [image], {}, prefer)


@router.post("/caption", status_code=202, response_model=SubmitResponse, responses=_RESPONSES)
async def caption(body: CaptionRequest, request: Request, caller: CurrentCaller, store: Store,
                  prefer: str | None = PreferHeader) -> SubmitResponse | JSONResponse:
    """A caption in English or Chinese; the job's `result` is {"captions": [...]}."""
    side = _variant_size(request, body.model)
    image = await resolve_image("image", body.image, store, caller.account_id)
    job_body = GenerateRequest(model=body.model, prompt="-", width=side, height=side, seed=body.seed)
    return await _admit(request, caller, store, job_body, "caption", [image],
                        {"language": body.language}, prefer)


@router.post("/rank", status_code=202, response_model=SubmitResponse, responses=_RESPONSES)
async def rank(body: RankRequest, request: Request, caller: CurrentCaller, store: Store,
               prefer: str | None = PreferHeader) -> SubmitResponse | JSONResponse:
    """Score images against a prompt by caption likelihood; `result` is {"scores": [...], "order": [...]}
    with order listing image indices from best to worst."""
    side = _variant_size(request, body.model)
    images = [await resolve_image(f"images.{i}", image, store, caller.account_id)
              for i, image in enumerate(body.images)]
    # One "image" of work per candidate scored.
    job_body = GenerateRequest(model=body.model, prompt=body.prompt, width=side, height=side, n=1)
    return await _admit(request, caller, store, job_body, "rank", images, {}, prefer)
