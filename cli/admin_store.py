"""Opening the account store for the admin CLI commands (keys, accounts)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def with_accounts(redis_url: str | None, action: Callable[..., Awaitable[T]]) -> T:
    """Run `action(accounts)` against the Redis at redis_url (default FLUXGATE_REDIS_URL)."""
    from store.accounts import AccountStore
    from store.jobstore import JobStore
    from store.settings import CommonSettings

    settings = CommonSettings(**({"redis_url": redis_url} if redis_url else {}))

    async def run() -> T:
        store = JobStore(settings.redis_url, settings.retention_s)
        try:
            return await action(AccountStore(store.redis))
        finally:
            await store.close()

    return asyncio.run(run())
