"""One pub/sub connection of the hub (`Shard`): to the Redis node serving a set of watched
jobs' live channels — on one Redis, the one connection; on a Redis Cluster, one per master
whose slots hold watched jobs. The reader (`gateway.engine.reader`) decides which feeds a
shard carries and handles what it reads.

Deliberate oddities:
- A bare redis-py connection, not redis-py's `PubSub`: SSUBSCRIBE and SUNSUBSCRIBE are sent
  without waiting, their confirmations read by the loop here, one command per channel (a
  cluster refuses one SSUBSCRIBE naming channels of several slots).
- Any change of where the shard's channels live — a MOVED reply, or a `sunsubscribe` it did
  not ask for (a node sends one for each channel of a slot it no longer serves, as when it
  becomes a replica) — is handled as a lost connection: the connection is dropped, every feed
  here forgets it was subscribed, the reader reads the slot map again and moves the feeds
  now served elsewhere, and the rest are subscribed again here, each caught up from its last
  delivered id once confirmed. Such changes are rare; one path for all of them is what keeps
  them exact.
- A shard whose last feed left (or moved) closes its connection and ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as AbstractConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.engine.counters import GatewayCounters
from gateway.engine.feed import Feed
from gateway.engine.shardmap import ShardMap

__all__ = ["READY_WITHIN_S", "Shard", "ShardMoved"]

logger = logging.getLogger("jobwire.hub")

_RECONNECT_BACKOFF_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)
# A shard that ran this long before it failed starts its backoff afresh.
_HEALTHY_RUN_S = 10.0
# How long pub/sub may be down (reconnecting) before the gateway stops saying it is ready.
READY_WITHIN_S = 5.0

Message = tuple[bytes, bytes, object]  # kind, channel, data


class ShardMoved(Exception):
    """Where this shard's channels live changed (MOVED, or an unasked `sunsubscribe`)."""


