"""uvicorn's httptools protocol, offering event streams a direct write path and bounding what a
request's head may be, in size and in time.

Given to uvicorn through its documented `http=` option (`gateway.processes.server`). Each
request's ASGI scope gets the extension `jobwire.transport`: a `TransportConnection` on this
socket, which the hub writes pre-framed bytes to without a task or the middleware stack in
between. Every
other request is served exactly as by uvicorn's own protocol, except that a request line plus
headers over `MAX_HEAD_BYTES`, or more than `MAX_HEADERS` headers, is answered 431 and the
connection closed (uvicorn's httptools protocol would accept any size); and, under
`GatewayServer`, a head must arrive within `JOBWIRE_HEAD_TIMEOUT_S` (`HeadDeadlines`).

Why a head needs a time limit: uvicorn arms no timer until a first response is sent (its
keep-alive timeout only covers the silence after one, and any byte cancels it), so a
connection that trickles a head, or never speaks, would be held for ever — slowloris, which
ties up a descriptor per connection until the open-file limit refuses everyone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import orjson
from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from gateway.engine.connection import TRANSPORT_EXTENSION, TransportConnection

__all__ = [
    "MAX_HEADERS",
    "MAX_HEAD_BYTES",
    "GatewayServerState",
    "HeadDeadlines",
    "LeanFlowControl",
    "StreamingHttpProtocol",
]

MAX_HEAD_BYTES = 64 * 1024
MAX_HEADERS = 100
# The sweep runs this often, or four times per head time limit when that is shorter: a late
# head is cut within a quarter of the limit past it.
MAX_SWEEP_INTERVAL_S = 1.0


def _refusal(status_line: bytes, error: str, detail: str) -> bytes:
    """A whole response that ends the connection: the status, a JSON error, `connection: close`."""
    body = orjson.dumps({"error": error, "detail": detail})
    head = b"HTTP/1.1 %b\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
    return head % (status_line, len(body)) + b"connection: close\r\n\r\n" + body


_TOO_LARGE = _refusal(
    b"431 Request Header Fields Too Large",
    "headers_too_large",
    f"at most {MAX_HEADERS} headers and {MAX_HEAD_BYTES} bytes of request head",
)


class _HeadTooLarge(Exception):
    """Raised inside the parser to stop it; answered with 431."""


class HeadDeadlines:
    """The connections of one server whose request head is still arriving, oldest first, and
    the periodic sweep that ends those that took longer than `limit_s`.

    A head's time runs from the connection's opening, or for a later request on a kept-alive
    connection from its first byte, to the end of its headers. A timer per request would cost
    every request a `call_later` and a cancel; here a head costs a dict insert and a pop, and
    one sweep per `sweep_interval_s` looks only at heads past their limit: heads are noted in
    the order they began, so it stops at the first one still in time. Nothing is done while a
    response is being sent on the connection, so a held event stream is never cut (its
    client's next head, if it sends one, is timed once the stream has ended).
    """

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self.sweep_interval_s = min(MAX_SWEEP_INTERVAL_S, limit_s / 4)
        self._began: dict[StreamingHttpProtocol, float] = {}
        self.timed_out_response = _refusal(
            b"408 Request Timeout",
            "request_timeout",
            f"the request head did not arrive within {limit_s:g} s",
        )

    def __len__(self) -> int:
        return len(self._began)

    def begin(self, protocol: StreamingHttpProtocol) -> None:
        """`protocol` awaits a head from now, unless it already did."""
        if protocol not in self._began:
            self._began[protocol] = time.monotonic()

    def end(self, protocol: StreamingHttpProtocol) -> None:
        self._began.pop(protocol, None)

    def sweep(self) -> int:
        """Ends the connections whose head is late; how many it ended."""
        deadline = time.monotonic() - self.limit_s
        late: list[StreamingHttpProtocol] = []
        for protocol, began in self._began.items():
            if began > deadline:
                break
            late.append(protocol)
        ended = 0
        for protocol in late:
            if protocol.end_late_head(self.timed_out_response):
                self.end(protocol)
                ended += 1
        return ended

    async def run(self) -> None:
        """Sweeps until cancelled."""
        while True:
            await asyncio.sleep(self.sweep_interval_s)
            self.sweep()


class GatewayServerState(ServerState):
    """What uvicorn shares between one server's connections, and the heads they await."""

    def __init__(self, head_deadlines: HeadDeadlines) -> None:
        super().__init__()
        self.head_deadlines = head_deadlines


class LeanFlowControl(FlowControl):
    """uvicorn's `FlowControl` without its `asyncio.Event`: an event holds a deque of waiters
    (about 700 bytes) for the life of every connection, though only a stream whose client
    reads slowly ever waits. Here a waiter's future is made when one waits."""

    def __init__(self, transport: asyncio.Transport) -> None:  # no super(): no event
        self._transport = transport
        self.read_paused = False
        self.write_paused = False
        self._drainers: list[asyncio.Future[None]] | None = None

    async def drain(self) -> None:
        if not self.write_paused:
            return
        drained: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._drainers is None:
            self._drainers = []
        self._drainers.append(drained)
        await drained

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        if not self.write_paused:
            return
        self.write_paused = False
        drainers, self._drainers = self._drainers, None
        for drained in drainers or ():
            if not drained.done():
                drained.set_result(None)


class _Pipeline(list[Any]):
    """The requests pipelined behind the one being answered, as uvicorn queues them
    (`appendleft`, `pop`). A deque allocates a block of 64 slots (about 600 bytes) per
    connection; an empty list allocates nothing, and pipelining is rare."""

    __slots__ = ()

    def appendleft(self, item: Any) -> None:
        self.insert(0, item)


class _HeadSink:
    """Stands for the transport in uvicorn's cycle while it writes a held stream's head."""

    __slots__ = ("connection",)

    def __init__(self, connection: TransportConnection) -> None:
        self.connection = connection

    def write(self, data: bytes) -> None:
        self.connection.keep_head(data)


class _Unawaited:
    """uvicorn sets its cycle's `message_event` when the connection is lost; nobody waits on a
    held response's."""

    __slots__ = ()

    def set(self) -> None:
        pass


class _HeldResponse:
    """Stands for uvicorn's `RequestResponseCycle` while an event stream is held: what the
    protocol's callbacks read and set on a cycle, without the request's scope, body buffer,
    event and ASGI task."""

    __slots__ = ("disconnected", "keep_alive", "response_complete")
    message_event = _Unawaited()

    def __init__(self, keep_alive: bool, disconnected: bool) -> None:
        self.keep_alive = keep_alive  # uvicorn's shutdown() clears it
        self.disconnected = disconnected
        self.response_complete = False


class _ConnectionState:
    """What this protocol adds to uvicorn's per connection: the direct write path, and how much
    of a request head has arrived and whether it is too big.

    One slotted object rather than attributes of the protocol, whose instance dict then keeps
    within CPython's shared keys (29 names): with one name more each connection's dict is
    built in full, 1.5 KB instead of 0.3."""

    __slots__ = (
        "connection",
        "corked",
        "head_bytes",
        "header_count",
        "held",
        "in_head",
        "parsed_head_bytes",
        "too_large",
    )

    def __init__(self) -> None:
        self.connection: TransportConnection | None = None
        self.corked: RequestResponseCycle | None = None  # the cycle whose head is being kept
        self.held: _HeldResponse | None = None
        self.head_bytes = 0  # received while the head has not ended: all of it is head
        self.parsed_head_bytes = 0  # the request line and headers the parser has seen
        self.header_count = 0
        self.in_head = True
        self.too_large = False


class StreamingHttpProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # Every name set here, so every connection's instance dict shares its keys (see
        # _ConnectionState): uvicorn sets `url` later, per request.
        self.url = b""
        self.pipeline = _Pipeline()  # type: ignore[assignment]
        self._state = _ConnectionState()

    @property
    def _heads(self) -> HeadDeadlines | None:
        """The server's head deadlines; None under another server than GatewayServer, where
        heads have no time limit (uvicorn's way)."""
        state = self.server_state
        return state.head_deadlines if isinstance(state, GatewayServerState) else None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.flow = LeanFlowControl(transport)
        self._state.connection = TransportConnection(transport, self.flow, self)
        heads = self._heads
        if heads is not None:
            heads.begin(self)  # a connection that never speaks is timed too

    def data_received(self, data: bytes) -> None:
        head = self._state
        if head.in_head:
            head.head_bytes += len(data)
            heads = self._heads
            if heads is not None:
                heads.begin(self)
        super().data_received(data)
        # A head that has not ended yet must not grow without bound.
        if head.in_head and head.head_bytes > MAX_HEAD_BYTES and not head.too_large:
            self._refuse_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        head = self._state
        head.in_head = True
        head.header_count = 0
        head.parsed_head_bytes = 0
        scope: dict[str, Any] = self.scope  # type: ignore[assignment]
        scope["extensions"] = {TRANSPORT_EXTENSION: self._state.connection}

    def on_url(self, url: bytes) -> None:
        self._state.parsed_head_bytes += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        head = self._state
        head.header_count += 1
        head.parsed_head_bytes += len(name) + len(value) + 4
        if head.header_count > MAX_HEADERS or head.parsed_head_bytes > MAX_HEAD_BYTES:
            head.too_large = True
            raise _HeadTooLarge
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._state.in_head = False
        heads = self._heads
        if heads is not None:
            heads.end(self)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._state.in_head = True
        self._state.head_bytes = 0

    def send_400_response(self, msg: str) -> None:
        if self._state.too_large:
            self._refuse_head()
        else:
            super().send_400_response(msg)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        heads = self._heads
        if heads is not None:
            heads.end(self)
        if self._state.connection is not None:
            self._state.connection.connection_lost()

    # -- held streams (gateway.engine.connection.ResponseHolder) ---------------------------

    def cork(self, scope: Mapping[str, Any]) -> bool:
        cycle = self.cycle
        # A request pipelined behind the stream's took the protocol's cycle: not held.
        if cycle is None or cycle.scope is not scope or cycle.response_started:
            return False
        connection = self._state.connection
        assert connection is not None
        self._state.corked = cycle
        cycle.transport = _HeadSink(connection)  # type: ignore[assignment]
        return True

    def uncork(self) -> None:
        cycle = self._state.corked
        if cycle is not None:
            cycle.transport = self.transport

    def hold(self, task: asyncio.Task[None]) -> None:
        cycle, self._state.corked = self._state.corked, None
        if cycle is None:
            return
        held = _HeldResponse(cycle.keep_alive, cycle.disconnected)
        # Nothing more goes through uvicorn's cycle: its task returns without a complaint.
        cycle.response_complete = True
        if self.cycle is cycle:
            self.cycle = held  # type: ignore[assignment]
        if self.scope is cycle.scope:  # the request's objects are not kept for the stream
            self.scope = None  # type: ignore[assignment]
            self.headers = None  # type: ignore[assignment]
            self.url = b""
        self._state.held = held
        # uvicorn's shutdown waits for the server's tasks: this one too, as for the request's.
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def end_held(self, last: bytes) -> None:
        held, self._state.held = self._state.held, None
        if held is None or self.transport.is_closing():
            return
        # As uvicorn's cycle ends a response: the last chunk, then close or the next request.
        self.transport.write(last)
        held.response_complete = True
        if not held.keep_alive:
            self.transport.close()
        self.on_response_complete()

    def end_late_head(self, answer: bytes) -> bool:
        """Ends this connection, whose head is late: with `answer` (a 408) if some of it came,
        quietly if nothing did. False, and nothing done, while a response is being sent."""
        if self.cycle is not None and not self.cycle.response_complete:
            return False
        if not self.transport.is_closing():
            if self._state.head_bytes:
                self.transport.write(answer)
            self.transport.close()
        return True

    def _refuse_head(self) -> None:
        self._state.too_large = True
        if not self.transport.is_closing():
            self.transport.write(_TOO_LARGE)
            self.transport.close()
