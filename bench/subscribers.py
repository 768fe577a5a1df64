"""A load-generating process holding thousands of subscribers, over SSE or WebSocket
(`python -m bench.subscribers`).

Each subscriber is one raw asyncio protocol: no HTTP client library, no task per connection.
The response body (identity or chunked) is cut into SSE frames at the last blank line of each
read, and one regular expression pulls every frame's `id:`, sequence number and send time out
of the whole batch at once — the per-event cost stays a few microseconds, so this process is
not what limits a run.

This is deliberately not `jobwire.client.sse`, the client's WHATWG parser: that one takes any
line ending, field order and event size, line by line, and each event's JSON must then be
decoded — about 7.5 µs per event on this machine against 1.5 µs for the one regular
expression here: a quarter of a core more at 40,000 events/s, taken from the target on 2
shared cores. It is specialised instead: it expects what every target here sends — `\\n`
line endings, `id:` before `data:`, and a `data:` line holding `"seq":<n>,"t":<µs>` (the
bench's event data), after `"job":"<id>"` (the envelope's order). Frames without them
(`retry:`, comments, `reset`) are skipped; `reset` events are counted.

A subscriber watches one job (`GET /jobs/<id>/events`) or several on one stream
(`GET /events?job=…`, `MultiSubscriber`), and checks each job's sequence: an event whose
number is not the job's previous one plus one is a gap (counted by how many were skipped) or a
duplicate. It resumes with the `id:` of the last event it got (on a multi-job stream, the
composite cursor). Latency is receive time minus the send time the publisher put in the event,
on the shared wall clock of this machine.

Over WebSocket (wires `ws` and `ws-nchan`: Jobwire's `/jobs/<id>/ws`, `/events/ws`, and Nchan's
`nchan_subscriber websocket` with its `ws+meta.nchan` subprotocol, which puts `id:` before
each message), the same protocol sends the handshake, expects 101, and cuts the read into
frames (server frames are unmasked, so a header and a slice each); the text payloads of one
read are joined by newlines and go through one regular expression as above. A ping gets its
pong. Resuming sends `Last-Event-ID` in the handshake, which both targets take (a browser
would put it in the query, `?last_event_id=`).
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct
import sys
import time
from array import array
from base64 import b64encode
from typing import Any, cast

import uvloop

from bench.channel import Handler, raise_open_file_limit, serve

__all__ = [
    "FRAME",
    "FRAME_OF_JOB",
    "WIRES",
    "MultiSubscriber",
    "MultiWebSocketSubscriber",
    "Subscriber",
    "SubscriberPool",
    "WebSocketSubscriber",
    "main",
]

FRAME = re.compile(rb'id: ([^\n]+)\n(?:event: [^\n]*\n)?data: [^\n]*?"seq":(\d+),"t":(\d+)')
# The same, naming the event's job: frames of a multi-job stream.
FRAME_OF_JOB = re.compile(
    rb'id: ([^\n]+)\n(?:event: [^\n]*\n)?data: [^\n]*?"job":"([^"]+)"[^\n]*?"seq":(\d+),"t":(\d+)'
)
_RESET = b"event: reset"
# Jobwire's WebSocket message: `{"id": …, "type": …, "data": <envelope>}`, compact JSON.
WS_FRAME = re.compile(rb'\{"id":"([^"]+)","type":"[^"]*","data":[^\n]*?"seq":(\d+),"t":(\d+)')
WS_FRAME_OF_JOB = re.compile(
    rb'\{"id":"([^"]+)","type":"[^"]*","data":[^\n]*?"job":"([^"]+)"[^\n]*?"seq":(\d+),"t":(\d+)'
)
_WS_RESET = b'{"type":"reset"'
# Nchan's `ws+meta.nchan` message: `id: <id>\n[content-type: …\n]\n<the published body>`.
NCHAN_WS_FRAME = re.compile(
    rb'id: ([^\n]+)\n(?:content-type: [^\n]*\n)?\n[^\n]*?"seq":(\d+),"t":(\d+)'
)
# Formats of a stream on the wire: (pattern, pattern naming the job, reset marker, status).
WIRES: dict[str, tuple[re.Pattern[bytes], re.Pattern[bytes] | None, bytes | None, int]] = {
    "sse": (FRAME, FRAME_OF_JOB, _RESET, 200),
    "ws": (WS_FRAME, WS_FRAME_OF_JOB, _WS_RESET, 101),
    "ws-nchan": (NCHAN_WS_FRAME, None, None, 101),
}
_WS_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="  # any 16 bytes in base64: nothing here is secret
_OP_TEXT, _OP_BINARY, _OP_PING = 0x1, 0x2, 0x9
_HEADER_END = b"\r\n\r\n"
_NEVER = sys.maxsize
# Closing with SO_LINGER 0 sends RST: like a lost network, and no TIME_WAIT on our side, so
# repeated storms of thousands of reconnects never run out of local ports.
_LINGER_RST = struct.pack("ii", 1, 0)

CONNECT_TIMEOUT_S = 30.0
HEADERS_TIMEOUT_S = 30.0


class Subscriber(asyncio.Protocol):
    """One SSE connection to one job's stream; all counters live in its pool."""

    __slots__ = (
        "_buffer",
        "_chunk_left",
        "_chunk_skip",
        "_chunked",
        "_head",
        "_in_body",
        "_pending",
        "behind",
        "closing",
        "job",
        "last_id",
        "last_seq",
        "pool",
        "ready",
        "stream",
        "transport",
    )

    def __init__(self, pool: SubscriberPool, stream: int, job: int) -> None:
        self.pool = pool
        self.stream = stream  # which of the pool's requests it sends
        self.job = job
        self.last_seq = 0
        self.last_id: bytes | None = None
        self.behind = False
        self.transport: asyncio.Transport | None = None
        self.closing = False
        self.ready: asyncio.Future[bool] | None = None
        self._reset_parser()

    def _reset_parser(self) -> None:
        self._head = b""
        self._in_body = False
        self._chunked = False
        self._chunk_left = 0
        self._chunk_skip = 0
        self._pending = b""
        self._buffer = b""

    def open(self) -> asyncio.Future[bool]:
        self._reset_parser()
        self.closing = False
        self.ready = asyncio.get_running_loop().create_future()
        return self.ready

    @property
    def held(self) -> bool:
        return self.transport is not None and self._in_body

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.pool.connections += 1
        request = self.pool.requests[self.stream]
        if self.last_id is not None:
            request = request[:-2] + b"Last-Event-ID: " + self.last_id + b"\r\n\r\n"
        self.transport.write(request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.closing:
            self.pool.closed_unexpectedly += 1
        self._settle(False, "closed before headers")
        self.pool.connection_closed()

    def abort(self) -> None:
        transport = self.transport
        if transport is None:
            return
        self.closing = True
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        transport.abort()

    def data_received(self, data: bytes) -> None:
        if not self._in_body:
            data = self._read_head(data)
            if not data:
                return
        if self._chunked:
            data = self._dechunk(data)
        if self._buffer:
            data = self._buffer + data
        end = data.rfind(b"\n\n")
        if end < 0:
            self._buffer = data
            return
        self._buffer = data[end + 2 :]
        self._frames(data[: end + 1])

    def _read_head(self, data: bytes) -> bytes:
        head = self._head + data
        end = head.find(_HEADER_END)
        if end < 0:
            self._head = head
            return b""
        self._head = b""
        status_line, _, headers = head[:end].partition(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        if status != self.pool.ok_status:
            self.pool.fail(f"http {status}")
            self._settle(False, None)
            self.closing = True
            if self.transport is not None:
                self.transport.close()
            return b""
        self._chunked = b"transfer-encoding: chunked" in headers.lower()
        self._in_body = True
        self._settle(True, None)
        return head[end + 4 :]

    def _settle(self, ok: bool, failure: str | None) -> None:
        ready = self.ready
        if ready is not None and not ready.done():
            if not ok and failure is not None:
                self.pool.fail(failure)
            ready.set_result(ok)

    def _dechunk(self, data: bytes) -> bytes:
        if not self._pending and not self._chunk_left and not self._chunk_skip:
            # The usual read: exactly one whole chunk (one write of the server).
            line_end = data.find(b"\r\n")
            if 0 < line_end <= 8:
                start = line_end + 2
                end = start + int(data[:line_end], 16)
                if end + 2 == len(data) and end > start:
                    return data[start:end]
        return self._dechunk_any(data)

    def _dechunk_any(self, data: bytes) -> bytes:
        if self._pending:
            data = self._pending + data
            self._pending = b""
        parts: list[bytes] = []
        pos, size = 0, len(data)
        while pos < size:
            if self._chunk_left:
                take = min(self._chunk_left, size - pos)
                parts.append(data[pos : pos + take])
                pos += take
                self._chunk_left -= take
                if not self._chunk_left:
                    self._chunk_skip = 2  # the CRLF closing the chunk
                continue
            if self._chunk_skip:
                take = min(self._chunk_skip, size - pos)
                pos += take
                self._chunk_skip -= take
                continue
            line_end = data.find(b"\r\n", pos)
            if line_end < 0:
                self._pending = data[pos:]
                break
            self._chunk_left = int(data[pos:line_end].split(b";", 1)[0], 16)
            pos = line_end + 2
            if not self._chunk_left:
                break  # the last chunk: the server ends the stream
        return b"".join(parts)

    def _frames(self, complete: bytes) -> None:
        pool = self.pool
        frames = pool.frame.findall(complete)
        if pool.reset_marker is not None and pool.reset_marker in complete:
            pool.resets += complete.count(pool.reset_marker)
        if not frames:
            return
        now = time.time_ns() // 1000
        last = self.last_seq
        first, final = pool.window
        sampling = first != _NEVER
        samples = pool.latencies
        count = 0
        for _, raw_seq, raw_sent in frames:
            seq = int(raw_seq)
            if seq != last + 1:
                if seq <= last:
                    pool.duplicates += 1
                    continue
                pool.gaps += seq - last - 1
            last = seq
            count += 1
            if sampling:
                sent = int(raw_sent)
                if first <= sent <= final:
                    samples.append(now - sent if now > sent else 0)
        if not count:
            return
        self.last_seq = last
        self.last_id = frames[-1][0]
        pool.received += count
        if first <= now <= final:
            pool.window_received += count
        if self.behind and last >= pool.targets[self.job]:
            self.behind = False
            pool.caught_up_one()

    def missing(self, targets: list[int]) -> int:
        """Events of its jobs up to `targets` (per job) it has not received."""
        return max(0, targets[self.job] - self.last_seq)


class MultiSubscriber(Subscriber):
    """One SSE connection to a multi-job stream: a sequence per job, told apart by the job
    each event names."""

    __slots__ = ("seqs",)

    def __init__(self, pool: SubscriberPool, stream: int, jobs: list[int]) -> None:
        super().__init__(pool, stream, jobs[0])
        self.seqs = dict.fromkeys(jobs, 0)

    def _frames(self, complete: bytes) -> None:
        pool = self.pool
        assert pool.frame_of_job is not None, f"{pool.wire}: no multi-job stream"
        frames = pool.frame_of_job.findall(complete)
        if pool.reset_marker is not None and pool.reset_marker in complete:
            pool.resets += complete.count(pool.reset_marker)
        if not frames:
            return
        now = time.time_ns() // 1000
        first, final = pool.window
        sampling = first != _NEVER
        seqs = self.seqs
        count = 0
        for _, raw_job, raw_seq, raw_sent in frames:
            job = pool.job_index[raw_job]
            seq, last = int(raw_seq), seqs[job]
            if seq != last + 1:
                if seq <= last:
                    pool.duplicates += 1
                    continue
                pool.gaps += seq - last - 1
            seqs[job] = seq
            count += 1
            if sampling:
                sent = int(raw_sent)
                if first <= sent <= final:
                    pool.latencies.append(now - sent if now > sent else 0)
        if not count:
            return
        self.last_id = frames[-1][0]
        pool.received += count
        if first <= now <= final:
            pool.window_received += count
        if self.behind and not self.missing(pool.targets):
            self.behind = False
            pool.caught_up_one()

    def missing(self, targets: list[int]) -> int:
        return sum(max(0, targets[job] - seq) for job, seq in self.seqs.items())


class _WebSocketReading(Subscriber):
    """After the upgrade's head, the frames' payloads instead of SSE lines."""

    __slots__ = ()

    def data_received(self, data: bytes) -> None:
        if not self._in_body:
            data = self._read_head(data)
            if not data:
                return
        complete = _messages(self, data)
        if complete:
            self._frames(complete)


class WebSocketSubscriber(_WebSocketReading):
    """One WebSocket to one job's stream."""

    __slots__ = ()


class MultiWebSocketSubscriber(_WebSocketReading, MultiSubscriber):
    """One WebSocket to a multi-job stream (`/events/ws?job=…`)."""

    __slots__ = ()


def _messages(subscriber: Subscriber, data: bytes) -> bytes:
    """The payloads of the whole frames in what was read, joined by newlines (JSON and Nchan's
    message heads hold none of their own between a message's id and its sequence number); a
    partial frame waits in the subscriber's buffer for the next read. Pings get their pong."""
    if subscriber._buffer:
        data = subscriber._buffer + data
    payloads: list[bytes] = []
    pos, size = 0, len(data)
    while size - pos >= 2:
        opcode, length = data[pos] & 0x0F, data[pos + 1] & 0x7F
        start = pos + 2
        if length == 126:
            start = pos + 4
            length = int.from_bytes(data[pos + 2 : start])
        elif length == 127:
            start = pos + 10
            length = int.from_bytes(data[pos + 2 : start])
        end = start + length
        if end > size:
            break
        if opcode in (_OP_TEXT, _OP_BINARY):
            payloads.append(data[start:end])
        elif opcode == _OP_PING and subscriber.transport is not None:
            # A client's frames are masked; a zero mask leaves the payload as it is.
            pong = bytes((0x8A, 0x80 | length)) + b"\0\0\0\0" + data[start:end]
            subscriber.transport.write(pong)
        pos = end
    subscriber._buffer = data[pos:]
    return b"\n".join(payloads)


def _request(wire: str, host: str, port: int, path: str) -> bytes:
    """The request a subscriber sends to open `path`; `Last-Event-ID` goes before its end."""
    head = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    if wire == "sse":
        head += "Accept: text/event-stream\r\nCache-Control: no-cache\r\n"
    else:
        head += (
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {_WS_KEY.decode()}\r\nSec-WebSocket-Version: 13\r\n"
        )
        if wire == "ws-nchan":
            head += "Sec-WebSocket-Protocol: ws+meta.nchan\r\n"
    return (head + "\r\n").encode()


class SubscriberPool:
    """This process's share of the subscribers, and the counters the controller asks for."""

    def __init__(
        self,
        host: str,
        port: int,
        paths: list[str],
        stream_jobs: list[list[int]],
        jobs: list[str],
        indices: range,
        wire: str = "sse",
    ) -> None:
        """Subscriber i opens `paths[i % len(paths)]`, the stream of the jobs (indices into
        `jobs`) at the same place in `stream_jobs`."""
        self.host = host
        self.port = port
        self.wire = wire
        self.frame, self.frame_of_job, self.reset_marker, self.ok_status = WIRES[wire]
        self.requests = [_request(wire, host, port, path) for path in paths]
        self.job_index = {job.encode(): index for index, job in enumerate(jobs)}
        self.subscribers = [_subscriber(self, index % len(paths), stream_jobs) for index in indices]
        self.targets = [_NEVER] * len(jobs)
        self.window = (_NEVER, _NEVER)
        self.latencies = array("I")
        self.received = 0
        self.window_received = 0
        self.gaps = 0
        self.duplicates = 0
        self.resets = 0
        self.closed_unexpectedly = 0
        self.failures: dict[str, int] = {}
        self.behind = 0
        self.caught_up_at = 0.0
        self._all_caught_up = asyncio.Event()
        self.connections = 0
        self._all_closed = asyncio.Event()

    def fail(self, reason: str) -> None:
        self.failures[reason] = self.failures.get(reason, 0) + 1

    def connection_closed(self) -> None:
        self.connections -= 1
        if not self.connections:
            self._all_closed.set()

    def caught_up_one(self) -> None:
        self.behind -= 1
        if not self.behind:
            self.caught_up_at = time.time()
            self._all_caught_up.set()

    @property
    def held(self) -> int:
        return sum(1 for subscriber in self.subscribers if subscriber.held)

    async def connect(self, window: int) -> dict[str, Any]:
        """Open every subscriber that is not open, at most `window` awaiting headers at once."""
        started = time.time()
        slots = asyncio.Semaphore(window)
        closed = [s for s in self.subscribers if s.transport is None]
        await asyncio.gather(*(self._open(subscriber, slots) for subscriber in closed))
        return {"held": self.held, "seconds": time.time() - started, **self.counters()}

    def prune(self) -> int:
        """Forget subscribers that are not streaming (never got in, or were cut off since):
        the figures that follow are for the ones held. Returns how many were dropped."""
        before = len(self.subscribers)
        self.subscribers = [s for s in self.subscribers if s.held]
        return before - len(self.subscribers)

    async def _open(self, subscriber: Subscriber, slots: asyncio.Semaphore) -> None:
        loop = asyncio.get_running_loop()
        # asyncio.timeout, not wait_for: no extra task per connection (a storm opens 10,000).
        async with slots:
            ready = subscriber.open()
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    await loop.create_connection(lambda: subscriber, self.host, self.port)
            except (OSError, TimeoutError) as exc:
                self.fail(f"connect: {type(exc).__name__}")
                return
            try:
                async with asyncio.timeout(HEADERS_TIMEOUT_S):
                    await ready
            except TimeoutError:
                self.fail("no headers in time")
                subscriber.abort()

    async def drop(self, timeout: float) -> dict[str, Any]:
        """Every subscriber loses its connection at once (RST), keeping its position."""
        self._all_closed.clear()
        dropped = 0
        for subscriber in self.subscribers:
            if subscriber.transport is not None:
                subscriber.abort()
                dropped += 1
        if self.connections:
            await asyncio.wait_for(self._all_closed.wait(), timeout)
        return {"dropped": dropped}

    def expect(self, targets: list[int]) -> None:
        """Count the subscribers whose job has events beyond their position."""
        self.targets = targets
        self._all_caught_up.clear()
        self.behind = 0
        for subscriber in self.subscribers:
            subscriber.behind = subscriber.missing(targets) > 0
            self.behind += subscriber.behind
        if not self.behind:
            self.caught_up_at = time.time()
            self._all_caught_up.set()

    async def wait_caught_up(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._all_caught_up.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def missing(self) -> int:
        return sum(s.missing(self.targets) for s in self.subscribers if s.behind)

    def counters(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "gaps": self.gaps,
            "duplicates": self.duplicates,
            "resets": self.resets,
            "closed_unexpectedly": self.closed_unexpectedly,
            "failures": dict(self.failures),
        }

    def take_window(self) -> dict[str, Any]:
        """The measurement window's figures; the window is cleared."""
        samples = self.latencies
        self.latencies = array("I")
        reply = {
            "window_received": self.window_received,
            "latencies": b64encode(samples.tobytes()).decode(),
        }
        self.window_received = 0
        self.window = (_NEVER, _NEVER)
        return reply


def _subscriber(pool: SubscriberPool, stream: int, stream_jobs: list[list[int]]) -> Subscriber:
    jobs = stream_jobs[stream]
    websocket = pool.wire != "sse"
    if len(jobs) == 1:
        return (WebSocketSubscriber if websocket else Subscriber)(pool, stream, jobs[0])
    return (MultiWebSocketSubscriber if websocket else MultiSubscriber)(pool, stream, jobs)


def _handlers(state: dict[str, SubscriberPool], fd_limit: int) -> dict[str, Handler]:
    async def setup(args: dict[str, Any]) -> dict[str, Any]:
        state["pool"] = SubscriberPool(
            args["host"],
            args["port"],
            args["paths"],
            args["stream_jobs"],
            args["jobs"],
            range(args["first"], args["total"], args["step"]),
            args.get("wire", "sse"),
        )
        return {"subscribers": len(state["pool"].subscribers), "fd_limit": fd_limit}

    async def connect(args: dict[str, Any]) -> dict[str, Any]:
        pool = state["pool"]
        reply = await pool.connect(args["window"])
        reply["pruned"] = pool.prune()
        return reply

    async def window(args: dict[str, Any]) -> dict[str, Any]:
        pool = state["pool"]
        pruned = pool.prune()
        pool.latencies = array("I")
        pool.window_received = 0
        pool.window = (args["first_us"], args["final_us"])
        return {"pruned": pruned, "held": len(pool.subscribers)}

    async def drain(args: dict[str, Any]) -> dict[str, Any]:
        pool = state["pool"]
        pool.expect(args["targets"])
        caught_up = await pool.wait_caught_up(args["timeout"])
        return {
            "caught_up": caught_up,
            "behind": pool.behind,
            "missing": pool.missing(),
            "held": pool.held,
            **pool.counters(),
            **pool.take_window(),
        }

    async def drop(args: dict[str, Any]) -> dict[str, Any]:
        return await state["pool"].drop(args["timeout"])

    async def storm(args: dict[str, Any]) -> dict[str, Any]:
        """Reconnect everyone with Last-Event-ID; done when all reached `targets`."""
        pool = state["pool"]
        pool.expect(args["targets"])
        started = time.time()
        connected = await pool.connect(args["window"])
        caught_up = await pool.wait_caught_up(args["timeout"] - (time.time() - started))
        return {
            "started": started,
            "finished": pool.caught_up_at if caught_up else time.time(),
            "caught_up": caught_up,
            "behind": pool.behind,
            "missing": pool.missing(),
            "connect_seconds": connected["seconds"],
            "held": pool.held,
            **pool.counters(),
        }

    async def counters(args: dict[str, Any]) -> dict[str, Any]:
        pool = state["pool"]
        return {"held": pool.held, **pool.counters()}

    return {
        "setup": setup,
        "connect": connect,
        "window": window,
        "drain": drain,
        "drop": drop,
        "storm": storm,
        "counters": counters,
    }


def main() -> None:
    fd_limit = raise_open_file_limit()
    uvloop.run(serve(_handlers({}, fd_limit)))


if __name__ == "__main__":
    main()
