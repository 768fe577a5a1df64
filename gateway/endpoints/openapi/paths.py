"""The document's `paths`: every route, who may call it and every answer it gives.

The error answers are written once, in `_ERRORS`; each operation lists the codes it can give.
"""

from __future__ import annotations

from typing import Any

from gateway.endpoints.listing import DEFAULT_LIMIT, MAX_LIMIT
from gateway.endpoints.multistream import MAX_JOBS
from gateway.endpoints.openapi.components import JOB_ID, STATUS, Schema, header_ref, schema_ref
from gateway.endpoints.submission import MAX_IDEMPOTENCY_KEY_CHARS

__all__ = ["PATHS"]

_EVENT_STREAM = {"text/event-stream": {"schema": schema_ref("StreamEvent")}}
_KEY_ONLY: list[dict[str, list[str]]] = [{"bearer": []}]
# A watch token may come as `?token=` instead of the header: the empty requirement says so.
_KEY_OR_TOKEN: list[dict[str, list[str]]] = [{"bearer": []}, {}]
_RESUME_PARAMETERS = [
    {"$ref": "#/components/parameters/LastEventIdHeader"},
    {"$ref": "#/components/parameters/LastEventIdQuery"},
    {"$ref": "#/components/parameters/Token"},
]


def _json(schema: Schema, description: str, **extra: Any) -> Schema:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema}},
        **extra,
    }


def _error(description: str, **extra: Any) -> Schema:
    return _json(schema_ref("Error"), description, **extra)


_ERRORS = {
    400: {
        "description": "Malformed request: the detail says what was wrong. A request the HTTP "
        "server cannot parse at all (a URL over 64 KiB, say) gets its plain-text answer",
        "content": {
            "application/json": {"schema": schema_ref("Error")},
            "text/plain": {"schema": {"type": "string"}},
        },
    },
    401: _error(
        "No credentials, or invalid, expired or revoked ones",
        headers={"WWW-Authenticate": header_ref("WWW-Authenticate")},
    ),
    403: _error("Valid watch tokens, but none is for (one of) the jobs asked for"),
    404: _error("No such job, or one another API key submitted"),
    409: _error("Conflicts with the job's state or id"),
    413: _error("The body is larger than JOBWIRE_MAX_BODY_BYTES"),
    415: _error("The body is not sent as `Content-Type: application/json`"),
    422: _error(
        "`unknown_job`: no job of that name (the detail lists the known ones); `invalid_args`: "
        "arguments its schema (`GET /catalog`) refuses — a wrong type, a value out of bounds, "
        "one it does not take, a required one missing — or names the queue keeps for itself "
        "(`function`, `self`, `ctx`, any starting with `_`): the detail is a list of "
        "`ArgumentProblem`, one per bad field"
    ),
    429: _error(
        "A per-key limit (streams open, stream requests or submits per minute) is reached",
        headers={"Retry-After": header_ref("Retry-After")},
    ),
    # gateway.processes.protocol enforces these (MAX_HEAD_BYTES, MAX_HEADERS); a layer above
    # this one, so they are restated here.
    431: _error("The request line and headers are over 64 KiB, or over 100 headers"),
    503: _error(
        "Redis, where jobs live, cannot be reached just now",
        headers={"Retry-After": header_ref("Retry-After")},
    ),
}


def _errors(*codes: int) -> dict[str, Schema]:
    """The answers to `codes`, and 431, which any request may get."""
    return {str(code): _ERRORS[code] for code in (*codes, 431)}


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
        },
        {
            "$ref": "#/components/parameters/LastEventIdHeader",
            "description": "With `Accept: text/event-stream` and the same Idempotency-Key: "
            "a retried submit-and-stream resumes after this event, as a GET stream does",
        },
    ],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": schema_ref("Submission"),
                "example": {"name": "demo.countdown", "args": {"seconds": 1, "steps": 2}},
            }
        },
    },
    "responses": {
        "202": _json(
            schema_ref("Submitted"), "Queued", headers={"Location": header_ref("Location")}
        ),
        "200": {
            "description": "The same job again (same id, name and args): as when it was "
            "queued; with `Accept: text/event-stream` any submit answers with the stream",
            "content": {"application/json": {"schema": schema_ref("Submitted")}, **_EVENT_STREAM},
        },
        "204": {
            "description": "A submit-and-stream retried with the id of the terminal event as "
            "its Last-Event-ID: nothing more will come"
        },
        **_errors(400, 401, 409, 413, 415, 422, 429, 503),
    },
}

