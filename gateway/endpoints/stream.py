"""`GET /jobs/{id}/events`: one job's events as Server-Sent Events, resumable.

Where the stream resumes is decided in `gateway.endpoints.resumption` (the same routine as
`GET /events`, for a list of one); delivery in `gateway.engine.hub`. Both routes answer through
`respond`: the per-key limits first, then Redis, then the stream — or, for HEAD, the status and
headers the GET would get, without a body, a stream or a slot.

`events_in_ring` (and `respond_in_ring`) is the same request answered synchronously when the
hub's ring vouches for every position: what `gateway.endpoints.dispatch` serves without an
ASGI call in a reconnect storm. It answers only that case and returns None for anything else
(an error included), which the ASGI path then answers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import orjson
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import ASGIApp

from gateway.endpoints.auth import Viewer, require_viewer
from gateway.endpoints.errors import APIError
from gateway.endpoints.limits import limits
from gateway.endpoints.lookup import job_not_found, path_job_id
from gateway.endpoints.position import parse_position, requested
from gateway.endpoints.resumption import (
    UnknownJobs,
    count_resumes,
    resume_points,
    resume_points_in_ring,
)
from gateway.endpoints.services import Services, services
from gateway.engine.framing import WEBSOCKET
from gateway.engine.response import (
    HEADERS,
    EventStreamResponse,
    WebSocketStreamResponse,
    websocket_ended,
)
from gateway.engine.resume import Resume
from shared import sse
from shared.streamid import StreamId

__all__ = [
    "event_stream",
    "events",
    "events_in_ring",
    "respond",
    "respond_in_ring",
    "websocket_stream",
]

# A GET's headers, less the framing of a body that a HEAD does not have.
_HEAD_HEADERS = {name.decode(): value.decode() for name, value in HEADERS}
del _HEAD_HEADERS["transfer-encoding"]


async def events(request: HTTPConnection) -> ASGIApp:
    """`GET /jobs/{id}/events`, and `/jobs/{id}/ws` over a WebSocket."""
    viewer, positions = _asked(request)
    try:
        return await respond(request, viewer, positions)
    except UnknownJobs as exc:
        raise job_not_found(exc.job_ids[0]) from None


def events_in_ring(request: HTTPConnection) -> EventStreamResponse | None:
    """`events` when the ring answers it alone; None for anything else."""
    try:
        viewer, positions = _asked(request)
    except APIError:
        return None
    return respond_in_ring(request, viewer, positions)


def _asked(request: HTTPConnection) -> tuple[Viewer, dict[str, StreamId | None]]:
    """Who asks, and from where in the job: 400, 401 or 403 when the request says neither."""
    job_id = path_job_id(request)
    viewer = require_viewer(request, [job_id])
    raw = requested(request)
    return viewer, {job_id: None if raw is None else parse_position(raw)}


async def respond(
    request: HTTPConnection,
    viewer: Viewer,
    positions: Mapping[str, StreamId | None],
    *,
    composite: bool = False,
) -> ASGIApp:
    """The answer to a well-formed stream request: the event stream from `positions`, or 204
    when the client already has every job's terminal event; over a WebSocket (the request's
    scope says which), the stream's messages, or the `end` message at once. Raises UnknownJobs.

    The viewer's slot and one request of its budget are taken before Redis is read, and given
    back at once unless a stream opens (a 404 or a 204 holds nothing).
    """
    svc = services(request)
    if request.scope.get("method") == "HEAD":
        limits(request).ask_stream(viewer.counted_keys)
        return _headers_only(await resume_points(svc, viewer, positions))
    over_websocket = request.scope["type"] == "websocket"
    with limits(request).open_stream(viewer.counted_keys) as slot:
        resumes = await resume_points(svc, viewer, positions)
        count_resumes(svc.hub.counters, positions, resumes)
        if over_websocket:
            if _finished(resumes):
                return websocket_ended
            return slot.guard(websocket_stream(svc, resumes, composite=composite))
        if _finished(resumes):
            return Response(status_code=204)
        return event_stream(svc, resumes, composite=composite, release=slot.hand_over())


def respond_in_ring(
    request: HTTPConnection,
    viewer: Viewer,
    positions: Mapping[str, StreamId | None],
    *,
    composite: bool = False,
) -> EventStreamResponse | None:
    """`respond`'s event stream, when the ring vouches for every position and the viewer may
    open one more stream; None, having taken nothing, for any other answer."""
    svc = services(request)
    resumes = resume_points_in_ring(svc.hub, viewer, positions)
    if resumes is None or _finished(resumes):
        return None
    try:
        slot = limits(request).open_stream(viewer.counted_keys)
    except APIError:  # refused: the ASGI path refuses it again, with its 429
        return None
    count_resumes(svc.hub.counters, positions, resumes)
    return event_stream(svc, resumes, composite=composite, release=slot.hand_over())


def _finished(resumes: list[Resume]) -> bool:
    # Then 204: the one answer that stops a browser's EventSource for good.
    return all(resume.finished for resume in resumes)


def _headers_only(resumes: list[Resume]) -> Response:
    if _finished(resumes):
        return Response(status_code=204)
    response = Response(status_code=200, headers=_HEAD_HEADERS)
    # The GET's body is a stream of no stated length: a HEAD must not claim a length of 0.
    del response.headers["content-length"]
    return response


def event_stream(
    svc: Services,
    resumes: list[Resume],
    *,
    composite: bool = False,
    release: Callable[[], None] | None = None,
) -> EventStreamResponse:
    """The response streaming `resumes` through the hub, `retry:` and any `reset` first;
    `release` (a stream slot's) is called when the stream ends."""
    head = sse.retry(svc.settings.sse_retry_ms)
    for resume in resumes:
        if resume.reset is not None:
            head += sse.frame(orjson.dumps(resume.reset), event="reset")
    return EventStreamResponse(
        svc.hub,
        resumes,
        head,
        composite=composite,
        send_timeout=svc.settings.send_timeout_s,
        release=release,
    )


def websocket_stream(
    svc: Services, resumes: list[Resume], *, composite: bool = False
) -> WebSocketStreamResponse:
    """The same over a WebSocket: any `reset` first (there is no `retry:`; a client picks its
    own delay)."""
    head = b"".join(
        WEBSOCKET.notice("reset", orjson.dumps(resume.reset))
        for resume in resumes
        if resume.reset is not None
    )
    return WebSocketStreamResponse(
        svc.hub, resumes, head, composite=composite, send_timeout=svc.settings.send_timeout_s
    )
