"""The playground at `/`: one static page (app/static/playground.html) where an evaluator pastes a key,
picks a model and generates. Everything it does goes through the public /v1 API with that key, from
the browser, so it shows exactly what a client sees (quota headers included)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["playground"])

PAGE = Path(__file__).resolve().parents[1] / "static" / "playground.html"
# The page's script is inline; images come back as blob: URLs made from authenticated fetches.
_CSP = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self' 'unsafe-inline'; "
        "script-src 'self' 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'")


@lru_cache(maxsize=1)
def _page() -> str:
    return PAGE.read_text(encoding="utf-8")


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def playground() -> HTMLResponse:
    return HTMLResponse(_page(), headers={"Content-Security-Policy": _CSP, "Cache-Control": "no-cache",
                                          "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})
