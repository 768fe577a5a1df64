"""The events a client sees: the job's stored events, and `reset` from the gateway.

A stored event's `id` is its Redis stream id (`<ms>-<seq>`), the position a client resumes
from. A `reset` has no id: it says the gateway could not vouch for the position asked for, and
carries the job's state snapshot in `data["state"]`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import orjson

from jobwire.client.sse import ServerSentEvent
from shared.events import TERMINAL_TYPES, ConnectionEventType
from shared.streamid import InvalidStreamId, StreamId

__all__ = ["RESET", "TERMINAL_TYPES", "InvalidEvent", "JobEvent", "parse_event"]

RESET = ConnectionEventType.RESET


class InvalidEvent(ValueError):
    """An SSE event whose data is not what the gateway sends."""


@dataclass(frozen=True, slots=True)
class JobEvent:
    type: str
    id: str | None
    job: str
    attempt: int
    data: dict[str, Any]
    ts: int | None = None

    @property
    def is_terminal(self) -> bool:
        return self.type in TERMINAL_TYPES

    @property
    def is_reset(self) -> bool:
        return self.type == RESET

    @property
    def stream_id(self) -> StreamId | None:
        return None if self.id is None else StreamId.parse(self.id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "job": self.job,
            "attempt": self.attempt,
            "ts": self.ts,
            "data": self.data,
        }


def parse_event(message: ServerSentEvent, job_id: str, *, composite: bool = False) -> JobEvent:
    """The event in `message`, of the job `job_id` unless it names its own. On a stream of
    several jobs (`composite`) each `id:` is the cursor of every job; the event's own id is
    its job's entry there."""
    try:
        value = orjson.loads(message.data)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"{message.event} event data is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidEvent(f"{message.event} event data is not a JSON object")
    if message.id is None:
        return _unstored(message.event, value, job_id)
    if composite:
        message = replace(message, id=_entry_of(message.id, value.get("job")))
    return _stored(message, value)


def _entry_of(cursor: str, job: object) -> str:
    """`job`'s position in `cursor`: `<job>:<ms>-<seq>` entries joined by `,`."""
    for entry in cursor.split(","):
        job_id, _, position = entry.rpartition(":")
        if job_id == job:
            return position
    raise InvalidEvent(f"the cursor {cursor[:100]!r} has no entry for the event's job")


def _stored(message: ServerSentEvent, envelope: dict[str, Any]) -> JobEvent:
    event_type, job, attempt = envelope.get("type"), envelope.get("job"), envelope.get("attempt")
    data, ts = envelope.get("data"), envelope.get("ts")
    if not (
        isinstance(event_type, str)
        and isinstance(job, str)
        and isinstance(attempt, int)
        and isinstance(data, dict)
        and (ts is None or isinstance(ts, int))
    ):
        raise InvalidEvent(f"event {message.id} is not a Jobwire event envelope")
    try:
        StreamId.parse(message.id or "")
    except InvalidStreamId as exc:
        raise InvalidEvent(f"event id is not a stream id: {exc}") from None
    return JobEvent(type=event_type, id=message.id, job=job, attempt=attempt, data=data, ts=ts)


def _unstored(event_type: str, data: dict[str, Any], job_id: str) -> JobEvent:
    """An event the gateway made for this connection (`reset`): no envelope, no position."""
    state = data.get("state")
    attempt = state.get("attempt", 0) if isinstance(state, dict) else 0
    return JobEvent(
        type=event_type,
        id=None,
        job=str(data.get("job", job_id)),
        attempt=attempt if isinstance(attempt, int) else 0,
        data=data,
    )