class Shard:
    def __init__(
        self,
        node: str,
        shards: ShardMap,
        handle: Callable[[Shard, Message], Awaitable[None]],
        reroute: Callable[[Shard], Awaitable[None]],
        connected: Callable[[Shard, AbstractConnection], Awaitable[None]],
        counters: GatewayCounters,
    ) -> None:
        self.node = node
        self.feeds: dict[bytes, Feed] = {}  # by live channel
        self._shards = shards
        self._handle = handle
        self._reroute = reroute
        self._connected_hook = connected
        self._counters = counters
        self._connection: AbstractConnection | None = None
        self._connected = False
        self._unsubscribing: Counter[bytes] = Counter()  # SUNSUBSCRIBEs awaiting their reply
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[None] | None = None
        self.running = False
        self.down_since: float | None = time.monotonic()  # not connected yet
        self._attempt = 0

    @property
    def ready(self) -> bool:
        """Reading, and connected or reconnecting for less than READY_WITHIN_S."""
        down_since = self.down_since
        return self.running and (
            down_since is None or time.monotonic() - down_since < READY_WITHIN_S
        )

    def start(self) -> None:
        task = self._loop.create_task(self._run(), name=f"jobwire-hub-shard-{self.node}")
        # A task that ended holds its traceback, whose frames hold this shard: holding the
        # task past its end would make a cycle, which the gateway's frozen GC never collects.
        task.add_done_callback(self._forget_task)
        self._task = task

    def add(self, feed: Feed) -> None:
        self.feeds[feed.channel] = feed
        self._command("SSUBSCRIBE", feed.channel)

    def remove(self, feed: Feed) -> None:
        """Stop carrying `feed`; the last one out ends the shard."""
        if self.feeds.pop(feed.channel, None) is None:
            return
        if self._command("SUNSUBSCRIBE", feed.channel):
            self._unsubscribing[feed.channel] += 1
        if not self.feeds:
            self.stop()

    def stop(self) -> None:
        task = self._task
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def close(self) -> None:
        self.feeds.clear()
        task = self._task
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._disconnect()

    def _forget_task(self, task: asyncio.Task[None]) -> None:
        if self._task is task:
            self._task = None

    # -- the loop -------------------------------------------------------------------------

    async def _run(self) -> None:
        """Read while the shard carries feeds; a failure of its own restarts it with backoff."""
        failures = 0
        try:
            while self.feeds:
                started = time.monotonic()
                self.running = True
                try:
                    await self._read_while_needed()
                except Exception:
                    self.running = False
                    self._lost()
                    if time.monotonic() - started > _HEALTHY_RUN_S:
                        failures = 0
                    delay = backoff(failures)
                    failures += 1
                    logger.exception("pub/sub reader failed; restarting it in %.2fs", delay)
                    await asyncio.sleep(delay)
        finally:
            self.running = False
            await self._disconnect()

    async def _read_while_needed(self) -> None:
        while self.feeds:
            try:
                await self._connect()
                await self._read_messages()
            except (AbstractConnectionError, RedisTimeoutError, OSError, ShardMoved) as exc:
                self._lost()
                self._counters.pubsub_reconnects += 1
                delay = backoff(self._attempt)
                self._attempt += 1
                logger.warning(
                    "pub/sub connection to %s lost (%s); reconnecting in %.2fs",
                    self.node,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                await self._reroute(self)  # feeds now served elsewhere move there

    async def _connect(self) -> None:
        await self._disconnect()
        # Held before it connects, so `_disconnect` closes it however this ends: redis-py
        # leaves the socket open when its handshake is cancelled (the shard stopped meanwhile).
        self._connection = connection = self._shards.connection_to(self.node)
        await connection.connect()  # type: ignore[no-untyped-call]
        await self._connected_hook(self, connection)
        self._connected = True
        self.down_since = None
        self._unsubscribing.clear()
        if self.feeds:
            commands = [("SSUBSCRIBE", channel) for channel in self.feeds]
            await connection.send_packed_command(connection.pack_commands(commands), False)

    async def _read_messages(self) -> None:
        connection = self._connection
        assert connection is not None
        while self.feeds:
            try:
                message = await connection.read_response()
            except ResponseError as exc:  # refused: MOVED, or the cluster is down
                raise ShardMoved(str(exc)) from None
            if isinstance(message, list) and len(message) >= 3:
                kind, channel = message[0], message[1]
                if kind == b"sunsubscribe" and self._unasked(channel):
                    raise ShardMoved(f"{self.node} no longer serves {channel!r}")
                if kind == b"ssubscribe":
                    self._attempt = 0  # a confirmed subscription: the node serves its slot
                await self._handle(self, (kind, channel, message[2]))

    def _unasked(self, channel: bytes) -> bool:
        """Whether a `sunsubscribe` of `channel` came from the node rather than from us."""
        if self._unsubscribing[channel] > 0:
            self._unsubscribing[channel] -= 1
            return False
        return channel in self.feeds

    def _lost(self) -> None:
        """Pub/sub may have missed messages: each feed catches up once subscribed again."""
        if self.down_since is None:
            self.down_since = time.monotonic()
        self._connected = False
        for feed in self.feeds.values():
            feed.subscribed.clear()
            feed.binding = None

    def _command(self, *args: str | bytes) -> bool:
        """Send an SSUBSCRIBE or SUNSUBSCRIBE; its confirmation is read by `_read_messages`.
        While the connection is down nothing is sent (False): reconnecting subscribes to every
        channel the shard then carries."""
        connection = self._connection
        if connection is None or not self._connected:
            return False
        self._loop.create_task(self._send(connection, *args))
        return True

    async def _send(self, connection: AbstractConnection, *args: str | bytes) -> None:
        if not connection.is_connected:
            # Dropped since (the shard stopped or reconnects, and subscribes anew): redis-py
            # would connect it again to send, and leave that socket open, its answer unread.
            return
        try:
            await connection.send_command(*args, check_health=False)
        except (RedisError, OSError) as exc:
            logger.warning("pub/sub %s to %s failed: %s", args[0], self.node, exc)
            await connection.disconnect()  # the shard reconnects and subscribes again

    async def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        self._connected = False
        if connection is not None:
            await connection.disconnect()


def backoff(attempt: int) -> float:
    return _RECONNECT_BACKOFF_S[min(attempt, len(_RECONNECT_BACKOFF_S) - 1)]
