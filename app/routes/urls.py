"""Absolute URLs in responses, and the job -> response view."""

from __future__ import annotations

from fastapi import Request

from app.schemas import ImageResult, JobResponse, Progress, Timings
from store.records import MEDIA_TYPES, Job


def base_url(request: Request) -> str:
    configured = request.app.state.settings.public_url
    return (configured or str(request.base_url)).rstrip("/")


def job_urls(request: Request, job_id: str) -> dict[str, str]:
    root = f"{base_url(request)}/v1/jobs/{job_id}"
    return {"polling_url": root, "events_url": f"{root}/events", "cancel_url": f"{root}/cancel"}


def job_response(request: Request, job: Job) -> JobResponse:
    urls = job_urls(request, job.id)
    images = [
        ImageResult(url=f"{urls['polling_url']}/images/{i}", width=job.width, height=job.height,
                    seed=job.seeds[i], content_type=MEDIA_TYPES[job.output_format])
        for i in range(job.images)
    ]
    queue_seconds = job.started_at - job.created_at if job.started_at else None
    return JobResponse(
        id=job.id, status=job.status, model=job.variant, task=job.task, result=job.result, prompt=job.prompt,
        width=job.width, height=job.height, steps=job.steps, guidance=job.guidance, n=job.n, seeds=job.seeds,
        output_format=job.output_format, cost=job.cost,
        queue_position=job.queue_position if job.status == "queued" else None,
        progress=Progress(step=job.progress_step, total=job.progress_total or job.steps),
        timings=Timings(created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at,
                        queue_seconds=queue_seconds, run_seconds=job.run_seconds),
        images=images, expires_at=job.expires_at, error=job.error, **urls,
    )
