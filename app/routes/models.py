"""GET /v1/models: the catalog's variants with defaults, limits, price and live availability."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.auth import CurrentCaller, Store
from app.schemas import ModelInfo

router = APIRouter(prefix="/v1", tags=["models"])


@router.get("/models", response_model=list[ModelInfo])
async def list_models(request: Request, _caller: CurrentCaller, store: Store) -> list[ModelInfo]:
    served = {v for variants in (await store.live_workers()).values() for v in variants}
    return [
        ModelInfo(
            id=v.name, family=v.family, description=v.description, tasks=list(v.tasks),
            defaults={"steps": v.default_steps, "guidance": v.default_guidance,
                      "width": v.default_width, "height": v.default_height},
            limits={"min_steps": v.min_steps, "max_steps": v.max_steps, "min_guidance": v.min_guidance,
                    "max_guidance": v.max_guidance, "min_size": v.min_size, "max_size": v.max_size,
                    "max_pixels": v.max_pixels, "size_multiple": v.size_multiple, "max_n": 4},
            price={"first_megapixel_millicredits": v.price_first_mp,
                   "extra_megapixel_millicredits": v.price_extra_mp},
            available=v.name in served,
        )
        for v in request.app.state.catalog.variants.values()
    ]
