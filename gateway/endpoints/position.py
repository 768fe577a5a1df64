"""Reading the client's position: `Last-Event-ID`, else `?last_event_id=`; 400 when malformed.

A single-job stream's position is a stream id. A multi-job stream's position is a cursor, one
stream id per job: `<job>:<ms>-<seq>` entries joined by `,` (`:` and `,` never occur in job
ids). Whether the stream can vouch for a position is decided in
`gateway.endpoints.resumption`.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.requests import HTTPConnection

from gateway.endpoints.errors import APIError
from shared.keys import InvalidJobId, validate_job_id
from shared.streamid import InvalidStreamId, StreamId

__all__ = [
    "cursor_positions",
    "parse_cursor",
    "parse_position",
    "requested",
]

# Longest accepted Last-Event-ID: a cursor over the most jobs one stream may carry.
MAX_POSITION_CHARS = 16_384


def requested(request: HTTPConnection) -> str | None:
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


def cursor_positions(raw: str | None, job_ids: Sequence[str]) -> dict[str, StreamId | None]:
    """Each of `job_ids` with its position in the cursor `raw` (None: not in it, or no cursor);
    400 for a cursor naming a job the stream was not asked for."""
    cursor = {} if raw is None else parse_cursor(raw)
    strangers = sorted(set(cursor) - set(job_ids))
    if strangers:
        raise APIError(400, "invalid_last_event_id", {"jobs_not_requested": strangers})
    return {job_id: cursor.get(job_id) for job_id in job_ids}


def _invalid(detail: str) -> APIError:
    return APIError(400, "invalid_last_event_id", detail)
