"""What the sync and async clients share: configuration, errors, request bodies and the SSE parser."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
TERMINAL = frozenset({"succeeded", "failed", "canceled", "expired"})


class FluxgateError(Exception):
    """A non-2xx answer: `status` is the HTTP status, `detail` the server's explanation."""

    def __init__(self, status: int, detail: Any, response: httpx.Response | None = None) -> None:
        self.status, self.detail, self.response = status, detail, response
        super().__init__(f"HTTP {status}: {format_detail(detail)}")

    @property
    def retry_after(self) -> float | None:
        value = self.response.headers.get("retry-after") if self.response is not None else None
        return float(value) if value and value.replace(".", "", 1).isdigit() else None


class JobFailed(Exception):
    """The job ended failed, canceled or expired: `job` is its final record (nothing was charged)."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.job = job
        super().__init__(f"job {job['id']} {job['status']}: {job.get('error') or 'no images'}")


@dataclass(frozen=True)
class Event:
    """One Server-Sent Event of /v1/jobs/{id}/events: queued, running, progress, or a terminal status."""

    id: str
    event: str
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.event in TERMINAL


def format_detail(detail: Any) -> str:
    """FastAPI's list of field errors as one line; anything else as text."""
    if isinstance(detail, list):
        return "; ".join(f"{'.'.join(map(str, d.get('loc', [])[1:]))}: {d.get('msg')}" for d in detail
                         if isinstance(d, dict)) or str(detail)
    return str(detail)


def settings(url: str | None, key: str | None) -> tuple[str, str]:
    """Arguments first, then FLUXGATE_URL / FLUXGATE_KEY."""
    url = (url or os.environ.get("FLUXGATE_URL") or DEFAULT_URL).rstrip("/")
    key = key or os.environ.get("FLUXGATE_KEY") or ""
    if not key:
        raise ValueError("no API key: pass key= (or --key) or set FLUXGATE_KEY")
    return url, key


def check(response: httpx.Response) -> httpx.Response:
    if response.is_success:
        return response
    try:
        body = response.json()
        detail = body.get("detail", body) if isinstance(body, dict) else body
    except ValueError:
        detail = response.text or response.reason_phrase
    raise FluxgateError(response.status_code, detail, response)


def generate_body(model: str, prompt: str, **params: Any) -> dict[str, Any]:
    """The /v1/generate body; parameters left as None take the variant's defaults on the server."""
    return {"model": model, "prompt": prompt, **{k: v for k, v in params.items() if v is not None}}


def submit_headers(wait: int | None, idempotency_key: str | None) -> dict[str, str]:
    headers = {}
    if wait:
        headers["Prefer"] = f"wait={wait}"
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    return headers


class SSEParser:
    """Incremental text/event-stream parser: feed it lines, it yields complete events."""

    def __init__(self) -> None:
        self._fields: dict[str, str] = {}

    def feed(self, lines: Iterable[str]) -> Iterable[Event]:
        for line in lines:
            event = self.line(line)
            if event is not None:
                yield event

    def line(self, line: str) -> Event | None:
        line = line.rstrip("\r")
        if line.startswith(":"):  # keep-alive comment
            return None
        if line:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            self._fields[name] = self._fields.get(name, "") + ("\n" if name == "data" and name in self._fields
                                                               else "") + value
            return None
        fields, self._fields = self._fields, {}
        if "event" not in fields:
            return None
        data = json.loads(fields["data"]) if fields.get("data") else {}
        return Event(fields.get("id", ""), fields["event"], data)
