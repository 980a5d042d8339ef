"""The caller's own account and usage."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Query

from app.auth import Accounts, CurrentCaller
from app.routes.usage import summarize
from app.schemas import AccountView, UsageResponse

router = APIRouter(prefix="/v1", tags=["account"])


@router.get("/account", response_model=AccountView)
async def get_account(caller: CurrentCaller, accounts: Accounts) -> AccountView:
    """Tier, credit balance, limits and what remains of them now."""
    account, tier = await accounts.get_account(caller.account_id) or caller.account, caller.tier
    state = await accounts.quota_state(account.id)

    def left(limit: int, used: int) -> int | None:
        return max(0, limit - used) if limit else None  # None = unlimited

    return AccountView(
        **account.__dict__,
        limits={"requests_per_minute": tier.requests_per_minute, "images_per_day": tier.images_per_day,
                "concurrent_jobs": tier.concurrent_jobs, "max_megapixels": tier.max_megapixels,
                "priority": tier.priority, "pays_credits": tier.pays_credits},
        remaining={"requests_this_minute": left(tier.requests_per_minute, state.requests_this_minute),
                   "images_today": left(tier.images_per_day, state.images_today),
                   "concurrent_jobs": left(tier.concurrent_jobs, state.active_jobs)},
    )


@router.get("/usage", response_model=UsageResponse)
async def get_usage(
    caller: CurrentCaller, accounts: Accounts,
    start: datetime | None = Query(None, alias="from", description="ISO 8601 or unix seconds; default 30 days ago"),
    end: datetime | None = Query(None, alias="to", description="ISO 8601 or unix seconds; default now"),
    group_by: Literal["day", "variant"] = "day",
) -> UsageResponse:
    """Succeeded jobs, images, megapixels and credits charged, by UTC day or by variant."""
    return await summarize(accounts, caller.account_id, start, end, group_by)
