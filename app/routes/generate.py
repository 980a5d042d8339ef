"""POST /v1/generate: validate against the variant, price, submit atomically, optionally wait."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from dataclasses import dataclass, replace

from fastapi import APIRouter, Header, HTTPException, Request
from fastapi.responses import JSONResponse

from app.auth import Caller, CurrentCaller, Store, quota_headers
from app.images import resolve_image
from app.routes.urls import job_response, job_urls
from app.schemas import GenerateRequest, JobResponse, SubmitResponse
from app.webhooks import check_webhook_url
from store.catalog import Variant
from store.jobstore import Admission, JobStore, SubmitResult
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


def _check_tier(caller: Caller, variant: Variant, width: int, height: int) -> None:
    tier = caller.tier
    if tier.name not in variant.tiers or not tier.allows_variant(variant.name):
        raise HTTPException(403, f"the {tier.name} tier may not use {variant.name}; "
                                 f"it is available to: {', '.join(variant.tiers)}")
    megapixels = width * height / 1e6
    if megapixels > tier.max_megapixels:
        raise HTTPException(403, f"{width}x{height} is {megapixels:.2f} megapixels; the {tier.name} tier allows "
                                 f"at most {tier.max_megapixels} per image")


def _idempotency(header: str | None, body: GenerateRequest) -> tuple[str, str]:
    """(hash of the Idempotency-Key, fingerprint of the request body), or empty strings."""
    if header is None:
        return "", ""
    if not 1 <= len(header) <= 255:
        raise _invalid("Idempotency-Key", "Idempotency-Key must be 1 to 255 characters")
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(header.encode()).hexdigest(), hashlib.sha256(canonical.encode()).hexdigest()


def _refusal(result: SubmitResult, caller: Caller, job: Job) -> HTTPException:
    tier = caller.tier
    if result.outcome == "rate":
        return HTTPException(429, f"rate limit: the {tier.name} tier allows {tier.requests_per_minute} requests "
                                  f"per minute; retry in {result.value} s", headers={"Retry-After": result.value})
    if result.outcome == "concurrency":
        return HTTPException(429, f"concurrency limit: the {tier.name} tier allows {result.value} unfinished jobs "
                                  "at once; retry when one finishes", headers={"Retry-After": "2"})
    if result.outcome == "daily":
        return HTTPException(429, f"daily quota: the {tier.name} tier allows {tier.images_per_day} images per day "
                                  f"(UTC); this request asks for {job.n}", headers={"Retry-After": result.value})
    if result.outcome == "credits":
        return HTTPException(402, f"insufficient credits: this request costs {job.reserved} milli-credits and "
                                  f"the balance is {result.value}")
    if result.outcome == "queue_full":
        return HTTPException(503, f"{job.variant} is overloaded: {result.value} jobs are queued; retry shortly",
                             headers={"Retry-After": "5"})
    if result.outcome == "idempotency_mismatch":
        return _invalid("Idempotency-Key", "this Idempotency-Key was used with a different request body; "
                                           "use a new key for a new request")
    return HTTPException(500, f"unexpected admission result {result.outcome}")


@dataclass(frozen=True)
class Submitted:
    """What submit_job admitted: the job (the earlier one on an idempotent replay) and its queue position."""

    job: Job
    queue_position: int
    replayed: bool = False


async def _task_inputs(body: GenerateRequest, store: JobStore, caller: Caller) -> tuple[str, list[bytes]]:
    """The task a generate request asks for, and its input images (validated)."""
    if body.reference_images and (body.image or body.mask):
        raise _invalid("reference_images", "send reference_images or image + mask (inpainting), not both")
    if body.reference_images:
        return "reference", [await resolve_image(f"reference_images.{i}", ref, store, caller.account_id)
                             for i, ref in enumerate(body.reference_images)]
    if body.image or body.mask:
        if not (body.image and body.mask):
            raise _invalid("mask" if body.image else "image", "inpainting needs both image and mask")
        return "inpaint", [await resolve_image("image", body.image, store, caller.account_id),
                           await resolve_image("mask", body.mask, store, caller.account_id)]
    return "text-to-image", []


async def submit_job(request: Request, caller: Caller, store: JobStore, body: GenerateRequest,
                     idempotency_key: str | None = None, *, task: str | None = None,
                     inputs: list[bytes] | None = None, params: dict | None = None) -> Submitted:
    """Validate, price and admit one request; shared by /v1/generate, the image-task routes and the
    OpenAI/BFL-compatible routes, so every entrance applies the same limits, tiers and billing.
    `task`/`inputs` come from the task routes; for /v1/generate they follow from the body.
    Raises HTTPException on refusal."""
    catalog = request.app.state.catalog
    variant = catalog.get(body.model)
    if variant is None:
        raise _invalid("model", f"unknown model {body.model!r}; available: {', '.join(catalog.variants)}")
    width, height, steps, guidance = _resolve(body, variant)
    _check_tier(caller, variant, width, height)
    if task is None:
        task, inputs = await _task_inputs(body, store, caller)
        if variant.native_sizes and not {width, height} <= set(variant.native_sizes):
            sides = " or ".join(str(s) for s in variant.native_sizes)
            raise _invalid("width" if width not in variant.native_sizes else "height",
                           f"{variant.name} draws {sides} px sides only (got {width}x{height}); "
                           f"/v1/upscale doubles an image it made")
    inputs = inputs or []
    params = dict(params or {})
    if task not in variant.tasks:
        raise _invalid("model", f"{variant.name} does not do {task}; its tasks: {', '.join(variant.tasks)}")
    if body.rerank:
        if "rerank" not in variant.tasks:
            raise _invalid("rerank", f"{variant.name} cannot rerank; CogView variants can")
        params["rerank"] = body.rerank
    if body.webhook_url:
        await check_webhook_url(body.webhook_url, request.app.state.settings.webhook_allow_private)
    idem_hash, fingerprint = _idempotency(idempotency_key, body)
    seed = body.seed if body.seed is not None else secrets.randbelow(2**31)
    # Reranking generates `rerank` candidates per delivered image, and each is billed.
    cost = variant.cost(width, height, body.n) * (body.rerank or 1)
    now = time.time()
    job = Job(
        id=secrets.token_hex(16),  # 128 random bits: ids are unguessable
        account=caller.account_id, key_id=caller.key.id, variant=variant.name, status=JobStatus.QUEUED,
        prompt=body.prompt, width=width, height=height, steps=steps, guidance=guidance, n=body.n,
        seeds=[seed + i for i in range(body.n)], output_format=body.output_format, cost=cost,
        reserved=cost if caller.tier.pays_credits else 0, priority=caller.tier.priority, created_at=now,
        deadline=now + body.deadline_s if body.deadline_s is not None else None,
        task=task, inputs=len(inputs), params=params, webhook_url=body.webhook_url,
    )
    if inputs:
        await store.put_inputs(job.id, inputs)
    admission = Admission(
        requests_per_minute=caller.tier.requests_per_minute, images_per_day=caller.tier.images_per_day,
        concurrent_jobs=caller.tier.concurrent_jobs, reserve=job.reserved, fingerprint=fingerprint,
        idempotency_key=idem_hash, max_queued=variant.max_queued,
    )
    result = await store.submit(job, admission)
    if result.outcome == "idempotent":
        existing = await store.get(result.value)
        if existing is None:  # the job expired after its retention; the key is spent
            raise _invalid("Idempotency-Key", "this Idempotency-Key's job has expired; use a new key")
        request.state.job_id = existing.id  # for the access log
        return Submitted(existing, existing.queue_position or 0, replayed=True)
    if result.outcome != "ok":
        raise _refusal(result, caller, job)
    request.state.job_id = job.id  # for the access log
    # The quota headers count this request too (derived: the script just admitted exactly this).
    quota = caller.quota
    admitted = replace(quota, requests_this_minute=quota.requests_this_minute + 1,
                       images_today=quota.images_today + job.n, active_jobs=quota.active_jobs + 1)
    request.state.quota_headers = quota_headers(caller.tier, admitted, caller.account.balance - job.reserved)
    return Submitted(job, int(result.value))


@router.post(
    "/generate", status_code=202, response_model=SubmitResponse,
    responses={200: {"model": JobResponse, "description": "finished within `Prefer: wait=N`"},
               402: {"description": "insufficient credits"}, 403: {"description": "tier may not use this"},
               429: {"description": "rate, concurrency or daily limit; see Retry-After"}},
)
async def generate(
    body: GenerateRequest, request: Request, caller: CurrentCaller, store: Store,
    prefer: str | None = Header(default=None, description="wait=N (N <= 60): answer 200 with the finished job"),
    idempotency_key: str | None = Header(default=None, description="same key + body: the same job, one charge"),
) -> SubmitResponse | JSONResponse:
    submitted = await submit_job(request, caller, store, body, idempotency_key)
    job = submitted.job
    if submitted.replayed:
        return JSONResponse(
            SubmitResponse(id=job.id, status=job.status, queue_position=submitted.queue_position,
                           cost=job.cost, **job_urls(request, job.id)).model_dump(mode="json"),
            status_code=202, headers={"Idempotent-Replayed": "true"})
    wait_s = _prefer_wait(prefer, request.app.state.settings.max_wait_s)
    if wait_s:
        finished = await store.wait_terminal(job.id, wait_s)
        if finished is not None:
            return JSONResponse(job_response(request, finished).model_dump(mode="json"), status_code=200,
                                headers={"Preference-Applied": f"wait={wait_s}"})
    return SubmitResponse(id=job.id, status="queued", queue_position=submitted.queue_position, cost=job.cost,
                          **job_urls(request, job.id))
