"""The job record as stored in its Redis hash, and the job's state machine.

    queued ──▶ running ──▶ succeeded | failed | canceled
       │                      ▲
       └──────────────────────┴── canceled | expired (never ran, never charged)

Transitions happen only inside the Lua scripts in store/lua/, so two processes can never disagree.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

from pydantic import BaseModel


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    EXPIRED = "expired"

    @property
    def terminal(self) -> bool:
        return self not in (JobStatus.QUEUED, JobStatus.RUNNING)


TERMINAL_EVENTS = frozenset(s.value for s in JobStatus if s.terminal)

# Output formats a job may ask for, with the media type its images are served as.
MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}

# Fields stored as JSON text in the hash (everything else is a plain string or number).
_JSON_FIELDS = ("seeds", "params", "result")


class Job(BaseModel):
    id: str
    account: str
    key_id: str
    variant: str
    task: str = "text-to-image"
    status: JobStatus
    prompt: str
    width: int
    height: int
    steps: int
    guidance: float
    n: int
    seeds: list[int]
    output_format: str
    params: dict[str, Any] = {}  # task options: language, rerank, has_mask
    inputs: int = 0  # input images stored with the job (keys.job_input)
    result: dict[str, Any] | None = None  # non-image results: captions, scores and order
    cost: int  # list price, milli-credits
    reserved: int = 0  # milli-credits held from the balance while the job is open
    charged: int | None = None  # milli-credits charged when it ended (0 unless succeeded)
    priority: int = 0
    day: str = ""  # UTC day it was admitted (YYYYMMDD): its daily-quota bucket
    webhook_url: str | None = None  # POSTed a signed event when the job ends
    deadline: float | None = None  # unix time; not started by then -> expired, never run or charged
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    queue_position: int | None = None
    progress_step: int = 0
    progress_total: int = 0
    images: int = 0
    expires_at: float | None = None
    run_seconds: float | None = None
    error: str | None = None
    worker: str | None = None
    attempts: int = 0
    cancel_requested: bool = False

    @property
    def batch_key(self) -> tuple[str, str, int, int, int]:
        """Jobs with equal keys can share forward passes (steps and guidance are per image)."""
        return (self.variant, self.task, self.width, self.height, self.inputs)

    def to_fields(self) -> list[str]:
        """Flat field, value list for HSET (None values are left out)."""
        out: list[str] = []
        for name, value in self.model_dump(mode="json").items():
            if value is None:
                continue
            if name in _JSON_FIELDS:
                value = json.dumps(value, separators=(",", ":"))
            elif isinstance(value, bool):
                value = int(value)
            out += [name, str(value)]
        return out

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> Job:
        values: dict[str, Any] = dict(data)
        for name in _JSON_FIELDS:
            if name in values:
                values[name] = json.loads(values[name])
        if "cancel_requested" in values:
            values["cancel_requested"] = values["cancel_requested"] == "1"
        return cls.model_validate(values)


def event_json(**data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))
