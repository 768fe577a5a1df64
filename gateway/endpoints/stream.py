"""`GET /jobs/{id}/events`: one job's events as Server-Sent Events, resumable.

The resume rules live in `gateway.endpoints.position`; delivery in `gateway.engine.hub`.
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from gateway.endpoints.auth import jobs_of_others, require_viewer
from gateway.endpoints.limits import limits
from gateway.endpoints.lookup import job_not_found, load_snapshot, path_job_id
from gateway.endpoints.position import parse_position, requested, resume_point
from gateway.endpoints.services import Services, services
from gateway.engine.response import EventStreamResponse
from gateway.engine.resume import Resume
from shared import sse

__all__ = ["event_stream", "events"]


async def events(request: Request) -> ASGIApp:
    svc = services(request)
    job_id = path_job_id(request)
    viewer = require_viewer(request, [job_id])
    if await jobs_of_others(svc, viewer, [job_id]):
        raise job_not_found(job_id)
    raw = requested(request)
    position = None if raw is None else parse_position(raw)
    resume = None if position is None else svc.hub.vouch(job_id, position)
    if resume is None:
        state = await load_snapshot(svc, job_id)
        if state is None:
            raise job_not_found(job_id)
        resume = await resume_point(svc, job_id, position, state)
    if resume.finished:
        # 204 is the one answer that stops a browser's EventSource for good.
        return Response(status_code=204)
    with limits(request).stream_slot(viewer.counted_keys) as slot:
        return slot.guard(event_stream(svc, [resume]))


def event_stream(
    svc: Services, resumes: list[Resume], *, composite: bool = False
) -> EventStreamResponse:
    """The response streaming `resumes` through the hub, `retry:` and any `reset` first."""
    head = sse.retry(svc.settings.sse_retry_ms)
    for resume in resumes:
        if resume.reset is not None:
            head += sse.frame(orjson.dumps(resume.reset), event="reset")
    return EventStreamResponse(
        svc.hub, resumes, head, composite=composite, send_timeout=svc.settings.send_timeout_s
    )
