"""The document's `components`: the shapes of bodies and events, the shared parameters and
response headers, and the security scheme the operations in `paths` refer to by name."""

from __future__ import annotations

from typing import Any

from gateway.endpoints.position import MAX_POSITION_CHARS
from shared.events import ENVELOPE_VERSION, EventType
from shared.keys import JOB_ID_PATTERN
from shared.state import JobStatus

__all__ = ["COMPONENTS", "JOB_ID", "STATUS", "Schema", "header_ref", "schema_ref"]

Schema = dict[str, Any]

JOB_ID: Schema = {"type": "string", "pattern": f"^{JOB_ID_PATTERN.pattern}$"}
STATUS: Schema = {"type": "string", "enum": [status.value for status in JobStatus]}
_MILLIS: Schema = {"type": "integer", "description": "unix milliseconds"}
_EVENT_TYPES = [event_type.value for event_type in EventType]
# Events the gateway makes for one connection, without an `id:`.
_CONNECTION_EVENTS = ["reset", "stalled"]


def schema_ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def header_ref(name: str) -> Schema:
    return {"$ref": f"#/components/headers/{name}"}


_STREAM_EVENT: Schema = {
    "type": "object",
    "description": "One Server-Sent Event. Stored events carry `id:`, their stream id (in "
    "`GET /events`, the cursor of every job); `reset` and `stalled` carry none",
    "required": ["event", "data"],
    "properties": {
        "event": {"enum": [*_EVENT_TYPES, *_CONNECTION_EVENTS]},
        "id": {"type": "string"},
        "retry": {"type": "integer"},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {
                "anyOf": [schema_ref("Event"), schema_ref("ResetData"), schema_ref("StalledData")]
            },
        },
    },
}

# What `GET /jobs/{job_id}/events` and `GET /events` carry, one schema per event kind.
_EVENT_SCHEMAS: Schema = {
    "StreamEvent": _STREAM_EVENT,
    "Event": {
        "type": "object",
        "description": "A stored event: the envelope every job event has",
        "required": ["v", "type", "job", "ts", "attempt", "data"],
        "properties": {
            "v": {"const": ENVELOPE_VERSION},
            "type": {"enum": _EVENT_TYPES},
            "job": JOB_ID,
            "ts": _MILLIS,
            "attempt": {"type": "integer", "minimum": 0},
            "data": {"type": "object"},
        },
    },
    "ResetData": {
        "type": "object",
        "description": "The position asked for cannot be vouched for: the job's snapshot; what "
        "the stream still holds follows",
        "required": ["job", "reason", "state"],
        "properties": {
            "job": JOB_ID,
            "reason": {"type": "string"},
            "state": schema_ref("JobState"),
        },
    },
    "StalledData": {
        "type": "object",
        "description": "A running job has been silent for three heartbeat intervals",
        "required": ["job", "silent_s", "last_event_id"],
        "properties": {
            "job": JOB_ID,
            "silent_s": {"type": "number"},
            "last_event_id": {"type": ["string", "null"]},
        },
    },
}

_JOB_STATE: Schema = {
    "type": "object",
    "required": ["job_id", "status"],
    "properties": {
        "job_id": JOB_ID,
        "status": STATUS,
        "name": {"type": "string"},
        "args": {"type": "object"},
        "attempt": {"type": "integer", "minimum": 0},
        "progress": {"type": "object"},
        "result": {"description": "the job's return value, once completed"},
        "error": {"type": "object", "description": "why it failed or was cancelled"},
        "last_event_id": {"type": "string"},
        "last_event_type": {"type": "string"},
        "created_at": _MILLIS,
        "started_at": _MILLIS,
        "finished_at": _MILLIS,
        "updated_at": _MILLIS,
        "heartbeat_at": _MILLIS,
        "cancel_requested_at": _MILLIS,
        "owner": {"type": "string", "description": "the id of the key that submitted it"},
        "stalled": {"type": "boolean", "description": "running, but silent for too long"},
        "watch_token": {
            "type": ["string", "null"],
            "description": "in `GET /jobs` and `GET /jobs/{job_id}`: a fresh watch token for "
            "the job when read with its API key; null when read with a watch token (a token "
            "does not renew itself) or with access control off",
        },
    },
}

