"""The event envelope every job writes and every client reads, and its orjson encoding.

```
{"v": 1, "type": "progress", "job": "<job id>", "ts": <unix ms>, "attempt": <arq job_try>,
 "data": {...}}
```
The envelope carries no id: the Redis stream id given by XADD is the event's id.

This module is the one list of event types: the Python client takes its own from here, the
publish script its ending statuses from `shared.state` (tested against TERMINAL_TYPES), and
tests check the web page's `static/js/events.js` against it.
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Any, TypedDict

import orjson

__all__ = [
    "ENVELOPE_BYTES",
    "ENVELOPE_VERSION",
    "TERMINAL_TYPES",
    "ConnectionEventType",
    "Event",
    "EventType",
    "InvalidEvent",
    "decode_event",
    "encode_event",
    "make_event",
    "now_ms",
    "truncation_marker",
    "within_size",
]

ENVELOPE_VERSION = 1
# Most bytes an envelope adds to its data (a job id of 128 characters, the largest type, a
# 13-digit timestamp, a large attempt), with room to spare: an event whose data is the
# truncation marker always fits in this.
ENVELOPE_BYTES = 1_024
# What decode_event checks beyond `v` and `type` (orjson yields exactly these types).
_FIELD_TYPES: dict[str, type] = {"job": str, "ts": int, "attempt": int, "data": dict}


class EventType(StrEnum):
    QUEUED = "queued"
    STARTED = "started"
    PROGRESS = "progress"
    HEARTBEAT = "heartbeat"
    DATA = "data"
    LOG = "log"
    ERROR = "error"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_TYPES


TERMINAL_TYPES = frozenset({EventType.COMPLETED, EventType.FAILED, EventType.CANCELLED})


class ConnectionEventType(StrEnum):
    """Events the gateway makes for one connection: no envelope, no `id:`, never stored, so
    they never move a client's position."""

    # The position asked for cannot be vouched for: the job's snapshot, then what is stored.
    RESET = "reset"
    # A running job has been silent for too long (its worker may be gone).
    STALLED = "stalled"


class Event(TypedDict):
    v: int
    type: str
    job: str
    ts: int
    attempt: int
    data: dict[str, Any]


class InvalidEvent(ValueError):
    """Bytes that are not a Jobwire event envelope."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def make_event(
    event_type: EventType, job_id: str, attempt: int, data: dict[str, Any], ts: int | None = None
) -> Event:
    return Event(
        v=ENVELOPE_VERSION,
        type=event_type.value,
        job=job_id,
        ts=now_ms() if ts is None else ts,
        attempt=attempt,
        data=data,
    )


def encode_event(event: Event) -> bytes:
    """One line of JSON: orjson escapes every control character, so no raw newline."""
    return orjson.dumps(event, option=orjson.OPT_NON_STR_KEYS)


def truncation_marker(encoded_bytes: int) -> dict[str, Any]:
    """What stands for a value whose encoding, `encoded_bytes` long, was too large to carry.

    A JSON value cut short would be a different value, while this marker cannot be mistaken
    for one a job meant.
    """
    return {"truncated": True, "bytes": encoded_bytes}


def within_size(event: Event, max_bytes: int) -> tuple[Event, int | None]:
    """`event` if its encoding is at most `max_bytes`, else the same event whose data is the
    truncation marker; and the encoded size of the data it replaced (None when it fits)."""
    size = len(encode_event(event))
    if size <= max_bytes:
        return event, None
    # The data's own size, without encoding it again: the envelope around `{}` is the rest.
    data_bytes = size - len(encode_event(_with_data(event, {}))) + len(b"{}")
    return _with_data(event, truncation_marker(data_bytes)), data_bytes


def _with_data(event: Event, data: dict[str, Any]) -> Event:
    changed = event.copy()
    changed["data"] = data
    return changed


def decode_event(raw: bytes | str) -> Event:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"not JSON: {exc}") from None
    if not isinstance(value, dict) or value.get("v") != ENVELOPE_VERSION:
        raise InvalidEvent("not a version-1 event envelope")
    try:
        EventType(value["type"])
    except (KeyError, ValueError):
        raise InvalidEvent(f"unknown event type {value.get('type')!r}") from None
    for name, kind in _FIELD_TYPES.items():
        if type(value.get(name)) is not kind:
            raise InvalidEvent(f"field {name!r} must be a {kind.__name__}")
    return Event(
        v=value["v"],
        type=value["type"],
        job=value["job"],
        ts=value["ts"],
        attempt=value["attempt"],
        data=value["data"],
    )
