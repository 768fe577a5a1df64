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

A stream GET whose position the hub's ring vouches for (most of a reconnect storm) is answered
here as its head ends, without uvicorn's request cycle, task or ASGI call: the app's
`stream_in_ring` (`gateway.endpoints.dispatch`) gives the response, this protocol writes its
head with the first frames and holds the stream, and writes uvicorn's access line (naming the
client a trusted proxy forwarded, as uvicorn's middleware would). Anything else (another
route, a pipelined request, an upgrade) goes to uvicorn as usual. Measured in
bench/README.md ("Stream requests the ring answers alone").

Why a head needs a time limit: uvicorn arms no timer until a first response is sent (its
keep-alive timeout only covers the silence after one, and any byte cancels it), so a
connection that trickles a head, or never speaks, would be held for ever — slowloris, which
ties up a descriptor per connection until the open-file limit refuses everyone.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import httptools
import orjson
from uvicorn.config import Config
from uvicorn.logging import TRACE_LOG_LEVEL
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.protocols.utils import (
    get_client_addr,
    get_local_addr,
    get_path_with_query_string,
    get_remote_addr,
    is_ssl,
)
from uvicorn.server import ServerState

from gateway.engine.connection import TRANSPORT_EXTENSION, TransportConnection
from gateway.engine.response import HEADERS, EventStreamResponse

