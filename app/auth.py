"""Authentication and the caller's quota: `Authorization: Bearer <key>` or `x-key: <key>` on every
/v1 route. The caller's remaining quota rides on every /v1 response as IETF RateLimit headers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from store.accounts import Account, AccountStore, KeyRecord, QuotaState
from store.jobstore import JobStore
from store.tiers import Tier


@dataclass(frozen=True)
class Caller:
    key: KeyRecord
    account: Account
    tier: Tier
    quota: QuotaState  # the caller's usage in the current windows, as read at authentication

    @property
    def account_id(self) -> str:
        return self.account.id


def job_store(request: Request) -> JobStore:
    return request.app.state.store


def account_store(request: Request) -> AccountStore:
    return request.app.state.accounts


def _presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-key") or None


def quota_headers(tier: Tier, state: QuotaState, balance: int) -> dict[str, str]:
    """IETF draft-ietf-httpapi-ratelimit-headers: policies (q quota, w window seconds) and their
    current state (r remaining, t seconds until reset), plus the credit balance."""
    policies, current = [], []
    if tier.requests_per_minute:
        policies.append(f'"requests";q={tier.requests_per_minute};w=60')
        remaining = max(0, tier.requests_per_minute - state.requests_this_minute)
        current.append(f'"requests";r={remaining};t={state.seconds_left_in_minute}')
    if tier.images_per_day:
        policies.append(f'"images";q={tier.images_per_day};w=86400')
        remaining = max(0, tier.images_per_day - state.images_today)
        current.append(f'"images";r={remaining};t={state.seconds_left_in_day}')
    if tier.concurrent_jobs:
        policies.append(f'"concurrency";q={tier.concurrent_jobs}')
        current.append(f'"concurrency";r={max(0, tier.concurrent_jobs - state.active_jobs)}')
    headers = {"X-Credits-Balance": str(balance)}
    if policies:
        headers["RateLimit-Policy"] = ", ".join(policies)
        headers["RateLimit"] = ", ".join(current)
    return headers


async def current_caller(request: Request) -> Caller:
    key = _presented_key(request)
    if key is None:
        raise HTTPException(401, "missing API key: send 'Authorization: Bearer <key>' or 'x-key: <key>'",
                            headers={"WWW-Authenticate": "Bearer"})
    accounts = account_store(request)
    record = await accounts.lookup_key(key)
    account = await accounts.get_account(record.account) if record else None
    if record is None or account is None:
        raise HTTPException(401, "invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"})
    tiers = request.app.state.tiers
    tier = tiers.get(account.tier) or tiers["free"]
    state = await accounts.quota_state(account.id)
    # Picked up by QuotaHeadersMiddleware, so errors raised later carry the headers too.
    request.state.quota_headers = quota_headers(tier, state, account.balance)
    return Caller(record, account, tier, state)


async def admin_caller(caller: Annotated[Caller, Depends(current_caller)]) -> Caller:
    if not caller.key.admin:
        raise HTTPException(403, "this route needs the admin key")
    return caller


class QuotaHeadersMiddleware:
    """Adds the quota headers the auth dependency computed to whatever response goes out."""

    def __init__(self, app) -> None:  # noqa: ANN001  (an ASGI app)
        self.app = app

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message) -> None:  # noqa: ANN001
            if message["type"] == "http.response.start":
                extra = scope.get("state", {}).get("quota_headers")
                if extra:
                    message.setdefault("headers", [])
                    message["headers"] = list(message["headers"]) + [
                        (k.lower().encode(), v.encode()) for k, v in extra.items()
                    ]
            await send(message)

        await self.app(scope, receive, send_with_headers)


CurrentCaller = Annotated[Caller, Depends(current_caller)]
AdminCaller = Annotated[Caller, Depends(admin_caller)]
Store = Annotated[JobStore, Depends(job_store)]
Accounts = Annotated[AccountStore, Depends(account_store)]
