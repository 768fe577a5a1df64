"""A fault-injecting TCP proxy for tests: the network between a client and the gateway, going
wrong on purpose.

Each connection through a `FaultProxy` follows a `FaultPlan` drawn from the proxy's seeded
random generator, in the order connections arrive: so a client that owns a proxy (one per
client, connecting one at a time) meets the same faults at the same byte offsets on every run
with the same seed. A plan is a few steps, each at a byte offset of one direction:

- `stall`: the bytes stop for a moment, then flow again (a congested or flapping link);
- `cut`: both sides are closed at once, with a RST or a FIN (a dropped connection);
- `half-close`: one side gets a FIN while the other stays open (a proxy or NAT giving up on
  one direction): toward the client it sees the response end mid-body; toward the gateway it
  sees its client hang up.

Offsets in the request direction cut a request in the middle; offsets in the response
direction land in the headers, in the middle of an event, or between two events.
`FaultStats` counts the faults that really fired (a plan whose offset lies beyond the end of the
response fires nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import random
import socket
import struct
from dataclasses import dataclass, field

__all__ = ["Direction", "FaultAction", "FaultPlan", "FaultProxy", "FaultStats", "FaultStep"]

_CHUNK = 65_536


class Direction(enum.Enum):
    REQUEST = "request"  # client -> gateway
    RESPONSE = "response"  # gateway -> client


class FaultAction(enum.Enum):
    STALL = "stall"
    CUT = "cut"
    HALF_CLOSE = "half-close"


@dataclass(frozen=True, slots=True)
class FaultStep:
    offset: int  # bytes of `direction` that pass before the step
    action: FaultAction
    direction: Direction = Direction.RESPONSE
    stall_s: float = 0.0
    reset: bool = False  # a cut sends RST rather than FIN
    toward_client: bool = True  # which side a half-close closes


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """The steps of one connection, in offset order; after a cut or half-close nothing else."""

    steps: tuple[FaultStep, ...] = ()

    @classmethod
    def draw(cls, rng: random.Random, *, max_offset: int, fault_rate: float) -> FaultPlan:
        if rng.random() >= fault_rate:
            return cls()
        if rng.random() < 0.1:
            # Requests are a couple of hundred bytes: cut one somewhere inside.
            offset = rng.randint(0, 150)
            return cls((FaultStep(offset, FaultAction.CUT, Direction.REQUEST, reset=True),))
        steps: list[FaultStep] = []
        offset = 0
        if rng.random() < 0.3:
            offset = rng.randint(0, max_offset // 2)
            steps.append(FaultStep(offset, FaultAction.STALL, stall_s=rng.uniform(0.02, 0.3)))
        end = rng.randint(offset, max_offset)
        if rng.random() < 0.7:
            steps.append(FaultStep(end, FaultAction.CUT, reset=rng.random() < 0.5))
        else:
            toward_client = rng.random() < 0.5
            steps.append(FaultStep(end, FaultAction.HALF_CLOSE, toward_client=toward_client))
        return cls(tuple(steps))


@dataclass
class FaultStats:
    connections: int = 0
    cuts: int = 0
    stalls: int = 0
    half_closes: int = 0

    @property
    def faults(self) -> int:
        return self.cuts + self.stalls + self.half_closes

    def count(self, action: FaultAction) -> None:
        if action is FaultAction.CUT:
            self.cuts += 1
        elif action is FaultAction.STALL:
            self.stalls += 1
        else:
            self.half_closes += 1


class _Cut(Exception):
    """A step ended the connection."""


@dataclass
class _Connection:
    client_reader: asyncio.StreamReader
    client_writer: asyncio.StreamWriter
    server_reader: asyncio.StreamReader
    server_writer: asyncio.StreamWriter
    plan: FaultPlan
    stats: FaultStats
    passed: dict[Direction, int] = field(
        default_factory=lambda: {Direction.REQUEST: 0, Direction.RESPONSE: 0}
    )
    # A direction half-closed by a step: what still arrives for it is dropped.
    shut: set[Direction] = field(default_factory=set)
    _next_step: int = 0

    async def run(self) -> None:
        pumps = [
            asyncio.create_task(
                self._pump(self.client_reader, self.server_writer, Direction.REQUEST)
            ),
            asyncio.create_task(
                self._pump(self.server_reader, self.client_writer, Direction.RESPONSE)
            ),
        ]
        try:
            done, _ = await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if isinstance(task.exception(), _Cut):
                    return
            await asyncio.gather(*pumps)
        except (OSError, _Cut):
            pass
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            for writer in (self.client_writer, self.server_writer):
                writer.transport.abort()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: Direction
    ) -> None:
        while True:
            try:
                chunk = await reader.read(_CHUNK)
            except OSError:
                chunk = b""
            if not chunk:
                # Pass the end on, as a TCP proxy does, and keep the other direction going.
                if direction not in self.shut:
                    self.shut.add(direction)
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                return
            await self._forward(chunk, writer, direction)

    async def _forward(
        self, chunk: bytes, writer: asyncio.StreamWriter, direction: Direction
    ) -> None:
        while chunk:
            step = self._step_for(direction)
            if step is None:
                await self._write(writer, chunk, direction)
                return
            before = step.offset - self.passed[direction]
            if before >= len(chunk):
                await self._write(writer, chunk, direction)
                return
            await self._write(writer, chunk[:before], direction)
            chunk = chunk[before:]
            self._next_step += 1
            self.stats.count(step.action)
            await self._apply(step)

    def _step_for(self, direction: Direction) -> FaultStep | None:
        if self._next_step >= len(self.plan.steps):
            return None
        step = self.plan.steps[self._next_step]
        return step if step.direction is direction else None

    async def _write(self, writer: asyncio.StreamWriter, data: bytes, direction: Direction) -> None:
        if data and direction not in self.shut:
            writer.write(data)
            await writer.drain()
            self.passed[direction] += len(data)

    async def _apply(self, step: FaultStep) -> None:
        if step.action is FaultAction.STALL:
            await asyncio.sleep(step.stall_s)
            return
        if step.action is FaultAction.CUT:
            if step.reset:
                _reset(self.client_writer)
                _reset(self.server_writer)
            raise _Cut
        if step.toward_client:
            # The client sees the response end here; the gateway's side is dropped.
            with contextlib.suppress(OSError):
                self.client_writer.write_eof()
            _reset(self.server_writer)
            raise _Cut
        # The gateway sees its client hang up; whatever it still sends is passed on.
        self.shut.add(Direction.REQUEST)
        with contextlib.suppress(OSError):
            self.server_writer.write_eof()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST instead of FIN (SO_LINGER 0)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    """Listens on a free local port and relays each connection to `upstream`, faults and all."""

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        seed: str,
        stats: FaultStats | None = None,
        max_offset: int = 4_000,
        fault_rate: float = 0.9,
    ) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._rng = random.Random(seed)
        self._max_offset = max_offset
        self._fault_rate = fault_rate
        self.stats = stats if stats is not None else FaultStats()
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def next_plan(self) -> FaultPlan:
        return FaultPlan.draw(self._rng, max_offset=self._max_offset, fault_rate=self._fault_rate)

    async def _accept(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        plan = self.next_plan()
        self.stats.connections += 1
        server_writer: asyncio.StreamWriter | None = None
        try:
            server_reader, server_writer = await asyncio.open_connection(*self._upstream)
            connection = _Connection(
                client_reader, client_writer, server_reader, server_writer, plan, self.stats
            )
            await connection.run()
        except OSError:
            pass
        finally:
            self._connections.discard(task)
            for writer in (client_writer, server_writer):
                if writer is not None:
                    writer.transport.abort()
