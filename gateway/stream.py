"""`GET /jobs/{id}/events`: where a subscriber's position is read and checked.

The position comes from the `Last-Event-ID` header, else `?last_event_id=`. Resuming is exact
only from an id the stream still holds; any other position (trimmed away, from another job,
invented) gets a `reset` event with the job's snapshot, then everything the stream holds.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from gateway.errors import APIError
from gateway.jobs import load_snapshot, path_job_id
from gateway.reader import read_frames
from gateway.response import EventStreamResponse
from gateway.services import Services, services
from shared.state import TERMINAL_STATUSES, JobStatus
from shared.streamid import InvalidStreamId, StreamId

__all__ = ["events", "requested_position"]


async def events(request: Request) -> ASGIApp:
    svc = services(request)
    job_id = path_job_id(request)
    position = requested_position(request)
    state = await load_snapshot(svc, job_id)
    if state is None:
        raise APIError(404, "job_not_found", f"no job {job_id}")
    last = StreamId.parse(state["last_event_id"])
    if position == last and JobStatus(state["status"]) in TERMINAL_STATUSES:
        # 204 is the one answer that stops a browser's EventSource for good.
        return Response(status_code=204)
    reset_reason = await _unvouched(svc, job_id, position, last)
    reset = None if reset_reason is None else {"reason": reset_reason, "state": state}
    after = position if reset is None else None
    return EventStreamResponse(
        read_frames(svc, job_id, after, reset),
        shutdown=svc.shutdown,
        send_timeout=svc.settings.send_timeout_s,
    )


def requested_position(request: Request) -> StreamId | None:
    raw = request.headers.get("last-event-id")
    if raw is None:
        raw = request.query_params.get("last_event_id")
    if raw is None or raw == "":
        return None
    try:
        return StreamId.parse(raw)
    except InvalidStreamId as exc:
        raise APIError(400, "invalid_last_event_id", str(exc)) from None


async def _unvouched(
    svc: Services, job_id: str, position: StreamId | None, last: StreamId
) -> str | None:
    """Why the stream cannot vouch for continuing from `position`, or None if it can."""
    stream_key = svc.keys.events(job_id)
    if position is None:
        return "history_trimmed" if await _history_trimmed(svc, stream_key) else None
    if position > last:
        return "unknown_position"
    # XREAD from an id that is not in the stream silently starts at the next one: an id that
    # was trimmed away would look like a clean resume, so check it is really there.
    if not await svc.redis.xrange(stream_key, str(position), str(position)):
        return "unknown_position"
    return None


async def _history_trimmed(svc: Services, stream_key: str) -> bool:
    info: dict[str, Any] = await svc.redis.xinfo_stream(stream_key)
    return int(info["entries-added"]) > int(info["length"])
