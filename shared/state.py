"""The job state hash: which fields each event changes, and the snapshot clients read.

The publish script writes these fields in the same atomic step as the event itself, so the
snapshot and the stream never disagree.
"""

from __future__ import annotations

import secrets
from enum import StrEnum
from typing import Any, NamedTuple

import orjson

from shared.events import Event, EventType

__all__ = [
    "CANCEL_REQUESTED",
    "INCARNATION",
    "OWNER",
    "STALLED_AFTER_HEARTBEATS",
    "JobStatus",
    "TERMINAL_STATUSES",
    "TOKEN_GENERATION",
    "TokenBinding",
    "binding_of",
    "is_stalled",
    "new_incarnation",
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

# Who may watch a job: the id of the API key that submitted it; a random id of this job, so
# a job created later under the same id is another job; and a count of the revocations of
# its watch tokens. A watch token carries all three and opens the job only while they match.
OWNER = "owner"
INCARNATION = "incarnation"
TOKEN_GENERATION = "token_generation"
# Written for the gateway's checks, not part of what clients read as the job's state.
_ACCESS_FIELDS = frozenset({INCARNATION.encode(), TOKEN_GENERATION.encode()})


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


class TokenBinding(NamedTuple):
    """What a watch token must match to open a job: the key that submitted it (None: no
    owner recorded), this incarnation of the job, and its current token generation."""

    owner: str | None
    incarnation: str
    generation: int


def new_incarnation() -> str:
    return secrets.token_hex(8)


def binding_of(fields: dict[bytes, bytes]) -> TokenBinding:
    """The binding a job's raw state hash records (a job from before incarnations: "")."""
    owner = fields.get(OWNER.encode())
    return TokenBinding(
        None if owner is None else owner.decode(),
        fields.get(INCARNATION.encode(), b"").decode(),
        int(fields.get(TOKEN_GENERATION.encode(), 0)),
    )


def snapshot(job_id: str, fields: dict[bytes, bytes]) -> dict[str, Any]:
    """The JSON-able snapshot of a job from its raw state hash."""
    state: dict[str, Any] = {"job_id": job_id}
    for raw_key, raw_value in fields.items():
        if raw_key in _ACCESS_FIELDS:
            continue
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