_LIST: Schema = {
    "operationId": "listJobs",
    "summary": "The API key's jobs, newest first, a page at a time; each with its state and a "
    "fresh watch token",
    "security": _KEY_ONLY,
    "parameters": [
        {
            "name": "status",
            "in": "query",
            "description": "only jobs in these statuses (repeat it, or separate with commas)",
            "style": "form",
            "explode": True,
            "schema": {"type": "array", "items": STATUS},
        },
        {
            "name": "name",
            "in": "query",
            "description": "only jobs of this name",
            "schema": {"type": "string", "minLength": 1},
        },
        {
            "name": "limit",
            "in": "query",
            "description": "most jobs in the page",
            "schema": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_LIMIT,
                "default": DEFAULT_LIMIT,
            },
        },
        {
            "name": "cursor",
            "in": "query",
            "description": "`next` of the page before",
            "schema": {"type": "string"},
        },
    ],
    "responses": {
        "200": _json(schema_ref("JobList"), "A page of jobs"),
        **_errors(400, 401, 503),
    },
}

_SYSTEM: Schema = {
    "get": {
        "operationId": "getSystem",
        "summary": "Workers alive, jobs queued and running",
        "security": _KEY_ONLY,
        "responses": {"200": _json(schema_ref("System"), "The figures"), **_errors(401, 503)},
    }
}

_JOB: Schema = {
    "parameters": [{"$ref": "#/components/parameters/JobId"}],
    "get": {
        "operationId": "getJob",
        "summary": "The job's state snapshot (API key of its submitter, or its watch token)",
        "security": _KEY_OR_TOKEN,
        "parameters": [{"$ref": "#/components/parameters/Token"}],
        "responses": {
            "200": _json(schema_ref("JobState"), "The state"),
            **_errors(400, 401, 403, 404, 503),
        },
    },
    "delete": {
        "operationId": "cancelJob",
        "summary": "Cancel the job (API key of its submitter)",
        "security": _KEY_ONLY,
        "responses": {
            "202": _json(schema_ref("Cancelled"), "Cancelled (it was waiting) or being cancelled"),
            **_errors(400, 401, 404, 409, 503),
        },
    },
}

