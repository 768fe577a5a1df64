"""`GET /jobs/{id}/events`: one job's events as Server-Sent Events, resumable.

Where the stream resumes is decided in `gateway.endpoints.resumption` (the same routine as
`GET /events`, for a list of one); delivery in `gateway.engine.hub`.
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from gateway.endpoints.auth import Viewer, require_viewer
from gateway.endpoints.limits import limits
from gateway.endpoints.lookup import job_not_found, path_job_id
from gateway.endpoints.position import parse_position, requested
from gateway.endpoints.resumption import UnknownJobs, resume_points
from gateway.endpoints.services import Services, services
from gateway.engine.response import EventStreamResponse
from gateway.engine.resume import Resume
from shared import sse

__all__ = ["event_stream", "events", "stream_or_finished"]


async def events(request: Request) -> ASGIApp:
    svc = services(request)
    job_id = path_job_id(request)
    viewer = require_viewer(request, [job_id])
    raw = requested(request)
    position = None if raw is None else parse_position(raw)
    try:
        resumes = await resume_points(svc, viewer, {job_id: position})
    except UnknownJobs:
        raise job_not_found(job_id) from None
    return stream_or_finished(request, svc, viewer, resumes)


def stream_or_finished(
    request: Request,
    svc: Services,
    viewer: Viewer,
    resumes: list[Resume],
    *,
    composite: bool = False,
) -> ASGIApp:
    """204 when the client already has every job's terminal event, else the event stream."""
    if all(resume.finished for resume in resumes):
        # 204 is the one answer that stops a browser's EventSource for good.
        return Response(status_code=204)
    with limits(request).stream_slot(viewer.counted_keys) as slot:
        return slot.guard(event_stream(svc, resumes, composite=composite))


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
