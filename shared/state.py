"""The job state hash: which fields each event changes, and the snapshot clients read.

The publish script writes these fields in the same atomic step as the event itself, so the
snapshot and the stream never disagree.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import orjson

from shared.events import Event, EventType

__all__ = [
    "CANCEL_REQUESTED",
    "STALLED_AFTER_HEARTBEATS",
    "JobStatus",
    "TERMINAL_STATUSES",
    "is_stalled",
    "status_after",
    "snapshot",
    "state_changes",
]

# A running job writes at least a heartbeat every heartbeat interval; this many intervals of
# silence mean its worker is gone or hung.
STALLED_AFTER_HEARTBEATS = 3

# Set by the gateway before it asks arq to abort a job: tells the worker's lifecycle that a
# CancelledError is a cancellation, not the worker shutting down.
CANCEL_REQUESTED = "cancel_requested_at"


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})

_STATUS_AFTER = {
    EventType.QUEUED: JobStatus.QUEUED,
    EventType.STARTED: JobStatus.RUNNING,
    EventType.RETRYING: JobStatus.RETRYING,
    EventType.COMPLETED: JobStatus.COMPLETED,
    EventType.FAILED: JobStatus.FAILED,
    EventType.CANCELLED: JobStatus.CANCELLED,
}
# Fields holding JSON in the hash; everything else is a plain string or integer.
_JSON_FIELDS = ("args", "progress", "result", "error")
_INT_FIELDS = (
    "attempt",
    "created_at",
    "started_at",
    "finished_at",
    "updated_at",
    "heartbeat_at",
    CANCEL_REQUESTED,
)


def state_changes(event: Event) -> dict[str, str]:
    """The state-hash fields this event sets (the script adds last_event_id and updated_at)."""
    event_type = EventType(event["type"])
    data = event["data"]
    changes: dict[str, str] = {"attempt": str(event["attempt"])}
    if event_type in _STATUS_AFTER:
        changes["status"] = _STATUS_AFTER[event_type].value
    if event_type is EventType.QUEUED:
        changes["name"] = str(data["name"])
        changes["args"] = _json(data.get("args", {}))
        changes["created_at"] = str(event["ts"])
    elif event_type is EventType.STARTED:
        changes["started_at"] = str(event["ts"])
    elif event_type is EventType.PROGRESS:
        changes["progress"] = _json(data)
    elif event_type is EventType.HEARTBEAT:
        changes["heartbeat_at"] = str(event["ts"])
    elif event_type is EventType.COMPLETED:
        changes["result"] = _json(data.get("result"))
    elif event_type in (EventType.FAILED, EventType.CANCELLED):
        changes["error"] = _json(data)
    if event_type.is_terminal:
        changes["finished_at"] = str(event["ts"])
    return changes


def snapshot(job_id: str, fields: dict[bytes, bytes]) -> dict[str, Any]:
    """The JSON-able snapshot of a job from its raw state hash."""
    state: dict[str, Any] = {"job_id": job_id}
    for raw_key, raw_value in fields.items():
        key = raw_key.decode()
        if key in _JSON_FIELDS:
            state[key] = orjson.loads(raw_value)
        elif key in _INT_FIELDS:
            state[key] = int(raw_value)
        else:
            state[key] = raw_value.decode()
    return state


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()


def is_stalled(status: str, last_event_ms: int, heartbeat_s: float, now_ms: int) -> bool:
    """A running job that has written nothing for STALLED_AFTER_HEARTBEATS heartbeats."""
    silence_ms = STALLED_AFTER_HEARTBEATS * heartbeat_s * 1000
    return status == JobStatus.RUNNING and now_ms - last_event_ms > silence_ms


def status_after(event_type: str) -> JobStatus | None:
    """The status a job has after an event of `event_type`; None if it keeps its status."""
    return _STATUS_AFTER.get(EventType(event_type))