__all__ = [
    "MAX_HEADERS",
    "MAX_HEAD_BYTES",
    "GatewayServerState",
    "HeadDeadlines",
    "LeanFlowControl",
    "StreamInRing",
    "StreamingHttpProtocol",
    "forwarded_addresses",
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


def _request_parser(protocol: HttpToolsProtocol) -> httptools.HttpRequestParser:
    """A parser as uvicorn's protocol makes one."""
    parser = httptools.HttpRequestParser(protocol)
    # As uvicorn: answer the first of pipelined requests sent after a close.
    parser.set_dangerous_leniencies(lenient_data_after_close=True)
    return parser


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


# A stream GET's scope: its response and request id when the ring answers it alone, else None
# (`gateway.endpoints.dispatch.GatewayApp.stream_in_ring`).
StreamInRing = Callable[[dict[str, Any]], tuple[EventStreamResponse, str] | None]

_REQUEST_ID = b"x-request-id"


class GatewayServerState(ServerState):
    """What uvicorn shares between one server's connections, the heads they await (None: no
    time limit) and the app's answer to stream requests the ring vouches for."""

    def __init__(
        self,
        head_deadlines: HeadDeadlines | None,
        stream_in_ring: StreamInRing | None = None,
        forwarded: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        super().__init__()
        self.head_deadlines = head_deadlines
        self.stream_in_ring = stream_in_ring
        # What uvicorn's proxy-headers middleware does to the scopes of the ASGI path (the
        # client a trusted proxy names), for the access lines of streams the ring answers.
        self.forwarded = forwarded


def forwarded_addresses(trusted_hosts: list[str] | str) -> Callable[[dict[str, Any]], None]:
    """Rewrites a scope's client as uvicorn's `ProxyHeadersMiddleware` would for `trusted_hosts`:
    the middleware itself, run in place for what it does to the scope."""
    middleware = ProxyHeadersMiddleware(_nothing, trusted_hosts)

    def rewrite(scope: dict[str, Any]) -> None:
        call = middleware(scope, _never, _never)  # type: ignore[arg-type]
        # It awaits only the app, which returns at once: one step runs it to its end.
        try:
            call.send(None)
        except StopIteration:
            return
        call.close()
        raise RuntimeError("uvicorn's proxy-headers middleware waited for something")

    return rewrite


async def _nothing(scope: Any, receive: Any, send: Any) -> None:
    pass


async def _never(*_: Any) -> Any:
    raise RuntimeError("not an ASGI call")


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
        "in_message",
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
        self.in_message = False  # the parser is inside a request: it must be kept
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

    @property
    def _stream_in_ring(self) -> StreamInRing | None:
        state = self.server_state
        return state.stream_in_ring if isinstance(state, GatewayServerState) else None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # uvicorn's, but for the two addresses, asked of the socket only once a request needs
        # them (`_addressed`): a system call each, paid by every reconnect of a storm, while
        # a stream the ring answers needs neither unless its access line is written.
        self.connections.add(self)
        self.transport = transport
        self.scheme = "https" if is_ssl(transport) else "http"
        if self.logger.level <= TRACE_LOG_LEVEL:
            self._addressed(None)
            prefix = f"{self.client[0]}:{self.client[1]} - " if self.client else ""
            self.logger.log(TRACE_LOG_LEVEL, "%sHTTP connection made", prefix)
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
        parser: httptools.HttpRequestParser | None = self.parser
        if parser is None:  # let go while a stream was held (`_release_parser`)
            self.parser = _request_parser(self)
        super().data_received(data)
        # A head that has not ended yet must not grow without bound.
        if head.in_head and head.head_bytes > MAX_HEAD_BYTES and not head.too_large:
            self._refuse_head()
        self._release_parser()

    def _release_parser(self) -> None:
        """A held stream's connection lets its parser go (0.9 KB with its callbacks) between
        requests; the client's next bytes, if any, get a new one."""
        state = self._state
        if state.held is not None and not state.in_message and not self.transport.is_closing():
            self.parser = None  # type: ignore[assignment]

    def on_message_begin(self) -> None:
        super().on_message_begin()
        head = self._state
        head.in_message = True
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
        if not self._answered_in_ring():
            self._addressed(self.scope)
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._holding():  # a held stream reads no body
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._holding():
            super().on_message_complete()
        self._state.in_message = False
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

    # -- stream requests the ring answers ---------------------------------------------------

    def _answered_in_ring(self) -> bool:
        """Answers the request whose head just ended if it is a stream GET the hub's ring
        vouches for; False, and nothing done, for any other."""
        stream_in_ring = self._stream_in_ring
        scope: dict[str, Any] = self.scope  # type: ignore[assignment]
        parser = self.parser
        if (
            stream_in_ring is None
            or parser.get_method() != b"GET"
            or parser.should_upgrade()
            or (self.cycle is not None and not self.cycle.response_complete)  # pipelined
            or self.limit_concurrency is not None
            or self.root_path
        ):
            return False
        url = httptools.parse_url(self.url)
        path = url.path.decode("ascii")
        if "%" in path:
            return False
        scope.update(method="GET", path=path, raw_path=url.path, query_string=url.query or b"")
        http_version = parser.get_http_version()
        if http_version != "1.1":
            scope["http_version"] = http_version
        # The request's id and log lines live in a context of its own, as in uvicorn's task.
        context = contextvars.copy_context()
        try:
            answer = context.run(stream_in_ring, scope)
        except Exception:  # a fault here must cost speed, never the answer
            self.logger.exception("a stream request could not be answered from the ring")
            return False
        if answer is None:
            return False
        response, request_id = answer
        keep_alive = http_version != "1.0" and parser.should_keep_alive()
        context.run(self._log_access, scope)
        connection = self._state.connection
        assert connection is not None
        connection.keep_head(self._head(request_id, keep_alive))
        task = self.loop.create_task(response.held(connection), context=context)
        held = _HeldResponse(keep_alive, disconnected=False)
        self.cycle = held  # type: ignore[assignment]
        self._keep(held, task)
        self.scope = None  # type: ignore[assignment]
        self.headers = None  # type: ignore[assignment]
        self.url = b""
        return True

    def _holding(self) -> bool:
        """Whether the response being answered is a held stream."""
        cycle: object = self.cycle
        return isinstance(cycle, _HeldResponse)

    def _addressed(self, scope: Any) -> None:
        """The connection's two addresses, asked of the socket the first time, put in `scope`
        (uvicorn's `on_message_begin` put what it had: None before the first time)."""
        if self.client is None:
            self.server = get_local_addr(self.transport)
            self.client = get_remote_addr(self.transport)
        if scope is not None:
            scope["server"] = self.server
            scope["client"] = self.client

    def _logs_access(self) -> bool:
        return self.access_log and self.access_logger.isEnabledFor(logging.INFO)

    def _log_access(self, scope: dict[str, Any]) -> None:
        """uvicorn's access line, as its cycle writes it when a response starts."""
        if self._logs_access():
            self._addressed(scope)
            state = self.server_state
            if isinstance(state, GatewayServerState) and state.forwarded is not None:
                state.forwarded(scope)
            self.access_logger.info(
                '%s - "%s %s HTTP/%s" %d',
                get_client_addr(scope),  # type: ignore[arg-type]
                scope["method"],
                get_path_with_query_string(scope),  # type: ignore[arg-type]
                scope["http_version"],
                200,
            )

    def _head(self, request_id: str, keep_alive: bool) -> bytes:
        """A held stream's response head, as uvicorn's cycle writes it."""
        headers = [*self.server_state.default_headers, *HEADERS]
        headers.append((_REQUEST_ID, request_id.encode("latin-1")))
        lines = [STATUS_LINE[200], *(b"%b: %b\r\n" % header for header in headers)]
        if not keep_alive:
            lines.append(b"connection: close\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)

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
        if self.scope is cycle.scope:  # the request's objects are not kept for the stream
            self.scope = None  # type: ignore[assignment]
            self.headers = None  # type: ignore[assignment]
            self.url = b""
        if self.cycle is cycle:
            self.cycle = held  # type: ignore[assignment]
        self._keep(held, task)
        self._release_parser()

    def _keep(self, held: _HeldResponse, task: asyncio.Task[None]) -> None:
        self._state.held = held
        # uvicorn's shutdown waits for the server's tasks: this one too, as for a request's.
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
