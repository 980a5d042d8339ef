"""Webhook URLs at submission: refused with a 422 naming the field unless store.webhook_targets
allows them (the worker checks again before every delivery)."""

from __future__ import annotations

import asyncio

from fastapi import HTTPException

from store.webhook_targets import unsafe_target


async def check_webhook_url(url: str, allow_private: bool) -> str:
    problem = await asyncio.to_thread(unsafe_target, url, allow_private)  # DNS must not block the loop
    if problem:
        raise HTTPException(422, [{"loc": ["body", "webhook_url"], "msg": problem, "type": "value_error"}])
    return url
