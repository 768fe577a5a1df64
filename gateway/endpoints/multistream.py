"""`GET /events?job=a&job=b`: the events of several jobs on one connection.

Browsers open at most six HTTP/1.1 connections per origin, so a page watching ten jobs needs
them on one stream. Each event's `id:` is the cursor of every job
(`gateway.endpoints.position`), so a reconnect with the last id resumes each job exactly where
it was; where each resumes is decided in `gateway.endpoints.resumption`, in one Redis round
trip for all of them.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp

from gateway.endpoints.auth import Viewer, require_viewer
from gateway.endpoints.errors import APIError
from gateway.endpoints.position import cursor_positions, requested
from gateway.endpoints.resumption import UnknownJobs
from gateway.endpoints.stream import respond, respond_in_ring
from gateway.engine.response import EventStreamResponse
from shared.keys import InvalidJobId, validate_job_id
from shared.streamid import StreamId

__all__ = ["MAX_JOBS", "events", "events_in_ring"]

MAX_JOBS = 50


async def events(request: HTTPConnection) -> ASGIApp:
    """`GET /events?job=…`, and `/events/ws?job=…` over a WebSocket."""
    viewer, positions = _asked(request)
    try:
        return await respond(request, viewer, positions, composite=True)
    except UnknownJobs as exc:
        raise APIError(404, "job_not_found", {"unknown": exc.job_ids}) from None


def events_in_ring(request: HTTPConnection) -> EventStreamResponse | None:
    """`events` when the ring answers it alone (`gateway.endpoints.stream.respond_in_ring`);
    None for anything else."""
    try:
        viewer, positions = _asked(request)
    except APIError:
        return None
    return respond_in_ring(request, viewer, positions, composite=True)


def _asked(request: HTTPConnection) -> tuple[Viewer, dict[str, StreamId | None]]:
    """Who asks, and from where in each job: 400, 401 or 403 when the request says neither."""
    job_ids = _job_ids(request)
    viewer = require_viewer(request, job_ids)
    return viewer, cursor_positions(requested(request), job_ids)


def _job_ids(request: HTTPConnection) -> list[str]:
    job_ids = list(dict.fromkeys(request.query_params.getlist("job")))
    if not job_ids:
        raise APIError(400, "invalid_request", "name at least one job: /events?job=<id>")
    if len(job_ids) > MAX_JOBS:
        raise APIError(400, "invalid_request", f"at most {MAX_JOBS} jobs per stream")
    try:
        return [validate_job_id(job_id) for job_id in job_ids]
    except InvalidJobId as exc:
        raise APIError(400, "invalid_job_id", str(exc)) from None
