"""Authentication: `Authorization: Bearer <key>` or `x-key: <key>` on every /v1 route."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from store.jobstore import JobStore, KeyRecord


def store(request: Request) -> JobStore:
    return request.app.state.store


def _presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-key") or None


async def current_key(request: Request) -> KeyRecord:
    key = _presented_key(request)
    if key is None:
        raise HTTPException(401, "missing API key: send 'Authorization: Bearer <key>' or 'x-key: <key>'",
                            headers={"WWW-Authenticate": "Bearer"})
    record = await store(request).lookup_key(key)
    if record is None:
        raise HTTPException(401, "invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"})
    return record


async def admin_key(record: Annotated[KeyRecord, Depends(current_key)]) -> KeyRecord:
    if not record.admin:
        raise HTTPException(403, "this route needs the admin key")
    return record


CurrentKey = Annotated[KeyRecord, Depends(current_key)]
AdminKey = Annotated[KeyRecord, Depends(admin_key)]
Store = Annotated[JobStore, Depends(store)]
