"""The Starlette app, with event streams taken past the middleware stack.

A reconnect storm is thousands of stream requests at once, and each held stream keeps its
request's coroutine frames alive for hours: the error and exception middleware, the router
and the endpoint wrapper all stay on its stack. `GET /jobs/{id}/events` and `GET /events`
without an `Origin` header (so no CORS to answer) are therefore dispatched here straight to
their endpoints, with the same error handling; every other request goes through Starlette as
usual. Every request, by either path, gets its request id here (`gateway.endpoints.requestlog`).
HEAD, which Starlette's routes take wherever they take GET, comes here with its GET: the
endpoints answer it with headers alone (`gateway.endpoints.stream.respond`), by either path.

In a reconnect storm most stream GETs resume at a position the hub's ring vouches for: those are
answered without any ASGI call (`stream_in_ring`, called by the server's protocol as the
request's head ends), with the same response, headers, request id and count; anything the ring
cannot answer alone takes the ASGI path (docs/architecture.md, "Stream requests the ring
answers alone").

The same streams over a WebSocket (`/jobs/{id}/ws`, `/events/ws`) are dispatched here too,
whatever their `Origin` (`gateway.endpoints.sockets` checks it): an error is answered with the
same JSON response, which Starlette sends as the WebSocket's HTTP denial, before any upgrade.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.endpoints.requestlog import request_id, tagged_send
from gateway.endpoints.tally import ACCEPTED_SOCKET, RequestTally
from gateway.engine.response import EventStreamResponse

__all__ = ["GatewayApp"]

Endpoint = Callable[[Request], Awaitable[ASGIApp]]
InRingEndpoint = Callable[[HTTPConnection], EventStreamResponse | None]
SocketEndpoint = Callable[[HTTPConnection], Awaitable[ASGIApp]]
ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]

_JOB_EVENTS = re.compile(r"/jobs/([^/]+)/events")
_JOB_SOCKET = re.compile(r"/jobs/([^/]+)/ws")
_METHODS = frozenset({"GET", "HEAD"})


class GatewayApp(Starlette):
    def __init__(
        self,
        *,
        job_events: Endpoint,
        multi_events: Endpoint,
        job_events_in_ring: InRingEndpoint,
        multi_events_in_ring: InRingEndpoint,
        job_socket: SocketEndpoint,
        multi_socket: SocketEndpoint,
        exception_handlers: Mapping[Any, ExceptionHandler],
        tally: RequestTally | None = None,
        **options: Any,
    ) -> None:
        super().__init__(exception_handlers=dict(exception_handlers), **options)
        self._tally = tally
        self._job_events = job_events
        self._multi_events = multi_events
        self._in_ring: dict[Endpoint, InRingEndpoint] = {
            job_events: job_events_in_ring,
            multi_events: multi_events_in_ring,
        }
        self._job_socket = job_socket
        self._multi_socket = multi_socket
        self._handlers = exception_handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            send = tagged_send(send, request_id(scope))
            if self._tally is not None:
                send = self._tally.counting(scope, send)
        elif scope["type"] == "websocket" and self._socket_endpoint(scope):
            await self._serve_socket(scope, receive, send)
            return
        endpoint = self._stream_endpoint(scope)
        if endpoint is None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        request = Request(scope, receive)
        try:
            response = await endpoint(request)
        except Exception as exc:
            response = await self._handler_for(exc)(request, exc)
        await response(scope, receive, send)

    def stream_in_ring(self, scope: Scope) -> tuple[EventStreamResponse, str] | None:
        """A stream GET's response and request id when the hub's ring answers it alone, counted
        as the ASGI path counts it; None, having taken nothing, for any other request. For the
        server's protocol, which writes the head and holds the stream; call it in a context
        of the request's own, where its request id is set."""
        if scope["method"] != "GET":
            return None
        endpoint = self._stream_endpoint(scope)
        if endpoint is None:
            return None
        scope["app"] = self
        response = self._in_ring[endpoint](HTTPConnection(scope))
        if response is None:
            return None
        chosen = request_id(scope)
        if self._tally is not None:
            self._tally.count(scope, 200)
        return response, chosen

    def _stream_endpoint(self, scope: Scope) -> Endpoint | None:
        if scope["type"] != "http" or scope["method"] not in _METHODS:
            return None
        if any(name == b"origin" for name, _ in scope["headers"]):
            return None
        path: str = scope["path"]
        if path == "/events":
            scope["path_params"] = {}
            scope["endpoint"] = self._multi_events  # as Starlette's router would
            return self._multi_events
        match = _JOB_EVENTS.fullmatch(path)
        if match is None:
            return None
        scope["path_params"] = {"job_id": match[1]}
        scope["endpoint"] = self._job_events
        return self._job_events

    def _socket_endpoint(self, scope: Scope) -> bool:
        path: str = scope["path"]
        if path == "/events/ws":
            scope["path_params"] = {}
            scope["endpoint"] = self._multi_socket
            return True
        match = _JOB_SOCKET.fullmatch(path)
        if match is None:
            return False
        scope["path_params"] = {"job_id": match[1]}
        scope["endpoint"] = self._job_socket
        return True

    async def _serve_socket(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id(scope)
        scope["app"] = self
        endpoint: SocketEndpoint = scope["endpoint"]
        try:
            response = await endpoint(HTTPConnection(scope, receive))
        except Exception as exc:
            # The handlers log the request's method and path: a WebSocket opens with a GET.
            as_request = Request({**scope, "type": "http", "method": "GET"}, receive)
            response = await self._handler_for(exc)(as_request, exc)
        if self._tally is not None:
            status = response.status_code if isinstance(response, Response) else ACCEPTED_SOCKET
            self._tally.count_socket(scope, status)
        await response(scope, receive, send)

    def _handler_for(self, exc: Exception) -> ExceptionHandler:
        for cls in type(exc).__mro__:
            if cls in self._handlers:
                return self._handlers[cls]
        raise exc
