"""The hub's one pub/sub connection (`PubSubReader`): subscribed to the live channel of each
watched job, it hands every announced event to the hub's dispatch.

Deliberate oddities:
- It is a bare redis-py connection, not redis-py's `PubSub`: (UN)SUBSCRIBE is sent without
  waiting, its confirmation read by the loop here; and nothing is read while no job is
  watched, since nothing would arrive and cancelling a pending read drops the connection.
- Pub/sub does not replay what it missed. After a (re)subscribe is confirmed the reader reads
  the job's stream from the last id the feed delivered (a catch-up) before it sets
  `Feed.subscribed`, which is what a joining subscriber waits on; the hub drops overlaps by id.
  A lost connection is reopened with backoff (50 ms up to 2 s) and every watched channel is
  subscribed again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as AbstractConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.engine.entry import Entry
from gateway.engine.feed import Feed
from shared.keys import Keys
from shared.streamid import StreamId

__all__ = ["PubSubReader"]

logger = logging.getLogger("jobwire.hub")

CATCH_UP_BATCH = 500
_RECONNECT_BACKOFF_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)


class PubSubReader:
    def __init__(self, redis: Redis, keys: Keys, dispatch: Callable[[Feed, Entry], None]) -> None:
        self._redis = redis
        self._keys = keys
        self._dispatch = dispatch
        self._by_channel: dict[bytes, Feed] = {}
        self._connection: AbstractConnection | None = None
        self._connected = asyncio.Event()
        self._has_feeds = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    def subscribe(self, feed: Feed) -> None:
        self._by_channel[feed.channel] = feed
        self._has_feeds.set()
        self._command("SUBSCRIBE", feed.channel)

    def unsubscribe(self, feed: Feed) -> None:
        del self._by_channel[feed.channel]
        if not self._by_channel:
            self._has_feeds.clear()
        self._command("UNSUBSCRIBE", feed.channel)

    async def close(self) -> None:
        """Forget every feed and drop the connection (after `read_forever` was cancelled)."""
        self._by_channel.clear()
        if self._connection is not None:
            await self._connection.disconnect()

    async def read_forever(self) -> None:
        attempt = 0
        while True:
            try:
                await self._connect()
                attempt = 0
                await self._read_messages()
            except (AbstractConnectionError, RedisTimeoutError, OSError) as exc:
                self._connected.clear()
                for feed in self._by_channel.values():
                    feed.subscribed.clear()
                delay = _RECONNECT_BACKOFF_S[min(attempt, len(_RECONNECT_BACKOFF_S) - 1)]
                attempt += 1
                logger.warning("pub/sub connection lost (%s); reconnecting in %.2fs", exc, delay)
                await asyncio.sleep(delay)

    def _command(self, *args: str | bytes) -> None:
        """Send a (UN)SUBSCRIBE; its confirmation is read by `read_forever`. While the
        connection is down nothing is sent: reconnecting subscribes to every channel."""
        if self._connection is not None and self._connected.is_set():
            self._loop.create_task(self._send_command(self._connection, *args))

    async def _send_command(self, connection: AbstractConnection, *args: str | bytes) -> None:
        try:
            await connection.send_command(*args, check_health=False)
        except (RedisError, OSError) as exc:
            logger.warning("pub/sub %s failed: %s", args[0], exc)
            await connection.disconnect()  # the reader reconnects and subscribes again

    async def _connect(self) -> None:
        if self._connection is not None:
            await self._connection.disconnect()
        pool = self._redis.connection_pool
        connection: AbstractConnection = pool.connection_class(**pool.connection_kwargs)
        connection.health_check_interval = 0
        await connection.connect()  # type: ignore[no-untyped-call]
        self._connection = connection
        self._connected.set()
        if self._by_channel:
            await connection.send_command("SUBSCRIBE", *self._by_channel, check_health=False)

    async def _read_messages(self) -> None:
        assert self._connection is not None
        connection = self._connection
        while True:
            await self._has_feeds.wait()
            message = await connection.read_response()
            if isinstance(message, list) and len(message) >= 3:
                await self._on_message(message[0], message[1], message[2])

    async def _on_message(self, kind: bytes, channel: bytes, data: object) -> None:
        feed = self._by_channel.get(channel)
        if feed is None:
            return
        if kind == b"message" and isinstance(data, bytes):
            raw_id, _, payload = data.partition(b" ")
            self._dispatch(feed, Entry.of(raw_id, payload))
        elif kind == b"subscribe" and not feed.subscribed.is_set():
            await self._catch_up(feed)
            feed.subscribed.set()

    async def _catch_up(self, feed: Feed) -> None:
        """Read what pub/sub may have missed since the feed's last event."""
        start = _catch_up_start(feed)
        if start is None:
            return
        key = self._keys.events(feed.job_id)
        while True:
            entries = await self._redis.xrange(key, f"({start}", "+", count=CATCH_UP_BATCH)
            for raw_id, fields in entries:
                self._dispatch(feed, Entry.of(raw_id, fields[b"e"]))
            if len(entries) < CATCH_UP_BATCH:
                return
            start = StreamId.parse(entries[-1][0])


def _catch_up_start(feed: Feed) -> StreamId | None:
    """The feed's last event; before its first, the earliest position a subscriber that
    joined ahead of it has (it must not miss what comes after); None: nothing to catch up."""
    if feed.last_id is not None:
        return feed.last_id
    positions = [s.cursor[feed.job_id] for s in feed.ahead]
    known = [position for position in positions if position is not None]
    return min(known) if known else None
