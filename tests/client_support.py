"""A TCP proxy a test can cut, to lose the network between a client and the gateway on cue.

`cut()` aborts every open connection at once, both ways, the way a dropped Wi-Fi or a killed
load balancer does; the proxy keeps listening, so the client's next attempt gets through.
`answer_with` makes it answer every new connection itself (a 502 from a proxy mid-deploy)
without reaching the gateway. Every request head a client sent is kept in `requests`.
`CutsOnCue` follows a stream through one, cutting it after given numbers of events.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from jobwire.client import ConnectionState, JobEvent

__all__ = ["CutsOnCue", "CuttableProxy", "running_proxy"]

_HEAD_END = b"\r\n\r\n"


@dataclass(eq=False)
class _Connection:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.transport.abort()


@dataclass
class CuttableProxy:
    target_url: str
    answer_with: bytes | None = None
    requests: list[bytes] = field(default_factory=list)
    cuts: int = 0
    _server: asyncio.Server | None = None
    _open: set[_Connection] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    @property
    def open_connections(self) -> int:
        return len(self._open)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        self._abort_all()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def cut(self) -> None:
        self.cuts += 1
        self._abort_all()

    def _abort_all(self) -> None:
        for connection in list(self._open):
            connection.abort()
        self._open.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        connection = _Connection(writer)
        self._open.add(connection)
        try:
            head = await reader.readuntil(_HEAD_END)
            self.requests.append(head)
            if self.answer_with is not None:
                writer.write(self.answer_with)
                await writer.drain()
                return
            target = urlsplit(self.target_url)
            assert target.hostname is not None
            assert target.port is not None
            upstream_reader, connection.upstream = await asyncio.open_connection(
                target.hostname, target.port
            )
            connection.upstream.write(head + await _body(reader, head))
            async with asyncio.TaskGroup() as pipes:
                pipes.create_task(self._requests(reader, connection.upstream))
                pipes.create_task(_pipe(upstream_reader, writer))
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._open.discard(connection)
            connection.abort()
            self._tasks.discard(task)

    async def _requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The client's further requests on a kept-alive connection, each head recorded."""
        try:
            while True:
                head = await reader.readuntil(_HEAD_END)
                self.requests.append(head)
                writer.write(head + await _body(reader, head))
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.transport.abort()


async def _body(reader: asyncio.StreamReader, head: bytes) -> bytes:
    for line in head.lower().split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return await reader.readexactly(int(line.split(b":", 1)[1]))
    return b""


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except OSError:
        pass  # the other side was cut
    finally:
        # One side is done: end the other too (HTTP here never half-closes on purpose).
        writer.transport.abort()


@contextlib.asynccontextmanager
async def running_proxy(target_url: str) -> AsyncIterator[CuttableProxy]:
    proxy = CuttableProxy(target_url)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()


@dataclass
class CutsOnCue:
    """What a consumer saw through `proxy` while it cut the live connection once the events
    seen reached each of `cut_after` (a connection already lost is left to come back first).
    Pass `on_connection` to the stream and `saw` every event it yields."""

    proxy: CuttableProxy
    cut_after: list[int]
    seen: list[JobEvent] = field(default_factory=list)
    states: list[ConnectionState] = field(default_factory=list)
    lost_after: list[int] = field(default_factory=list)  # events seen when each was lost

    def on_connection(self, state: ConnectionState) -> None:
        self.states.append(state)
        if not state.connected:
            self.lost_after.append(len(self.seen))

    def saw(self, event: JobEvent) -> None:
        self.seen.append(event)
        if self.cut_after and len(self.seen) >= self.cut_after[0] and self.states[-1].connected:
            self.cut_after.pop(0)
            self.proxy.cut()

    @property
    def resumed_from(self) -> list[str | None]:
        """The last event id seen before each loss: where each reconnect must resume."""
        return [self.seen[count - 1].id if count else None for count in self.lost_after]
