"""BFL-compatible routes, so clients written for api.bfl.ai work against this server unchanged:
`POST /v1/<endpoint>` (e.g. /v1/flux-dev) -> {id, polling_url, cost}, `GET /v1/get_result?id=` with BFL's
status strings, and signed delivery URLs for `result.sample` that need no key (BFL clients download
samples with a plain GET, as they would from BFL's delivery host).

Each BFL endpoint is registered as its own literal route (never a `/v1/{endpoint}` wildcard), so no
existing or future /v1 route can be shadowed by it.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import time
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.auth import CurrentCaller, Store
from app.routes.generate import submit_job
from app.routes.urls import base_url
from app.schemas import MAX_PROMPT_CHARS, GenerateRequest
from store import keys
from store.catalog import Catalog, Variant
from store.records import MEDIA_TYPES, Job, JobStatus

# BFL endpoint -> catalog variants that may serve it, first present wins. The demo catalog's names come
# last, so the real catalog's full-size variants are preferred when both exist. A catalog variant whose
# own name looks like a BFL endpoint (flux-2-klein-4b) is served under that name too.
DEFAULT_ENDPOINTS: dict[str, tuple[str, ...]] = {
    "flux-schnell": ("flux1-schnell", "schnell"),
    "flux-dev": ("flux1-dev", "dev"),
    "flux-2-klein-4b": ("flux-2-klein-4b", "klein"),
    "flux-2-klein-9b": ("flux-2-klein-9b", "klein"),
    "flux-2-flex": ("flux-2-flex", "flex"),
    "flux-2-pro": ("flux-2-pro", "pro"),
    "flux-2-max": ("flux-2-max", "max"),
}
_ENDPOINT_NAME = re.compile(r"^flux[a-z0-9.-]*$")
# Fields of BFL requests that change the image and that this server cannot honour: refused, not ignored.
_UNSUPPORTED = ("input_image", "image_prompt", "mask", "image", "control_image", "finetune_id", "webhook_url")


class CompatSettings(BaseSettings):
    """Settings of the compatibility routes (FLUXGATE_* environment variables)."""

    model_config = SettingsConfigDict(env_prefix="FLUXGATE_", extra="ignore")

    # Extra BFL endpoint mappings, "endpoint=variant,endpoint=variant" (override the built-in table).
    bfl_endpoints: str = ""
    # How long POST /v1/images/generations waits for its images before answering 504 (seconds).
    openai_wait_s: int = 120
    # Lifetime of a signed delivery URL (capped by the job's retention), seconds.
    delivery_ttl_s: int = 3600


def endpoint_table(catalog: Catalog, overrides: str = "") -> dict[str, str]:
    """BFL endpoint name -> catalog variant name, for the variants this catalog has."""
    table: dict[str, str] = {}
    for endpoint, candidates in DEFAULT_ENDPOINTS.items():
        found = next((c for c in candidates if c in catalog.variants), None)
        if found:
            table[endpoint] = found
    for name in catalog.variants:
        if _ENDPOINT_NAME.match(name):
            table.setdefault(name, name)
    for pair in filter(None, (p.strip() for p in overrides.split(","))):
        endpoint, _, variant = pair.partition("=")
        if variant.strip() not in catalog.variants:
            raise ValueError(f"FLUXGATE_BFL_ENDPOINTS maps {endpoint!r} to unknown variant {variant!r}")
        table[endpoint.strip()] = variant.strip()
    return table


# -- signed delivery URLs (also used by the OpenAI route's response_format=url) -------------------------
async def _delivery_secret(request: Request, store: Store) -> bytes:
    """One secret for all gateway replicas, created by whichever asks first (SET NX) and kept in Redis."""
    cached = getattr(request.app.state, "delivery_secret", None)
    if cached is None:
        await store.redis.set(keys.DELIVERY_SECRET, secrets.token_hex(32), nx=True)
        cached = (await store.redis.get(keys.DELIVERY_SECRET)).encode()
        request.app.state.delivery_secret = cached
    return cached


def _signature(secret: bytes, job_id: str, index: int, expires: int) -> str:
    return hmac.new(secret, f"{job_id}/{index}/{expires}".encode(), hashlib.sha256).hexdigest()[:40]


async def delivery_url(request: Request, store: Store, job: Job, index: int) -> str:
    """A URL that serves one image without a key until it expires: for clients that, like BFL's and
    OpenAI's, download results with a bare GET."""
    settings: CompatSettings = compat_settings(request)
    expires = int(time.time()) + settings.delivery_ttl_s
    if job.expires_at:
        expires = min(expires, int(job.expires_at))
    sig = _signature(await _delivery_secret(request, store), job.id, index, expires)
    return f"{base_url(request)}/delivery/{job.id}/{index}?exp={expires}&sig={sig}"


def compat_settings(request: Request) -> CompatSettings:
    settings = getattr(request.app.state, "compat_settings", None)
    if settings is None:
        settings = request.app.state.compat_settings = CompatSettings()
    return settings


delivery_router = APIRouter(tags=["compat"])


@delivery_router.get("/delivery/{job_id}/{index}", response_class=Response,
                     responses={200: {"content": {t: {} for t in MEDIA_TYPES.values()}}})
