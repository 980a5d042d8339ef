"""Admin routes (need the admin key)."""

from __future__ import annotations

from fastapi import APIRouter

from app.auth import AdminKey, Store
from app.schemas import KeyCreateRequest, KeyCreateResponse

router = APIRouter(prefix="/v1/admin", tags=["admin"])


@router.post("/keys", status_code=201, response_model=KeyCreateResponse)
async def create_key(body: KeyCreateRequest, _admin: AdminKey, store: Store) -> KeyCreateResponse:
    """Create an API key. The key is in this response only; the server keeps its SHA-256."""
    key, record = await store.create_key(body.name, account=body.account)
    return KeyCreateResponse(key=key, id=record.id, name=record.name, account=record.account)
