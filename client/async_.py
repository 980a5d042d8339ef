"""The asyncio client (httpx.AsyncClient); the same methods as client.sync.Client, awaited."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx

from client._common import TERMINAL, Event, JobFailed, SSEParser, check, generate_body, settings, submit_headers

OnEvent = Callable[[Event], Awaitable[None] | None]


class AsyncClient:
    """`AsyncClient(url, key)`; both default to FLUXGATE_URL / FLUXGATE_KEY. Use with `async with`."""

    def __init__(self, url: str | None = None, key: str | None = None, timeout: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url, key = settings(url, key)
        self.http = httpx.AsyncClient(base_url=self.url, headers={"x-key": key, "user-agent": "fluxgate-client"},
                                      timeout=timeout, transport=transport)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.http.aclose()

    async def _get(self, path: str, **params: Any) -> Any:
        response = await self.http.get(path, params={k: v for k, v in params.items() if v is not None})
        return check(response).json()

    # -- jobs -----------------------------------------------------------------------------------------
    async def submit(self, model: str, prompt: str, *, wait: int | None = None,
                     idempotency_key: str | None = None, **params: Any) -> dict[str, Any]:
        response = await self.http.post("/v1/generate", json=generate_body(model, prompt, **params),
                                        headers=submit_headers(wait, idempotency_key),
                                        timeout=(wait or 0) + self.http.timeout.read)
        return check(response).json()

    async def job(self, job_id: str) -> dict[str, Any]:
        return await self._get(f"/v1/jobs/{job_id}")

    async def jobs(self, limit: int = 20) -> list[dict[str, Any]]:
        return await self._get("/v1/jobs", limit=limit)

    async def cancel(self, job_id: str) -> dict[str, Any]:
        return check(await self.http.post(f"/v1/jobs/{job_id}/cancel")).json()

    async def events(self, job_id: str, last_event_id: str | None = None) -> AsyncIterator[Event]:
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        # The server sends a keep-alive comment every 15 s, so a 60 s read timeout means a dead link.
        async with self.http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers,
                                    timeout=httpx.Timeout(self.http.timeout.connect or 10, read=60)) as response:
            if not response.is_success:
                await response.aread()
                check(response)
            parser = SSEParser()
            async for line in response.aiter_lines():
                event = parser.line(line)
                if event is None:
                    continue
                yield event
                if event.terminal:
                    return

    async def wait(self, job_id: str, on_event: OnEvent | None = None) -> dict[str, Any]:
        last: str | None = None
        for _ in range(20):
            try:
                async for event in self.events(job_id, last):
                    last = event.id
                    if on_event:
                        result = on_event(event)
                        if asyncio.iscoroutine(result):
                            await result
            except httpx.TransportError:
                pass  # a dropped connection: resume after the last event seen
            job = await self.job(job_id)
            if job["status"] in TERMINAL:
                return job
        return await self.job(job_id)

    async def image(self, url_or_job: str | dict[str, Any], index: int = 0) -> bytes:
        url = url_or_job if isinstance(url_or_job, str) else url_or_job["images"][index]["url"]
        return check(await self.http.get(url)).content

    async def generate(self, model: str, prompt: str, on_event: OnEvent | None = None,
                       **params: Any) -> tuple[dict[str, Any], list[bytes]]:
        submitted = await self.submit(model, prompt, **params)
        job = await self.wait(submitted["id"], on_event)
        if job["status"] != "succeeded":
            raise JobFailed(job)
        images = await asyncio.gather(*(self.image(image["url"]) for image in job["images"]))
        return job, list(images)

    # -- account ----------------------------------------------------------------------------------------
    async def models(self) -> list[dict[str, Any]]:
        return await self._get("/v1/models")

    async def account(self) -> dict[str, Any]:
        return await self._get("/v1/account")

    async def usage(self, start: str | None = None, end: str | None = None,
                    group_by: str = "day") -> dict[str, Any]:
        return await self._get("/v1/usage", **{"from": start, "to": end, "group_by": group_by})
