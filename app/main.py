"""The gateway: a stateless FastAPI app; every piece of state lives in Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.exceptions
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from app.auth import QuotaHeadersMiddleware
from app.limits import BodySizeLimitMiddleware, invalid_request
from app.logging import configure_logging
from app.metrics import Metrics, ObservabilityMiddleware
from app.metrics import router as metrics_router
from app.routes import account, admin, bfl, generate, health, jobs, models, openai, playground, tasks
from app.settings import GatewaySettings
from store.accounts import AccountStore
from store.catalog import load_catalog
from store.jobstore import JobStore
from store.tiers import load_tiers


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    catalog = load_catalog(settings.catalog)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.store = JobStore(settings.redis_url, settings.retention_s)
        app.state.accounts = AccountStore(app.state.store.redis)
        yield
        await app.state.store.close()

    app = FastAPI(
        title="fluxgate",
        version="0.1.0",
        description="Self-hosted image generation: FLUX and CogView behind a Redis job queue.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.catalog = catalog
    app.state.tiers = load_tiers(settings.tiers or None)
    app.add_middleware(QuotaHeadersMiddleware)
    app.add_middleware(BodySizeLimitMiddleware)  # 413 before a body over the limit is read
    app.add_exception_handler(RequestValidationError, invalid_request)  # type: ignore[arg-type]
    configure_logging()
    app.state.metrics = Metrics()
    # Outermost, so it times and counts everything, errors included.
    app.add_middleware(ObservabilityMiddleware, metrics=app.state.metrics)

    @app.exception_handler(redis.exceptions.ConnectionError)
    @app.exception_handler(redis.exceptions.TimeoutError)
    async def redis_unavailable(_request: Request, _err: Exception) -> JSONResponse:
        # Nothing was accepted: the submit script either ran whole or not at all.
        return JSONResponse(
            {"detail": "the job store (Redis) is unavailable; retry shortly"},
            status_code=503, headers={"Retry-After": "2"},
        )

    for module in (generate, tasks, jobs, models, account, admin, health, openai, playground):
        app.include_router(module.router)
    app.include_router(metrics_router)
    app.include_router(bfl.delivery_router)
    # Last: its /v1/<endpoint> routes are literal names, but registering them after the others means an
    # existing route always wins should a name ever collide.
    app.include_router(bfl.bfl_router(catalog))
    return app
