"""Liveness and readiness probes (no auth: load balancers and Kubernetes call them)."""

from __future__ import annotations

import redis.exceptions
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.auth import Store

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request, store: Store) -> JSONResponse:
    try:
        await store.ping()
        workers = await store.live_workers()
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        return JSONResponse({"status": "unavailable", "redis": False, "workers": 0}, status_code=503,
                            headers={"Retry-After": "2"})
    ready = bool(workers) or not request.app.state.settings.require_worker
    return JSONResponse({"status": "ready" if ready else "no live worker", "redis": True, "workers": len(workers)},
                        status_code=200 if ready else 503)
