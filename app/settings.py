"""Gateway settings (FLUXGATE_* environment variables)."""

from __future__ import annotations

from store.settings import CommonSettings


class GatewaySettings(CommonSettings):
    # Base of the absolute URLs in responses (polling_url, image URLs). Empty: taken from the request.
    public_url: str = ""
    # Longest `Prefer: wait=N` honoured, seconds.
    max_wait_s: int = 60
    # Workers are "alive" while their heartbeat key exists; /readyz needs at least one.
    require_worker: bool = True
