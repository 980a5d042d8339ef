"""Admin routes (need the admin key): accounts, keys, tiers, credits, usage and the ledger export."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import StreamingResponse

from app.auth import Accounts, AdminCaller
from app.routes.usage import summarize
from app.schemas import (
    AccountCreateRequest,
    AccountInfo,
    CreditsRequest,
    CreditsResponse,
    KeyCreateRequest,
    KeyCreateResponse,
    KeyInfo,
    TierRequest,
    UsageResponse,
)
from store.accounts import Account, AccountStore

router = APIRouter(prefix="/v1/admin", tags=["admin"])

LEDGER_COLUMNS = ["cursor", "job", "account", "key", "variant", "images", "width", "height", "megapixels",
                  "credits", "list_cost", "created_at", "finished_at"]


def _known_tier(request: Request, tier: str) -> str:
    if tier not in request.app.state.tiers:
        raise HTTPException(422, [{"loc": ["body", "tier"], "type": "value_error",
                                   "msg": f"unknown tier {tier!r}; tiers: {', '.join(request.app.state.tiers)}"}])
    return tier


async def _account(accounts: AccountStore, account_id: str) -> Account:
    account = await accounts.get_account(account_id)
    if account is None:
        raise HTTPException(404, f"no account {account_id}")
    return account


@router.post("/accounts", status_code=201, response_model=AccountInfo)
async def create_account(body: AccountCreateRequest, request: Request, _admin: AdminCaller,
                         accounts: Accounts) -> AccountInfo:
    account = await accounts.create_account(body.name, _known_tier(request, body.tier), body.credits)
    return AccountInfo(**account.__dict__)


@router.get("/accounts", response_model=list[AccountInfo])
async def list_accounts(_admin: AdminCaller, accounts: Accounts) -> list[AccountInfo]:
    return [AccountInfo(**a.__dict__) for a in await accounts.list_accounts()]


@router.get("/accounts/{account_id}", response_model=AccountInfo)
async def get_account(account_id: str, _admin: AdminCaller, accounts: Accounts) -> AccountInfo:
    return AccountInfo(**(await _account(accounts, account_id)).__dict__)


@router.put("/accounts/{account_id}/tier", response_model=AccountInfo)
async def set_tier(account_id: str, body: TierRequest, request: Request, _admin: AdminCaller,
                   accounts: Accounts) -> AccountInfo:
    await _account(accounts, account_id)
    await accounts.set_tier(account_id, _known_tier(request, body.tier))
    return AccountInfo(**(await _account(accounts, account_id)).__dict__)


@router.post("/accounts/{account_id}/credits", response_model=CreditsResponse)
async def add_credits(account_id: str, body: CreditsRequest, _admin: AdminCaller,
                      accounts: Accounts) -> CreditsResponse:
    await _account(accounts, account_id)
    return CreditsResponse(account=account_id, balance=await accounts.add_credits(account_id, body.amount))


@router.post("/keys", status_code=201, response_model=KeyCreateResponse)
async def create_key(body: KeyCreateRequest, request: Request, _admin: AdminCaller,
                     accounts: Accounts) -> KeyCreateResponse:
    """Create an API key (for an existing account, or a new one of `tier`). The key is in this
    response only; the server keeps its SHA-256."""
    if body.account:
        account_id = (await _account(accounts, body.account)).id
    else:
        account_id = (await accounts.create_account(body.name, _known_tier(request, body.tier))).id
    key, record = await accounts.create_key(account_id, body.name)
    return KeyCreateResponse(key=key, id=record.id, name=record.name, account=record.account)


@router.get("/accounts/{account_id}/keys", response_model=list[KeyInfo])
async def list_keys(account_id: str, _admin: AdminCaller, accounts: Accounts) -> list[KeyInfo]:
    await _account(accounts, account_id)
    return [KeyInfo(id=k["id"], name=k.get("name", ""), account=k["account"], admin=k.get("admin") == "1",
                    created_at=float(k.get("created_at", 0)), revoked=k.get("revoked") == "1")
            for k in await accounts.list_keys(account_id)]


@router.post("/keys/{key_id}/revoke", status_code=204)
async def revoke_key(key_id: str, _admin: AdminCaller, accounts: Accounts) -> None:
    """The key is refused from the next request on."""
    if not await accounts.revoke_key(key_id):
        raise HTTPException(404, f"no key {key_id}")


@router.get("/accounts/{account_id}/usage", response_model=UsageResponse)
async def account_usage(
    account_id: str, _admin: AdminCaller, accounts: Accounts,
    start: datetime | None = Query(None, alias="from"), end: datetime | None = Query(None, alias="to"),
    group_by: Literal["day", "variant"] = "day",
) -> UsageResponse:
    await _account(accounts, account_id)
    return await summarize(accounts, account_id, start, end, group_by)


@router.get("/usage/export", response_class=StreamingResponse,
            responses={200: {"content": {"application/x-ndjson": {}, "text/csv": {}}}})
async def export_usage(
    _admin: AdminCaller, accounts: Accounts,
    cursor: str = Query("0", pattern=r"^\d+(-\d+)?$", description="export events after this cursor; 0 = all"),
    limit: int = Query(10_000, ge=1, le=100_000),
    format: Literal["jsonl", "csv"] = "jsonl",
) -> StreamingResponse:
    """The usage ledger from a cursor, oldest first, one event per succeeded job. Each event carries
    its `cursor`; pass the last one back to continue (also in the `Next-Cursor` header)."""
    if any(int(part) >= 2**64 for part in cursor.split("-")):  # Redis stream ids are two u64s
        raise HTTPException(422, [{"loc": ["query", "cursor"], "type": "value_error",
                                   "msg": "cursor is not a ledger id (each part must be below 2**64)"}])
    events = await accounts.export(cursor, limit)
    next_cursor = events[-1].id if events else cursor

    async def lines() -> AsyncIterator[str]:
        if format == "csv":
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, LEDGER_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            for event in events:
                writer.writerow({"cursor": event.id, **event.fields})
            yield buffer.getvalue()
            return
        for event in events:
            yield json.dumps({"cursor": event.id, **event.fields}) + "\n"

    media = "text/csv" if format == "csv" else "application/x-ndjson"
    return StreamingResponse(lines(), media_type=media, headers={"Next-Cursor": next_cursor})
