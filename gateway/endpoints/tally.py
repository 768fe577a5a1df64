"""Counting the requests a gateway answers (`RequestTally`): by route template, method and
status, so the metric's series stay as few as the routes whatever paths clients send.

A request is counted when its response starts, so an event stream counts when it opens, not
hours later when it ends. What no route matched (a 404, a refused CORS preflight) counts as
route `other`.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.routing import BaseRoute, Mount, Route
from starlette.types import Message, Scope, Send

from gateway.engine.counters import GatewayCounters

__all__ = ["UNMATCHED", "RequestTally"]

UNMATCHED = "other"


class RequestTally:
    def __init__(self, counters: GatewayCounters, routes: Sequence[BaseRoute]) -> None:
        self._counters = counters
        self._templates: dict[object, str] = {}
        for route in routes:
            if isinstance(route, Route):
                self._templates[route.endpoint] = route.path
            elif isinstance(route, Mount):
                self._templates[route.app] = route.path + "/{path}"

    def counting(self, scope: Scope, send: Send) -> Send:
        """`send`, counting the request when its response starts."""

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.count(scope, message["status"])
            await send(message)

        return counted

    def count(self, scope: Scope, status: int) -> None:
        # The router (or the stream dispatch) put the matched endpoint in the scope.
        route = self._templates.get(scope.get("endpoint"), UNMATCHED)
        self._counters.requests[(route, scope["method"], status)] += 1
