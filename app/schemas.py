"""Request and response bodies of API v1."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_PROMPT_CHARS = 2000


class GenerateRequest(BaseModel):
    """Limits that depend on the variant (size, steps, guidance) are checked against the catalog."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="variant name, see GET /v1/models")
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    width: int | None = Field(default=None, description="pixels, a multiple of 16; default per variant")
    height: int | None = Field(default=None, description="pixels, a multiple of 16; default per variant")
    steps: int | None = Field(default=None, description="denoising steps; default per variant")
    guidance: float | None = Field(default=None, allow_inf_nan=False, description="guidance; default per variant")
    seed: int | None = Field(default=None, ge=0, lt=2**63 - 16, description="random if omitted")
    n: int = Field(default=1, ge=1, le=4, description="images to generate, each with seed, seed+1, ...")
    output_format: Literal["png", "jpeg", "webp"] = "png"
    reference_images: list[str] | None = Field(
        default=None, min_length=1, max_length=4,
        description="up to 4 reference images: base64 (or data: URLs), or `<job id>/<index>` / image URLs of "
                    "your earlier jobs; for variants with the `reference` task (FLUX.2 multi-reference, Kontext)")
    image: str | None = Field(default=None, description="inpainting: the image (base64 or an earlier image)")
    mask: str | None = Field(default=None, description="inpainting: the mask, white = repaint")
    rerank: int | None = Field(default=None, ge=2, le=8,
                               description="CogView: generate this many candidates per image and keep the one "
                                           "whose caption likelihood is best; billed as that many images")
    webhook_url: str | None = Field(default=None, max_length=2000,
                                    description="POSTed a signed event (Standard Webhooks, your account's "
                                                "webhook_secret) when the job ends")
    deadline_s: float | None = Field(default=None, gt=0, le=86400, allow_inf_nan=False,
                                     description="expire (never run, never charged) if not started within this many "
                                                 "seconds")


class Progress(BaseModel):
    step: int
    total: int


class Timings(BaseModel):
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    queue_seconds: float | None = None
    run_seconds: float | None = None


class ImageResult(BaseModel):
    url: str
    width: int
    height: int
    seed: int
    content_type: str


class JobResponse(BaseModel):
    id: str
    status: Literal["queued", "running", "succeeded", "failed", "canceled", "expired"]
    model: str
    task: str = "text-to-image"
    prompt: str
    width: int
    height: int
    steps: int
    guidance: float
    n: int
    seeds: list[int]
    output_format: str
    cost: int = Field(description="milli-credits")
    queue_position: int | None = None
    progress: Progress
    timings: Timings
    images: list[ImageResult] = []
    result: dict[str, Any] | None = Field(default=None, description="captions, or rank scores and order")
    expires_at: float | None = None
    error: str | None = None
    polling_url: str
    events_url: str
    cancel_url: str


class SubmitResponse(BaseModel):
    id: str
    status: str
    polling_url: str
    events_url: str
    cancel_url: str
    queue_position: int
    cost: int = Field(description="milli-credits")


class ModelInfo(BaseModel):
    id: str
    family: str
    description: str
    tasks: list[str]
    defaults: dict[str, float | int]
    limits: dict[str, float | int]
    price: dict[str, int]
    available: bool = Field(description="a live worker serves this variant")


class KeyCreateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(default="", max_length=200)
    account: str | None = Field(default=None, max_length=200, description="default: a new account")
    tier: str = Field(default="free", description="tier of the new account when none is given")


class KeyCreateResponse(BaseModel):
    key: str = Field(description="shown once; only its hash is stored")
    id: str
    name: str
    account: str


class AccountCreateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(default="", max_length=200)
    tier: str = "free"
    credits: int = Field(default=0, ge=0, le=10**15, description="initial balance, milli-credits")


class AccountInfo(BaseModel):
    id: str
    name: str
    tier: str
    balance: int = Field(description="milli-credits available")
    reserved: int = Field(description="milli-credits held by unfinished jobs")
    spent: int = Field(description="milli-credits charged so far")
    created_at: float
    webhook_secret: str = Field(default="", description="verifies the signatures of this account's webhooks")


class AccountView(AccountInfo):
    limits: dict[str, float | int | bool]
    remaining: dict[str, int | None]


class TierRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tier: str


class CreditsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: int = Field(ge=-(10**15), le=10**15, description="milli-credits to add (negative removes)")


class CreditsResponse(BaseModel):
    account: str
    balance: int


class KeyInfo(BaseModel):
    id: str
    name: str
    account: str
    admin: bool
    created_at: float
    revoked: bool


class UsageGroup(BaseModel):
    group: str
    jobs: int
    images: int
    megapixels: float
    credits: int = Field(description="milli-credits charged")


class UsageResponse(BaseModel):
    account: str
    start: float
    end: float
    group_by: str
    groups: list[UsageGroup]
    total: UsageGroup


class UpscaleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(description="a variant with the `upscale` task (CogView super-resolution)")
    image: str = Field(description="base64 (or a data: URL), or `<job id>/<index>` of an earlier image")
    prompt: str = Field(default="", max_length=MAX_PROMPT_CHARS, description="optional description of the image")
    seed: int | None = Field(default=None, ge=0, lt=2**63 - 16)
    output_format: Literal["png", "jpeg", "webp"] = "png"


class CaptionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(description="a variant with the `caption` task (CogView)")
    image: str = Field(description="base64 (or a data: URL), or `<job id>/<index>` of an earlier image")
    language: Literal["en", "zh"] = "en"
    seed: int | None = Field(default=None, ge=0, lt=2**63 - 16)


class RankRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(description="a variant with the `rank` task (CogView)")
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    images: list[str] = Field(min_length=1, max_length=8, description="base64 images or earlier images")
