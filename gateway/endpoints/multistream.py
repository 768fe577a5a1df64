"""`GET /events?job=a&job=b`: the events of several jobs on one connection.

Browsers open at most six HTTP/1.1 connections per origin, so a page watching ten jobs needs
them on one stream. Each event's `id:` is the cursor of every job
(`gateway.endpoints.position`), so a reconnect with the last id resumes each job exactly where
it was.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from gateway.endpoints.auth import require_viewer
from gateway.endpoints.errors import APIError
from gateway.endpoints.limits import limits
from gateway.endpoints.lookup import load_snapshot
from gateway.endpoints.position import parse_cursor, requested, resume_point
from gateway.endpoints.services import services
from gateway.endpoints.stream import event_stream
from shared.keys import InvalidJobId, validate_job_id

__all__ = ["MAX_JOBS", "events"]

MAX_JOBS = 50


async def events(request: Request) -> ASGIApp:
    svc = services(request)
    job_ids = _job_ids(request)
    viewer = require_viewer(request, job_ids)
    raw = requested(request)
    cursor = {} if raw is None else parse_cursor(raw)
    strangers = sorted(set(cursor) - set(job_ids))
    if strangers:
        raise APIError(400, "invalid_last_event_id", {"jobs_not_requested": strangers})
    states = {job_id: await load_snapshot(svc, job_id) for job_id in job_ids}
    # Another key's job is unknown to this one.
    unknown = [
        job_id for job_id, state in states.items() if state is None or not viewer.owns(state)
    ]
    if unknown:
        raise APIError(404, "job_not_found", {"unknown": unknown})
    resumes = [
        await resume_point(svc, job_id, cursor.get(job_id), state)
        for job_id, state in states.items()
        if state is not None
    ]
    if all(resume.finished for resume in resumes):
        return Response(status_code=204)
    with limits(request).stream_slot(viewer.counted_keys) as slot:
        return slot.guard(event_stream(svc, resumes, composite=True))


def _job_ids(request: Request) -> list[str]:
    job_ids = list(dict.fromkeys(request.query_params.getlist("job")))
    if not job_ids:
        raise APIError(400, "invalid_request", "name at least one job: /events?job=<id>")
    if len(job_ids) > MAX_JOBS:
        raise APIError(400, "invalid_request", f"at most {MAX_JOBS} jobs per stream")
    try:
        return [validate_job_id(job_id) for job_id in job_ids]
    except InvalidJobId as exc:
        raise APIError(400, "invalid_job_id", str(exc)) from None
