"""Python client for the fluxgate API (httpx): `Client` (blocking) and `AsyncClient` (asyncio).

    from client import Client
    with Client("http://127.0.0.1:8000", key) as fg:   # or FLUXGATE_URL / FLUXGATE_KEY
        job, images = fg.generate("schnell", "a red circle", seed=1, on_event=print)
"""

from client._common import DEFAULT_URL, Event, FluxgateError, JobFailed
from client.async_ import AsyncClient
from client.sync import Client

__all__ = ["DEFAULT_URL", "AsyncClient", "Client", "Event", "FluxgateError", "JobFailed"]
