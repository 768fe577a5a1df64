"""`GET /jobs/{id}/events`: one job's events as Server-Sent Events, resumable.

The resume rules live in `gateway.position`; the reading and framing in `gateway.reader`.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from gateway.lookup import job_not_found, load_snapshot, path_job_id
from gateway.position import Resume, parse_position, requested, resume_point
from gateway.reader import read_frames
from gateway.response import EventStreamResponse
from gateway.services import Services, services

__all__ = ["event_stream", "events"]


async def events(request: Request) -> ASGIApp:
    svc = services(request)
    job_id = path_job_id(request)
    raw = requested(request)
    position = None if raw is None else parse_position(raw)
    state = await load_snapshot(svc, job_id)
    if state is None:
        raise job_not_found(job_id)
    resume = await resume_point(svc, job_id, position, state)
    if resume.finished:
        # 204 is the one answer that stops a browser's EventSource for good.
        return Response(status_code=204)
    return event_stream(svc, [resume])


def event_stream(
    svc: Services, resumes: list[Resume], *, composite: bool = False
) -> EventStreamResponse:
    return EventStreamResponse(
        read_frames(svc, resumes, composite=composite),
        shutdown=svc.shutdown,
        send_timeout=svc.settings.send_timeout_s,
    )