_JOB_TOKENS: Schema = {
    "parameters": [{"$ref": "#/components/parameters/JobId"}],
    "delete": {
        "operationId": "revokeJobTokens",
        "summary": "Revoke every watch token issued for the job so far (API key of its "
        "submitter); streams they opened end. A re-post of the same submit issues a new one",
        "security": _KEY_ONLY,
        "responses": {
            "204": {"description": "Revoked"},
            **_errors(400, 401, 404, 503),
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
        "parameters": [{"$ref": "#/components/parameters/JobId"}, *_RESUME_PARAMETERS],
        "responses": _STREAM_RESPONSES,
    }
}

_JOBS_PARAMETER: Schema = {
    "name": "job",
    "in": "query",
    "required": True,
    "style": "form",
    "explode": True,
    "schema": {"type": "array", "items": JOB_ID, "minItems": 1, "maxItems": MAX_JOBS},
}

_MULTI_EVENTS: Schema = {
    "get": {
        "operationId": "streamEvents",
        "summary": "The events of several jobs on one stream; `id:` is a cursor over all",
        "security": _KEY_OR_TOKEN,
        "parameters": [_JOBS_PARAMETER, *_RESUME_PARAMETERS],
        "responses": _STREAM_RESPONSES,
    }
}

_WEBSOCKET_DESCRIPTION = """Opened as a WebSocket (`Upgrade: websocket`; a plain GET gets 426).
The same events and resume rules as the SSE stream: the position is `?last_event_id=` (or
`Last-Event-ID`), the credential `Authorization: Bearer` or `?token=<watch token>` (API keys
are not taken from the URL). Every refusal is this HTTP answer, before the upgrade. Each
message is one text frame holding one JSON object: `{"id": "<stream id, or the cursor of a
multi-job stream>", "type": "<event type>", "data": <the event's envelope>}`; `reset` and
`stalled` come without `id`; after every job's terminal event, `{"type": "end"}` and close code
1000 (at once when resumed at the terminal event). Other close codes: 1012 the gateway is
shutting down and 1013 the job store was unavailable (reconnect from your last id), 4401 the
watch token was revoked. A connection dropped without a close frame was too slow or lost:
reconnect from your last id. Messages from the client are ignored; idle streams get pings."""

_WEBSOCKET_RESPONSES: Schema = {
    "101": {"description": "Switching to the WebSocket stream"},
    "426": _error("Not a WebSocket handshake"),
    **_errors(400, 401, 403, 404, 429, 503),
}

_JOB_SOCKET: Schema = {
    "get": {
        "operationId": "streamJobEventsOverWebSocket",
        "summary": "The job's events over a WebSocket, resumable",
        "description": _WEBSOCKET_DESCRIPTION,
        "security": _KEY_OR_TOKEN,
        "parameters": [{"$ref": "#/components/parameters/JobId"}, *_RESUME_PARAMETERS],
        "responses": _WEBSOCKET_RESPONSES,
    }
}

_MULTI_SOCKET: Schema = {
    "get": {
        "operationId": "streamEventsOverWebSocket",
        "summary": "The events of several jobs over one WebSocket; `id` is a cursor over all",
        "description": _WEBSOCKET_DESCRIPTION,
        "security": _KEY_OR_TOKEN,
        "parameters": [_JOBS_PARAMETER, *_RESUME_PARAMETERS],
        "responses": _WEBSOCKET_RESPONSES,
    }
}

_CATALOG: Schema = {
    "get": {
        "operationId": "getCatalog",
        "summary": "The jobs the workers run, for the web page",
        "security": _KEY_ONLY,
        "responses": {"200": _json(schema_ref("Catalog"), "By name"), **_errors(401, 503)},
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


_STATIC: Schema = {
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
}

_DOCS_ASSET: Schema = {
    "get": {
        "operationId": "docsAsset",
        "summary": "The files of the /docs page (Swagger UI's script, styles and icons)",
        "parameters": [
            {
                "name": "name",
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
                    for media_type in ("text/css", "text/javascript", "image/png")
                },
            },
            **_errors(404),
        },
    }
}

PATHS: Schema = {
    "/jobs": {"post": _SUBMIT, "get": _LIST},
    "/jobs/{job_id}": _JOB,
    "/jobs/{job_id}/events": _JOB_EVENTS,
    "/jobs/{job_id}/tokens": _JOB_TOKENS,
    "/events": _MULTI_EVENTS,
    "/jobs/{job_id}/ws": _JOB_SOCKET,
    "/events/ws": _MULTI_SOCKET,
    "/catalog": _CATALOG,
    "/system": _SYSTEM,
    "/healthz": _public(
        "healthz", "The process serves requests", {"200": _json(schema_ref("Health"), "Alive")}
    ),
    "/readyz": _public(
        "readyz",
        "Redis answers; how many workers are alive",
        {
            "200": _json(schema_ref("Readiness"), "Ready"),
            "503": _json(schema_ref("Readiness"), "Redis unreachable, or live delivery down"),
        },
    ),
    "/openapi.json": _public(
        "openapi", "This document", {"200": _json({"type": "object"}, "OpenAPI 3.1")}
    ),
    "/metrics": {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics: open to loopback, else JOBWIRE_METRICS_KEY or an API "
            "key as a Bearer token",
            "responses": {
                "200": {
                    "description": "Prometheus's text format",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                **_errors(401),
            },
        }
    },
    "/": _public(
        "page",
        "The web page (its API key comes in the URL fragment: /#key=...)",
        {"200": {"description": "HTML", "content": {"text/html": {"schema": {}}}}},
    ),
    "/static/{path}": _STATIC,
    "/docs": _public(
        "docs",
        "This document as an interactive page (Swagger UI, served by the gateway itself)",
        {"200": {"description": "HTML", "content": {"text/html": {"schema": {}}}}},
    ),
    "/docs/assets/{name}": _DOCS_ASSET,
}
