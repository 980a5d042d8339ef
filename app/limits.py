"""Input limits: the request body size limit, as pure ASGI middleware (no BaseHTTPMiddleware: it would buffer the body).

A declared Content-Length over the limit is refused with 413 before a byte of the body is read; a
body without one (chunked) is counted as it streams and refused as soon as it passes the limit. Either
way the gateway never holds more than the limit of one request in memory, whatever a client sends.
Also a 422 handler that survives NaN / Infinity in the input it echoes.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

DEFAULT_MAX_BODY_BYTES = 16 * 2**20  # room for base64 reference images; far above any JSON job request


class _TooLarge(Exception):
    pass


class BodySizeLimitMiddleware:
    def __init__(self, app, max_bytes: int | None = None) -> None:  # noqa: ANN001  (an ASGI app)
        self.app = app
        # An environment override, like the FLUXGATE_* settings, without a settings class of its own.
        self.max_bytes = max_bytes or int(os.environ.get("FLUXGATE_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES))

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                return await self._refuse(send, 400, "Content-Length is not a number")
            if length > self.max_bytes:
                return await self._refuse(send, 413, self._message())
        seen = 0
        started = False

        async def counting_receive():  # noqa: ANN202
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracking_send(message) -> None:  # noqa: ANN001
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:  # the app was still reading the body: nothing has gone out yet
                await self._refuse(send, 413, self._message())

    def _message(self) -> str:
        return f"request body too large: the limit is {self.max_bytes} bytes"

    @staticmethod
    async def _refuse(send, status: int, detail: str) -> None:  # noqa: ANN001
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def _finite(value: Any) -> Any:
    """The value with every NaN / Infinity replaced by its string, so it can be written as JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


async def invalid_request(_request: Request, err: RequestValidationError) -> JSONResponse:
    """FastAPI's 422, safe for any input: its own handler echoes the offending value, and a NaN or
    Infinity there (`"guidance": NaN` is accepted by Python's JSON parser) made the 422 itself fail
    to serialize, a 500."""
    return JSONResponse({"detail": _finite(jsonable_encoder(err.errors()))}, status_code=422)
