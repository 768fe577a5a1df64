"""`/jobs/{id}/ws` and `/events/ws?job=…`: the event streams over a WebSocket.

The same requests as `GET /jobs/{id}/events` and `GET /events` (`gateway.endpoints.stream`,
`multistream`), read and answered by the same routines: the position is `?last_event_id=`
(a browser cannot set a WebSocket's headers; `Last-Event-ID` works too), the viewer an API key
in `Authorization` or watch tokens (`?token=` or the header). Every refusal (400, 401, 403,
404, 429, 503) is an HTTP answer with its JSON body before the upgrade, through uvicorn's
WebSocket denial response; only an accepted stream is upgraded.

API keys are not taken from the URL: a URL ends up in logs, histories and proxies, and a
key opens every job of its owner. A browser watches with the job's watch token, which opens
that job only and expires.

A browser sends an `Origin` with every WebSocket, and no CORS protects a WebSocket: a page on
any site could open one. One from another origin than the gateway's own (its `Host`), and not
in `JOBWIRE_CORS_ORIGINS`, is refused with 403 — what CORS makes of a cross-site
`EventSource` — which matters when access control is off.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.types import ASGIApp

from gateway.endpoints import multistream, stream
from gateway.endpoints.errors import APIError, error_response
from gateway.endpoints.services import services

__all__ = ["job_socket", "multi_socket", "upgrade_required"]


async def job_socket(connection: HTTPConnection) -> ASGIApp:
    _same_origin(connection)
    return await stream.events(connection)


async def multi_socket(connection: HTTPConnection) -> ASGIApp:
    _same_origin(connection)
    return await multistream.events(connection)


async def upgrade_required(request: Request) -> Response:
    """A plain GET of a WebSocket route."""
    return error_response(
        426,
        "upgrade_required",
        "open this URL as a WebSocket (Upgrade: websocket); the SSE stream is "
        "/jobs/{id}/events, or /events?job=…",
        headers={"Upgrade": "websocket", "Connection": "Upgrade"},
    )


def _same_origin(connection: HTTPConnection) -> None:
    origin = connection.headers.get("origin")
    if origin is None:
        return  # not a browser: no page of another site is behind it
    if origin in services(connection).settings.cors_origin_list:
        return
    if urlsplit(origin).netloc.lower() == connection.headers.get("host", "").lower():
        return
    raise APIError(
        403,
        "origin_refused",
        "a WebSocket from another origin: add it to JOBWIRE_CORS_ORIGINS to allow it",
    )