async def delivery(request: Request, store: Store, job_id: str = Path(pattern=r"^[0-9a-f]{32}$"),
                   index: int = Path(ge=0, le=15), exp: int = Query(), sig: str = Query(max_length=64)) -> Response:
    """A result image by signed URL (no key): the URL itself is the credential, valid until `exp`."""
    expected = _signature(await _delivery_secret(request, store), job_id, index, exp)
    # Compared as bytes: compare_digest raises on non-ASCII str (a 500 for a forged ?sig=é).
    if not hmac.compare_digest(expected.encode(), sig.encode()) or exp < time.time():
        raise HTTPException(403, "this delivery URL is invalid or has expired; fetch a fresh one")
    job = await store.get(job_id)
    data = await store.image(job_id, index) if job is not None else None
    if job is None or data is None:
        raise HTTPException(404, "this image has expired")
    return Response(data, media_type=MEDIA_TYPES[job.output_format], headers={"Cache-Control": "private, max-age=600"})


# -- BFL submit and get_result ------------------------------------------------------------------------
class BflRequest(BaseModel):
    # BFL clients send fields this server has no use for (safety_tolerance, prompt_upsampling, ...).
    model_config = ConfigDict(extra="allow")

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    width: int | None = None
    height: int | None = None
    aspect_ratio: str | None = Field(default=None, pattern=r"^\d{1,2}:\d{1,2}$")
    steps: int | None = None
    guidance: float | None = Field(default=None, allow_inf_nan=False)
    seed: int | None = Field(default=None, ge=0, lt=2**63 - 16)
    output_format: Literal["jpeg", "png", "webp"] = "jpeg"  # BFL's default


class BflSubmitResponse(BaseModel):
    id: str
    polling_url: str
    cost: float = Field(description="credits (1 credit = 1000 milli-credits), as BFL reports it")
    input_mp: float | None = None
    output_mp: float | None = None


class BflResult(BaseModel):
    id: str
    status: Literal["Ready", "Pending", "Request Moderated", "Content Moderated", "Error", "Task not found"]
    result: dict[str, Any] | None = None
    progress: float | None = None
    details: dict[str, Any] | None = None
    preview: dict[str, Any] | None = None


def _aspect_size(ratio: str, variant: Variant) -> tuple[int, int]:
    """The variant's default area in the requested shape, rounded to its size multiple."""
    a, b = (int(x) for x in ratio.split(":"))
    if not (a and b):
        raise HTTPException(422, [{"loc": ["body", "aspect_ratio"], "msg": "aspect_ratio needs two positive numbers",
                                   "type": "value_error"}])
    area, m = variant.default_width * variant.default_height, variant.size_multiple
    width = max(m, round(math.sqrt(area * a / b) / m) * m)
    height = max(m, round(math.sqrt(area * b / a) / m) * m)
    return width, height


def _bfl_status(job: Job) -> str:
    status = JobStatus(job.status)
    if status == JobStatus.SUCCEEDED:
        return "Ready"
    if not status.terminal:
        return "Pending"
    if job.error and "moderat" in job.error.lower():
        return "Content Moderated"
    return "Error"


def bfl_router(catalog: Catalog) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["bfl"])
    table = endpoint_table(catalog, CompatSettings().bfl_endpoints)

    def make_handler(endpoint: str, variant_name: str):  # noqa: ANN202  (a FastAPI endpoint)
        async def submit(body: BflRequest, request: Request, caller: CurrentCaller,
                         store: Store) -> BflSubmitResponse:
            extra = body.model_extra or {}
            refused = [f for f in extra if f.startswith(_UNSUPPORTED) and extra[f] not in (None, "")]
            if refused:
                raise HTTPException(422, [{"loc": ["body", refused[0]], "type": "value_error",
                                           "msg": f"{refused[0]} is not supported by this server"}])
            width, height = body.width, body.height
            if body.aspect_ratio and width is None and height is None:
                width, height = _aspect_size(body.aspect_ratio, catalog.variants[variant_name])
            generate = GenerateRequest(model=variant_name, prompt=body.prompt, width=width, height=height,
                                       steps=body.steps, guidance=body.guidance, seed=body.seed,
                                       output_format=body.output_format)
            job = (await submit_job(request, caller, store, generate)).job
            return BflSubmitResponse(id=job.id, polling_url=f"{base_url(request)}/v1/get_result?id={job.id}",
                                     cost=job.cost / 1000, output_mp=round(job.width * job.height / 1e6, 4))

        submit.__doc__ = f"BFL-compatible `{endpoint}`: served by the `{variant_name}` variant."
        return submit

    for endpoint, variant_name in table.items():
        router.add_api_route(f"/{endpoint}", make_handler(endpoint, variant_name), methods=["POST"],
                             response_model=BflSubmitResponse, name=f"bfl_{endpoint}")

    @router.get("/get_result", response_model=BflResult)
    async def get_result(request: Request, caller: CurrentCaller, store: Store,
                         id: str = Query(description="the id from the submit response")) -> BflResult:  # noqa: A002
        """BFL-style polling: Pending (with progress 0..1), Ready (result.sample: a signed URL), Error, ..."""
        job = await store.get(id) if re.fullmatch(r"[0-9a-f]{32}", id) else None
        if job is None or job.account != caller.account_id:
            return BflResult(id=id, status="Task not found")
        request.state.job_id = job.id  # for the access log
        status = _bfl_status(job)
        progress = job.progress_step / job.progress_total if job.progress_total else 0.0
        if status == "Ready":
            sample = await delivery_url(request, store, job, 0) if job.images else None
            duration = job.finished_at - job.created_at if job.finished_at else None
            return BflResult(id=id, status=status, progress=1.0, result={
                "sample": sample, "prompt": job.prompt, "seed": job.seeds[0], "start_time": job.started_at,
                "end_time": job.finished_at, "duration": duration})
        details = {"error": job.error or f"the job was {job.status}"} if status != "Pending" else None
        return BflResult(id=id, status=status, progress=progress if status == "Pending" else None, details=details)

    return router
