"""Where a subscriber resumes: reading its position, and deciding whether the stream can vouch
for it.

A single-job stream's position is a stream id. A multi-job stream's position is a cursor, one
stream id per job: `<job>:<ms>-<seq>` entries joined by `,` (`:` and `,` never occur in job
ids). Resuming is exact only from an id the stream still holds; any other position (trimmed
away, of another job, invented) gets a `reset` carrying the job's snapshot, then everything
the stream holds.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from gateway.endpoints.errors import APIError
from gateway.endpoints.services import Services
from gateway.engine.resume import Resume
from shared.keys import InvalidJobId, validate_job_id
from shared.state import TERMINAL_STATUSES, JobStatus
from shared.streamid import InvalidStreamId, StreamId

__all__ = [
    "parse_cursor",
    "parse_position",
    "requested",
    "resume_point",
]

# Longest accepted Last-Event-ID: a cursor over the most jobs one stream may carry.
MAX_POSITION_CHARS = 16_384


def requested(request: Request) -> str | None:
    """The raw position: the `Last-Event-ID` header, else `?last_event_id=`; None if empty."""
    raw = request.headers.get("last-event-id")
    if raw is None:
        raw = request.query_params.get("last_event_id")
    if not raw:
        return None
    if len(raw) > MAX_POSITION_CHARS:
        raise _invalid(f"longer than {MAX_POSITION_CHARS} characters")
    return raw


def parse_position(raw: str) -> StreamId:
    try:
        return StreamId.parse(raw)
    except InvalidStreamId as exc:
        raise _invalid(str(exc)) from None


def parse_cursor(raw: str) -> dict[str, StreamId]:
    cursor: dict[str, StreamId] = {}
    for entry in raw.split(","):
        job_id, separator, position = entry.partition(":")
        if not separator:
            raise _invalid(f"expected '<job>:<ms>-<seq>' entries joined by ',', got {entry[:64]!r}")
        try:
            validate_job_id(job_id)
        except InvalidJobId as exc:
            raise _invalid(str(exc)) from None
        cursor[job_id] = parse_position(position)
    return cursor


async def resume_point(
    svc: Services, job_id: str, position: StreamId | None, state: dict[str, Any]
) -> Resume:
    last = StreamId.parse(state["last_event_id"])
    known = {"status": state["status"], "updated_at": state["updated_at"]}
    if position == last and JobStatus(state["status"]) in TERMINAL_STATUSES:
        return Resume(job_id, position, None, finished=True, **known)
    reason = await _unvouched(svc, job_id, position, last)
    if reason is None:
        return Resume(job_id, position, None, finished=False, **known)
    reset = {"job": job_id, "reason": reason, "state": state}
    return Resume(job_id, None, reset, finished=False, **known)


async def _unvouched(
    svc: Services, job_id: str, position: StreamId | None, last: StreamId
) -> str | None:
    """Why the stream cannot vouch for continuing from `position`, or None if it can."""
    stream_key = svc.keys.events(job_id)
    if position is None:
        info: dict[str, Any] = await svc.redis.xinfo_stream(stream_key)
        trimmed = int(info["entries-added"]) > int(info["length"])
        return "history_trimmed" if trimmed else None
    if position > last:
        return "unknown_position"
    # XREAD from an id that is not in the stream silently starts at the next one: an id that
    # was trimmed away would look like a clean resume, so check it is really there.
    if not await svc.redis.xrange(stream_key, str(position), str(position)):
        return "unknown_position"
    return None


def _invalid(detail: str) -> APIError:
    return APIError(400, "invalid_last_event_id", detail)
