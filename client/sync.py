"""The blocking client (httpx.Client)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx

from client._common import TERMINAL, Event, JobFailed, SSEParser, check, generate_body, settings, submit_headers


class Client:
    """`Client(url, key)`; both default to FLUXGATE_URL / FLUXGATE_KEY. Use as a context manager."""

    def __init__(self, url: str | None = None, key: str | None = None, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.url, key = settings(url, key)
        self.http = httpx.Client(base_url=self.url, headers={"x-key": key, "user-agent": "fluxgate-client"},
                                 timeout=timeout, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _get(self, path: str, **params: Any) -> Any:
        return check(self.http.get(path, params={k: v for k, v in params.items() if v is not None})).json()

    # -- jobs -----------------------------------------------------------------------------------------
    def submit(self, model: str, prompt: str, *, wait: int | None = None, idempotency_key: str | None = None,
               **params: Any) -> dict[str, Any]:
        """POST /v1/generate. Params: width, height, steps, guidance, seed, n, output_format. With `wait`,
        the finished job when it finishes within that many seconds, else the 202 submit answer."""
        response = self.http.post("/v1/generate", json=generate_body(model, prompt, **params),
                                  headers=submit_headers(wait, idempotency_key),
                                  timeout=(wait or 0) + self.http.timeout.read)
        return check(response).json()

    def job(self, job_id: str) -> dict[str, Any]:
        return self._get(f"/v1/jobs/{job_id}")

    def jobs(self, limit: int = 20) -> list[dict[str, Any]]:
        """Queued and running jobs, then the most recent succeeded ones."""
        return self._get("/v1/jobs", limit=limit)

    def cancel(self, job_id: str) -> dict[str, Any]:
        return check(self.http.post(f"/v1/jobs/{job_id}/cancel")).json()

    def events(self, job_id: str, last_event_id: str | None = None) -> Iterator[Event]:
        """The job's Server-Sent Events until its terminal event."""
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        # No read timeout: the server sends a keep-alive comment every 15 s while a job waits.
        with self.http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers,
                              timeout=httpx.Timeout(self.http.timeout.connect or 10, read=60)) as response:
            if not response.is_success:
                response.read()
                check(response)
            for event in SSEParser().feed(response.iter_lines()):
                yield event
                if event.terminal:
                    return

    def wait(self, job_id: str, on_event: Callable[[Event], None] | None = None) -> dict[str, Any]:
        """Follow the event stream to the end (resuming if the connection drops), then the final job."""
        last: str | None = None
        for _ in range(20):
            try:
                for event in self.events(job_id, last):
                    last = event.id
                    if on_event:
                        on_event(event)
            except httpx.TransportError:
                pass  # a dropped connection: resume after the last event seen
            job = self.job(job_id)
            if job["status"] in TERMINAL:
                return job
        return self.job(job_id)

    def image(self, url_or_job: str | dict[str, Any], index: int = 0) -> bytes:
        """An image's bytes, by its URL or from a finished job."""
        url = url_or_job if isinstance(url_or_job, str) else url_or_job["images"][index]["url"]
        return check(self.http.get(url)).content

    def generate(self, model: str, prompt: str, on_event: Callable[[Event], None] | None = None,
                 **params: Any) -> tuple[dict[str, Any], list[bytes]]:
        """Submit, follow progress, and download: (the finished job, its images). Raises JobFailed when
        the job ends without images."""
        submitted = self.submit(model, prompt, **params)
        job = self.wait(submitted["id"], on_event)
        if job["status"] != "succeeded":
            raise JobFailed(job)
        return job, [self.image(image["url"]) for image in job["images"]]

    # -- account ----------------------------------------------------------------------------------------
    def models(self) -> list[dict[str, Any]]:
        return self._get("/v1/models")

    def account(self) -> dict[str, Any]:
        return self._get("/v1/account")

    def usage(self, start: str | None = None, end: str | None = None, group_by: str = "day") -> dict[str, Any]:
        return self._get("/v1/usage", **{"from": start, "to": end, "group_by": group_by})

