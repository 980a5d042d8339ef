"""Job status, Server-Sent Events, cancellation and result images."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Header, HTTPException, Path, Query, Request
from fastapi.responses import Response, StreamingResponse

from app.auth import Caller, CurrentCaller, Store
from app.routes.urls import job_response
from app.schemas import JobResponse
from store import keys
from store.jobstore import JobStore
from store.records import MEDIA_TYPES, TERMINAL_EVENTS, Job, JobStatus

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

JobId = Path(pattern=r"^[0-9a-f]{32}$", description="the id returned by POST /v1/generate")
_KEEPALIVE_S = 15


async def _owned_job(store: JobStore, caller: Caller, job_id: str) -> Job:
    job = await store.get(job_id)
    # Another account's job is indistinguishable from a missing one.
    if job is None or job.account != caller.account_id:
        raise HTTPException(404, f"no job {job_id} for this key (finished jobs are kept for the retention period)")
    return job


@router.get("", response_model=list[JobResponse])
async def list_jobs(request: Request, caller: CurrentCaller, store: Store,
                    limit: int = Query(20, ge=1, le=100)) -> list[JobResponse]:
    """The caller's most recent jobs in every state, newest first (up to the last 1,000 submitted;
    a job whose record has passed its retention is no longer listed)."""
    account = caller.account_id
    recent = await store.redis.xrevrange(keys.account_jobs(account), count=limit)
    jobs = [job for job in [await store.get(fields["job"]) for _, fields in recent] if job is not None
            and job.account == account]
    return [job_response(request, job) for job in jobs[:limit]]


@router.get("/{job_id}", response_model=JobResponse)
async def get_job(request: Request, caller: CurrentCaller, store: Store, job_id: str = JobId) -> JobResponse:
    return job_response(request, await _owned_job(store, caller, job_id))


@router.post("/{job_id}/cancel", response_model=JobResponse)
async def cancel_job(request: Request, caller: CurrentCaller, store: Store, job_id: str = JobId) -> JobResponse:
    """A queued job never runs; a running one stops at its next step. Finished jobs are unchanged."""
    job = await _owned_job(store, caller, job_id)
    await store.cancel(job)
    return job_response(request, await _owned_job(store, caller, job_id))


@router.get("/{job_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
async def job_events(
    caller: CurrentCaller, store: Store, job_id: str = JobId,
    last_event_id: str | None = Header(default=None, description="resume after this event id"),
) -> StreamingResponse:
    """Server-Sent Events: queued, running, progress (step, total), then succeeded | failed | canceled."""
    await _owned_job(store, caller, job_id)
    after = last_event_id if last_event_id and _valid_stream_id(last_event_id) else "0"

    async def stream() -> AsyncIterator[str]:
        nonlocal after
        while True:
            events = await store.events(job_id, after, block_ms=_KEEPALIVE_S * 1000)
            if not events:
                if await store.get(job_id) is None:  # expired meanwhile
                    return
                yield ": keep-alive\n\n"
                continue
            for event in events:
                after = event.id
                yield f"id: {event.id}\nevent: {event.event}\ndata: {event.data}\n\n"
                if event.event in TERMINAL_EVENTS:
                    return

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _valid_stream_id(value: str) -> bool:
    ms, _, seq = value.partition("-")
    return ms.isdigit() and (seq == "" or seq.isdigit())


@router.get("/{job_id}/images/{index}", response_class=Response,
            responses={200: {"content": {t: {} for t in MEDIA_TYPES.values()}}})
async def get_image(caller: CurrentCaller, store: Store, job_id: str = JobId,
                    index: int = Path(ge=0, le=15)) -> Response:
    job = await _owned_job(store, caller, job_id)
    if job.status != JobStatus.SUCCEEDED:
        raise HTTPException(404, f"job {job_id} has no images: it is {job.status}")
    if index >= job.images:
        raise HTTPException(404, f"job {job_id} has {job.images} image(s); index {index} does not exist")
    data = await store.image(job_id, index)
    if data is None:
        raise HTTPException(404, "this image has expired")
    return Response(data, media_type=MEDIA_TYPES[job.output_format],
                    headers={"Cache-Control": "private, max-age=3600"})

