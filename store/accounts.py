"""Accounts, API keys, quota state and the usage ledger (asyncio; the gateway's and CLI's side).

An account holds keys, a tier and a credit balance in integer milli-credits:
`balance` is what can still be spent, `reserved` is held by admitted jobs that have not finished,
`spent` is what succeeded jobs were charged.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import redis.asyncio as aioredis

from store import apikeys, keys


@dataclass(frozen=True)
class KeyRecord:
    id: str
    name: str
    account: str
    admin: bool


@dataclass(frozen=True)
class Account:
    id: str
    name: str
    tier: str
    balance: int
    reserved: int
    spent: int
    created_at: float
    webhook_secret: str = ""


@dataclass(frozen=True)
class QuotaState:
    """What the caller has used in the current windows (for RateLimit headers and /v1/account)."""

    requests_this_minute: int
    seconds_left_in_minute: int
    images_today: int
    seconds_left_in_day: int
    active_jobs: int


@dataclass(frozen=True)
class UsageEvent:
    id: str  # ledger stream id: the export cursor
    fields: dict[str, str]


def now_windows(now: float | None = None) -> tuple[int, int, str, int]:
    """(minute index, seconds left in it, UTC day YYYYMMDD, seconds left in the day)."""
    now = time.time() if now is None else now
    minute = int(now // 60)
    day_start = int(now // 86400) * 86400
    return minute, 60 - int(now % 60), time.strftime("%Y%m%d", time.gmtime(now)), day_start + 86400 - int(now)


class AccountStore:
    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client

    # -- accounts -----------------------------------------------------------------------------
    async def create_account(self, name: str, tier: str, credits: int = 0) -> Account:
        account_id = "acct_" + secrets.token_hex(8)
        # Standard Webhooks secret: the account verifies the signatures of its job events with it.
        fields = {"id": account_id, "name": name, "tier": tier, "balance": credits, "reserved": 0, "spent": 0,
                  "created_at": f"{time.time():.3f}",
                  "webhook_secret": "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()}
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(keys.account(account_id), mapping=fields)
        pipe.sadd(keys.ACCOUNTS, account_id)
        await pipe.execute()
        return _account(fields)

    async def get_account(self, account_id: str) -> Account | None:
        data = await self.redis.hgetall(keys.account(account_id))
        return _account(data) if data else None

    async def list_accounts(self) -> list[Account]:
        ids = sorted(await self.redis.smembers(keys.ACCOUNTS))
        pipe = self.redis.pipeline(transaction=False)
        for account_id in ids:
            pipe.hgetall(keys.account(account_id))
        return [_account(d) for d in await pipe.execute() if d]

    async def set_tier(self, account_id: str, tier: str) -> None:
        await self.redis.hset(keys.account(account_id), "tier", tier)

    async def add_credits(self, account_id: str, amount: int) -> int:
        """Add (or, negative, remove) milli-credits; returns the new balance."""
        return int(await self.redis.hincrby(keys.account(account_id), "balance", amount))

    # -- keys ---------------------------------------------------------------------------------
    async def create_key(self, account_id: str, name: str = "", admin: bool = False) -> tuple[str, KeyRecord]:
        key = apikeys.generate()
        key_hash = apikeys.hash_key(key)
        record = KeyRecord(apikeys.key_id(key_hash), name, account_id, admin)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(keys.api_key(key_hash), mapping=key_fields(record))
        pipe.set(keys.key_by_id(record.id), key_hash)
        pipe.sadd(keys.account_keys(account_id), record.id)
        await pipe.execute()
        return key, record

    async def lookup_key(self, key: str) -> KeyRecord | None:
        # A mistyped key fails its checksum here, before Redis is touched.
        if not apikeys.well_formed(key):
            return None
        data = await self.redis.hgetall(keys.api_key(apikeys.hash_key(key)))
        if not data or data.get("revoked") == "1":
            return None
        return KeyRecord(data["id"], data.get("name", ""), data["account"], data.get("admin") == "1")

    async def list_keys(self, account_id: str) -> list[dict[str, str]]:
        out = []
        for key_id in sorted(await self.redis.smembers(keys.account_keys(account_id))):
            key_hash = await self.redis.get(keys.key_by_id(key_id))
            if key_hash:
                out.append(await self.redis.hgetall(keys.api_key(key_hash)))
        return out

    async def revoke_key(self, key_id: str) -> bool:
        """Refused from the next request on: lookups read the record every time (no cache)."""
        key_hash = await self.redis.get(keys.key_by_id(key_id))
        if not key_hash:
            return False
        await self.redis.hset(keys.api_key(key_hash), mapping={"revoked": "1", "revoked_at": f"{time.time():.3f}"})
        return True

    # -- quota and usage ----------------------------------------------------------------------
    async def quota_state(self, account_id: str) -> QuotaState:
        minute, minute_left, day, day_left = now_windows()
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(keys.rate_window(account_id, minute))
        pipe.get(keys.daily_images(account_id, day))
        pipe.scard(keys.active_jobs(account_id))
        rate, daily, active = await pipe.execute()
        return QuotaState(int(rate or 0), minute_left, int(daily or 0), day_left, int(active))

    async def usage(self, account_id: str | None, start_ms: int, end_ms: int) -> AsyncIterator[UsageEvent]:
        """Usage events between two times (ms), oldest first; account None = every account."""
        stream = keys.account_ledger(account_id) if account_id else keys.LEDGER
        cursor = f"{start_ms}-0"
        while True:
            entries = await self.redis.xrange(stream, min=cursor, max=f"{end_ms}-18446744073709551615", count=500)
            for entry_id, fields in entries:
                yield UsageEvent(entry_id, fields)
            if len(entries) < 500:
                return
            cursor = "(" + entries[-1][0]

    async def export(self, after: str, limit: int) -> list[UsageEvent]:
        """The global ledger after the cursor (a ledger id; '0' = from the start)."""
        entries = await self.redis.xrange(keys.LEDGER, min="(" + after if after != "0" else "-", count=limit)
        return [UsageEvent(entry_id, fields) for entry_id, fields in entries]


def key_fields(record: KeyRecord) -> dict[str, str]:
    return {"id": record.id, "name": record.name, "account": record.account, "admin": "1" if record.admin else "0",
            "created_at": f"{time.time():.3f}"}


def _account(data: dict) -> Account:
    return Account(id=str(data["id"]), name=str(data.get("name", "")), tier=str(data.get("tier", "free")),
                   balance=int(data.get("balance", 0)), reserved=int(data.get("reserved", 0)),
                   spent=int(data.get("spent", 0)), created_at=float(data.get("created_at", 0)),
                   webhook_secret=str(data.get("webhook_secret", "")))
