"""The OpenAPI 3.1 document of the gateway's HTTP API, served at `GET /openapi.json`.

Written by hand, next to the routes it describes; `tests/test_openapi.py` runs schemathesis
against a live gateway with it, so a route, a status or a field that drifts from it fails
there. `Authorization` is described as the `bearer` security scheme and `Accept` by the two
media types `POST /jobs` answers with: OpenAPI ignores header parameters of those names.
The `schema` of a `text/event-stream` answer describes one event (`event`, `data`, `id`), as
tools read it before OpenAPI 3.2's `itemSchema`.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.endpoints.multistream import MAX_JOBS
from gateway.endpoints.position import MAX_POSITION_CHARS
from gateway.endpoints.submission import MAX_IDEMPOTENCY_KEY_CHARS
from shared.events import EventType
from shared.keys import JOB_ID_PATTERN
from shared.state import JobStatus

__all__ = ["DOCUMENT", "openapi"]

Schema = dict[str, Any]

_JOB_ID: Schema = {"type": "string", "pattern": f"^{JOB_ID_PATTERN.pattern}$"}
_STATUS: Schema = {"type": "string", "enum": [status.value for status in JobStatus]}
_MILLIS: Schema = {"type": "integer", "description": "unix milliseconds"}
# Events the gateway makes for one connection, without an `id:`.
_CONNECTION_EVENTS = ["reset", "stalled"]
_EVENT_STREAM = {"text/event-stream": {"schema": {"$ref": "#/components/schemas/StreamEvent"}}}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Schema, description: str, **extra: Any) -> Schema:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema}},
        **extra,
    }


def _error(description: str, **extra: Any) -> Schema:
    return _json(_ref("Error"), description, **extra)


def _header(name: str) -> Schema:
    return {"$ref": f"#/components/headers/{name}"}


_ERRORS = {
    400: {
        "description": "Malformed request: the detail says what was wrong. A request the HTTP "
        "server cannot parse at all (a URL over 64 KiB, say) gets its plain-text answer",
        "content": {
            "application/json": {"schema": _ref("Error")},
            "text/plain": {"schema": {"type": "string"}},
        },
    },
    401: _error(
        "No credentials, or invalid, expired or revoked ones",
        headers={"WWW-Authenticate": _header("WWW-Authenticate")},
    ),
    403: _error("Valid watch tokens, but none is for (one of) the jobs asked for"),
    404: _error("No such job, or one another API key submitted"),
    409: _error("Conflicts with the job's state or id"),
    413: _error("The body is larger than JOBWIRE_MAX_BODY_BYTES"),
    422: _error("No job of that name, or arguments it does not take"),
    429: _error(
        "A per-key limit (streams open, or submits per minute) is reached",
        headers={"Retry-After": _header("Retry-After")},
    ),
    431: _error("The request line and headers are over 64 KiB, or over 100 headers"),
    503: _error(
        "Redis, where jobs live, cannot be reached just now",
        headers={"Retry-After": _header("Retry-After")},
    ),
}


def _errors(*codes: int) -> dict[str, Schema]:
    """The answers to `codes`, and 431, which any request may get."""
    return {str(code): _ERRORS[code] for code in (*codes, 431)}


_KEY_ONLY: list[dict[str, list[str]]] = [{"bearer": []}]
# A watch token may come as `?token=` instead of the header: the empty requirement says so.
_KEY_OR_TOKEN: list[dict[str, list[str]]] = [{"bearer": []}, {}]

_PARAMETERS: Schema = {
    "JobId": {"name": "job_id", "in": "path", "required": True, "schema": _JOB_ID},
    "LastEventIdHeader": {
        "name": "Last-Event-ID",
        "in": "header",
        "description": "Resume after this event (what EventSource sends on reconnect)",
        "schema": {"type": "string", "maxLength": MAX_POSITION_CHARS},
    },
    "LastEventIdQuery": {
        "name": "last_event_id",
        "in": "query",
        "description": "Resume after this event, when the header cannot be set",
        "schema": {"type": "string", "maxLength": MAX_POSITION_CHARS},
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

_SCHEMAS: Schema = {
    "StreamEvent": {
        "type": "object",
        "description": "One Server-Sent Event. Stored events carry `id:`, their stream id (in "
        "`GET /events`, the cursor of every job); `reset` and `stalled` carry none",
        "required": ["event", "data"],
        "properties": {
            "event": {"enum": [*(t.value for t in EventType), *_CONNECTION_EVENTS]},
            "id": {"type": "string"},
            "retry": {"type": "integer"},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"anyOf": [_ref("Event"), _ref("ResetData"), _ref("StalledData")]},
            },
        },
    },
    "Event": {
        "type": "object",
        "description": "A stored event: the envelope every job event has",
        "required": ["v", "type", "job", "ts", "attempt", "data"],
        "properties": {
            "v": {"const": 1},
            "type": {"enum": [t.value for t in EventType]},
            "job": _JOB_ID,
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
            "job": _JOB_ID,
            "reason": {"type": "string"},
            "state": _ref("JobState"),
        },
    },
    "StalledData": {
        "type": "object",
        "description": "A running job has been silent for three heartbeat intervals",
        "required": ["job", "silent_s", "last_event_id"],
        "properties": {
            "job": _JOB_ID,
            "silent_s": {"type": "number"},
            "last_event_id": {"type": ["string", "null"]},
        },
    },
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
            "job_id": {**_JOB_ID, "description": "your own id (default: a random one)"},
        },
        "additionalProperties": False,
    },
    "Submitted": {
        "type": "object",
        "required": ["job_id", "status", "status_url", "events_url", "watch_token"],
        "properties": {
            "job_id": _JOB_ID,
            "status": _STATUS,
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
    "JobState": {
        "type": "object",
        "required": ["job_id", "status"],
        "properties": {
            "job_id": _JOB_ID,
            "status": _STATUS,
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
        },
    },
    "Cancelled": {
        "type": "object",
        "required": ["job_id", "status"],
        "properties": {
            "job_id": _JOB_ID,
            "status": {"type": "string", "enum": ["cancelled", "cancelling"]},
        },
        "additionalProperties": False,
    },
    "Catalog": {
        "type": "object",
        "required": ["jobs"],
        "properties": {"jobs": {"type": "array", "items": _ref("JobSpec")}},
        "additionalProperties": False,
    },
    "JobSpec": {
        "type": "object",
        "required": ["name", "params", "required", "accepts_any", "doc"],
        "properties": {
            "name": {"type": "string"},
            "params": {"type": "array", "items": {"type": "string"}},
            "required": {"type": "array", "items": {"type": "string"}},
            "accepts_any": {"type": "boolean"},
            "doc": {"type": "string"},
        },
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

_SUBMIT: Schema = {
    "operationId": "submitJob",
    "summary": "Queue a job (and, with `Accept: text/event-stream`, stream its events at once)",
    "security": _KEY_ONLY,
    "parameters": [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "description": "A retried submit with the same key (from the same API key) "
            "returns the same job instead of queueing another",
            "schema": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY_CHARS},
        }
    ],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": _ref("Submission"),
                "example": {"name": "demo.countdown", "args": {"seconds": 1, "steps": 2}},
            }
        },
    },
    "responses": {
        "202": _json(_ref("Submitted"), "Queued", headers={"Location": _header("Location")}),
        "200": {
            "description": "The same job again (same id, name and args): as when it was "
            "queued; with `Accept: text/event-stream` any submit answers with the stream",
            "content": {"application/json": {"schema": _ref("Submitted")}, **_EVENT_STREAM},
        },
        **_errors(400, 401, 409, 413, 422, 429, 503),
    },
}

_JOB_PATH: Schema = {
    "parameters": [{"$ref": "#/components/parameters/JobId"}],
    "get": {
        "operationId": "getJob",
        "summary": "The job's state snapshot (API key of its submitter, or its watch token)",
        "security": _KEY_OR_TOKEN,
        "parameters": [{"$ref": "#/components/parameters/Token"}],
        "responses": {
            "200": _json(_ref("JobState"), "The state"),
            **_errors(400, 401, 403, 404, 503),
        },
    },
    "delete": {
        "operationId": "cancelJob",
        "summary": "Cancel the job (API key of its submitter)",
        "security": _KEY_ONLY,
        "responses": {
            "202": _json(_ref("Cancelled"), "Cancelled (it was waiting) or being cancelled"),
            **_errors(400, 401, 404, 409, 503),
        },
    },
}

_STREAM_RESPONSES: Schema = {
    "200": {
        "description": "The events, live, until every job's terminal event",
        "content": _EVENT_STREAM,
    },
    "204": {"description": "Resumed at the terminal event: nothing more will come"},
    **_errors(400, 401, 403, 404, 429, 503),
}

_JOB_EVENTS: Schema = {
    "get": {
        "operationId": "streamJobEvents",
        "summary": "The job's events as Server-Sent Events, resumable",
        "security": _KEY_OR_TOKEN,
        "parameters": [
            {"$ref": "#/components/parameters/JobId"},
            {"$ref": "#/components/parameters/LastEventIdHeader"},
            {"$ref": "#/components/parameters/LastEventIdQuery"},
            {"$ref": "#/components/parameters/Token"},
        ],
        "responses": _STREAM_RESPONSES,
    }
}

_MULTI_EVENTS: Schema = {
    "get": {
        "operationId": "streamEvents",
        "summary": "The events of several jobs on one stream; `id:` is a cursor over all",
        "security": _KEY_OR_TOKEN,
        "parameters": [
            {
                "name": "job",
                "in": "query",
                "required": True,
                "style": "form",
                "explode": True,
                "schema": {
                    "type": "array",
                    "items": _JOB_ID,
                    "minItems": 1,
                    "maxItems": MAX_JOBS,
                },
            },
            {"$ref": "#/components/parameters/LastEventIdHeader"},
            {"$ref": "#/components/parameters/LastEventIdQuery"},
            {"$ref": "#/components/parameters/Token"},
        ],
        "responses": _STREAM_RESPONSES,
    }
}


def _public(operation_id: str, summary: str, responses: Schema) -> Schema:
    return {
        "get": {
            "operationId": operation_id,
            "summary": summary,
            "responses": {**responses, **_errors()},
        }
    }


DOCUMENT: Schema = {
    "openapi": "3.1.0",
    "info": {
        "title": "Jobwire",
        "version": "1",
        "description": "Live, resumable progress of long-running jobs. Errors are JSON "
        "`{error, detail}`. Limits are counted per API key and gateway process.",
    },
    "paths": {
        "/jobs": {"post": _SUBMIT},
        "/jobs/{job_id}": _JOB_PATH,
        "/jobs/{job_id}/events": _JOB_EVENTS,
        "/events": _MULTI_EVENTS,
        "/catalog": {
            "get": {
                "operationId": "getCatalog",
                "summary": "The jobs the workers run, for the web page",
                "security": _KEY_ONLY,
                "responses": {"200": _json(_ref("Catalog"), "By name"), **_errors(401, 503)},
            }
        },
        "/healthz": _public(
            "healthz", "The process serves requests", {"200": _json(_ref("Health"), "Alive")}
        ),
        "/readyz": _public(
            "readyz",
            "Redis answers; how many workers are alive",
            {
                "200": _json(_ref("Readiness"), "Ready"),
                "503": _json(_ref("Readiness"), "Redis unreachable"),
            },
        ),
        "/openapi.json": _public(
            "openapi", "This document", {"200": _json({"type": "object"}, "OpenAPI 3.1")}
        ),
        "/": _public(
            "page",
            "The web page (its API key comes in the URL fragment: /#key=...)",
            {"200": {"description": "HTML", "content": {"text/html": {"schema": {}}}}},
        ),
        "/static/{path}": {
            "get": {
                "operationId": "staticFile",
                "summary": "The web page's files",
                "parameters": [
                    {
                        "name": "path",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "maxLength": 1_024},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "The file",
                        "content": {
                            media_type: {"schema": {}}
                            for media_type in ("text/html", "text/css", "text/javascript")
                        },
                    },
                    **_errors(400, 404),
                },
            }
        },
    },
    "components": {
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "An API key (JOBWIRE_API_KEYS), or for reading one job, its "
                "watch token",
            }
        },
        "parameters": _PARAMETERS,
        "headers": _HEADERS,
        "schemas": _SCHEMAS,
    },
}


async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(DOCUMENT)
