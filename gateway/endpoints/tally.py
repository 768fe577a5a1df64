"""Counting the requests a gateway answers (`RequestTally`): by route template, method and
status, so the metric's series stay as few as the routes whatever paths clients send.

A request is counted when its response starts, so an event stream counts when it opens, not
hours later when it ends. A WebSocket stream counts as a GET when its handshake is answered:
101 when accepted, else the refusal's status (`count_socket`). What no route matched (a 404,
a refused CORS preflight) counts as route `other`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from starlette.routing import BaseRoute, Mount, Route
from starlette.types import Message, Scope, Send

from gateway.engine.counters import GatewayCounters

__all__ = ["ACCEPTED_SOCKET", "UNMATCHED", "RequestTally"]

UNMATCHED = "other"
ACCEPTED_SOCKET = 101  # Switching Protocols: the status of an accepted WebSocket handshake


class RequestTally:
    def __init__(self, counters: GatewayCounters, routes: Sequence[BaseRoute]) -> None:
        self._counters = counters
        self._templates: dict[object, str] = {}
        # An endpoint that serves several routes (the plain GET of both WebSocket routes), or
        # one no route names (the WebSocket streams, dispatched by the app itself), is told
        # apart by its path.
        self._paths: list[tuple[re.Pattern[str], str]] = []
        shared: set[object] = set()
        for route in routes:
            endpoint: object
            if isinstance(route, Route):
                endpoint, template = route.endpoint, route.path
            elif isinstance(route, Mount):
                endpoint, template = route.app, route.path + "/{path}"
            else:
                continue
            self._paths.append((route.path_regex, template))
            if self._templates.setdefault(endpoint, template) != template:
                shared.add(endpoint)
        for endpoint in shared:
            del self._templates[endpoint]

    def counting(self, scope: Scope, send: Send) -> Send:
        """`send`, counting the request when its response starts."""

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.count(scope, message["status"])
            await send(message)

        return counted

    def count(self, scope: Scope, status: int) -> None:
        self._counters.requests[(self._route(scope), scope["method"], status)] += 1

    def count_socket(self, scope: Scope, status: int) -> None:
        """A WebSocket handshake answered: `ACCEPTED_SOCKET`, or the refusal's status."""
        self._counters.requests[(self._route(scope), "GET", status)] += 1

    def _route(self, scope: Scope) -> str:
        # The router (or the stream dispatch) put the matched endpoint in the scope.
        endpoint = scope.get("endpoint")
        if endpoint is None:
            return UNMATCHED
        template = self._templates.get(endpoint)
        if template is not None:
            return template
        path: str = scope["path"]
        for pattern, template in self._paths:
            if pattern.match(path):
                return template
        return UNMATCHED