# The JSON bodies the other routes take and answer with.
_BODY_SCHEMAS: Schema = {
    "Error": {
        "type": "object",
        "required": ["error", "detail"],
        "properties": {
            "error": {"type": "string", "description": "a stable, machine-readable code"},
            "detail": {"description": "what was wrong: text, or an object with the specifics"},
        },
        "additionalProperties": False,
    },
    "Submission": {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "minLength": 1, "description": "a job the workers run"},
            "args": {"type": "object", "description": "the job's keyword arguments"},
            "job_id": {**JOB_ID, "description": "your own id (default: a random one)"},
        },
        "additionalProperties": False,
    },
    "Submitted": {
        "type": "object",
        "required": ["job_id", "status", "status_url", "events_url", "watch_token"],
        "properties": {
            "job_id": JOB_ID,
            "status": STATUS,
            "status_url": {"type": "string", "format": "uri"},
            "events_url": {"type": "string", "format": "uri"},
            "watch_token": {
                "type": ["string", "null"],
                "description": "opens this job's events and state until it expires "
                "(JOBWIRE_TOKEN_TTL_S); null when auth is disabled",
            },
        },
        "additionalProperties": False,
    },
    "JobState": _JOB_STATE,
    "Cancelled": {
        "type": "object",
        "required": ["job_id", "status"],
        "properties": {
            "job_id": JOB_ID,
            "status": {"type": "string", "enum": [JobStatus.CANCELLED.value, "cancelling"]},
        },
        "additionalProperties": False,
    },
    "Catalog": {
        "type": "object",
        "required": ["jobs"],
        "properties": {"jobs": {"type": "array", "items": schema_ref("JobSpec")}},
        "additionalProperties": False,
    },
    "JobSpec": {
        "type": "object",
        "required": ["name", "params", "required", "accepts_any", "doc", "args_schema"],
        "properties": {
            "name": {"type": "string"},
            "params": {"type": "array", "items": {"type": "string"}},
            "required": {"type": "array", "items": {"type": "string"}},
            "accepts_any": {"type": "boolean"},
            "doc": {"type": "string"},
            "args_schema": {
                "type": "object",
                "description": "The JSON Schema (Draft 2020-12) of the job's `args`, made by "
                "the worker from the job's annotations; `POST /jobs` checks `args` against it",
            },
        },
    },
    "ArgumentProblem": {
        "type": "object",
        "description": "One bad field of a refused submission",
        "required": ["loc", "msg"],
        "properties": {
            "loc": {
                "type": "array",
                "description": '`["args", name]`, and deeper for a field inside an argument',
                "items": {"type": ["string", "integer"]},
                "minItems": 2,
            },
            "msg": {"type": "string"},
        },
        "additionalProperties": False,
    },
    "JobList": {
        "type": "object",
        "required": ["jobs", "next"],
        "properties": {
            "jobs": {"type": "array", "items": schema_ref("JobState")},
            "next": {
                "type": ["string", "null"],
                "description": "pass it as `cursor` for the next page; null at the end of the "
                "list. A page may hold fewer jobs than `limit`, even none, when a filter "
                "leaves many out: go on while `next` is not null",
            },
        },
        "additionalProperties": False,
    },
    "System": {
        "type": "object",
        "required": ["workers", "queued", "running"],
        "properties": {
            "workers": {"type": "integer", "minimum": 0, "description": "workers alive"},
            "queued": {
                "type": "integer",
                "minimum": 0,
                "description": "jobs waiting in the queue (retries waiting out their delay too)",
            },
            "running": {"type": "integer", "minimum": 0, "description": "jobs running now"},
        },
        "additionalProperties": False,
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"const": "ok"}},
        "additionalProperties": False,
    },
    "Readiness": {
        "type": "object",
        "required": ["status", "redis", "workers"],
        "properties": {
            "status": {"type": "string", "enum": ["ok", "unavailable"]},
            "redis": {"type": "string"},
            "workers": {"type": ["integer", "null"], "minimum": 0},
            "warning": {"type": "string"},
        },
        "additionalProperties": False,
    },
}

_LAST_EVENT_ID: Schema = {"type": "string", "maxLength": MAX_POSITION_CHARS}

_PARAMETERS: Schema = {
    "JobId": {"name": "job_id", "in": "path", "required": True, "schema": JOB_ID},
    "LastEventIdHeader": {
        "name": "Last-Event-ID",
        "in": "header",
        "description": "Resume after this event (what EventSource sends on reconnect)",
        "schema": _LAST_EVENT_ID,
    },
    "LastEventIdQuery": {
        "name": "last_event_id",
        "in": "query",
        "description": "Resume after this event, when the header cannot be set",
        "schema": _LAST_EVENT_ID,
    },
    "Token": {
        "name": "token",
        "in": "query",
        "description": "Watch tokens from the submit answers (EventSource cannot send headers); "
        "repeat it, one per job",
        "style": "form",
        "explode": True,
        "schema": {"type": "array", "items": {"type": "string"}},
    },
}

_HEADERS: Schema = {
    "WWW-Authenticate": {
        "required": True,
        "description": 'The challenge: `Bearer realm="jobwire"`',
        "schema": {"type": "string", "pattern": "^Bearer "},
    },
    "Retry-After": {
        "required": True,
        "description": "Seconds to wait before trying again",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
    "Location": {
        "required": True,
        "description": "The job's status URL",
        "schema": {"type": "string", "format": "uri"},
    },
}

_SECURITY_SCHEMES: Schema = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key (JOBWIRE_API_KEYS), or for reading one job, its watch token",
    }
}

COMPONENTS: Schema = {
    "securitySchemes": _SECURITY_SCHEMES,
    "parameters": _PARAMETERS,
    "headers": _HEADERS,
    "schemas": {**_EVENT_SCHEMAS, **_BODY_SCHEMAS},
}
