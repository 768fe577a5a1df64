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
  subscribed again. Should the reader fail for any other reason (a bug), it logs why and
  starts again the same way, with the same backoff; `ready` is False until it runs again.
- Anyone who can reach Redis can publish on a live channel. What is not an event the hub can
  deliver is skipped and counted (`BadEntryLog`), never allowed to stop the reader. An id
  later than Redis's clock cannot be one XADD just made (`RedisClock`): believed, it would
  move the feed past every real event up to it, so it is looked up in the stream first.
- The live channel also carries `revoked <generation>` when the job's watch tokens are revoked
  (`shared.publish`); it goes to the hub's `revoke`, not its dispatch. A notice missed while
  the connection was down cannot be read back, so each feed then forgets who may watch its
  job, and the next token resume checks the job's state in Redis.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as AbstractConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.engine.counters import GatewayCounters
from gateway.engine.entry import BadEntry, BadEntryLog, Entry
from gateway.engine.feed import Feed
from shared.keys import Keys
from shared.publish import REVOKED_NOTICE
from shared.streamid import StreamId

__all__ = ["READY_WITHIN_S", "PubSubReader", "RedisClock"]

logger = logging.getLogger("jobwire.hub")

CATCH_UP_BATCH = 500
_RECONNECT_BACKOFF_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)
# A reader that ran this long before it failed starts its backoff afresh.
_HEALTHY_RUN_S = 10.0
# How long pub/sub may be down (reconnecting) before the gateway stops saying it is ready.
READY_WITHIN_S = 5.0
# Drift allowed between Redis's clock and ours since it was read; past it, a real id only
# costs a lookup and a fresh reading.
_CLOCK_SLACK_MS = 20
_CLOCK_FRESH_S = 1.0


class PubSubReader:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        dispatch: Callable[[Feed, Entry], None],
        revoke: Callable[[Feed, int], None],
        bad_entries: BadEntryLog,
        counters: GatewayCounters,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._dispatch = dispatch
        self._revoke = revoke
        self._by_channel: dict[bytes, Feed] = {}
        self._connection: AbstractConnection | None = None
        self._connected = asyncio.Event()
        self._has_feeds = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._bad_entries = bad_entries
        self._counters = counters
        self._clock = RedisClock()
        self._running = False
        self._down_since: float | None = time.monotonic()  # not connected yet

    @property
    def ready(self) -> bool:
        """Reading, and connected or reconnecting for less than READY_WITHIN_S."""
        down_since = self._down_since
        return self._running and (
            down_since is None or time.monotonic() - down_since < READY_WITHIN_S
        )

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
        """Forget every feed and drop the connection (after `run` was cancelled)."""
        self._by_channel.clear()
        if self._connection is not None:
            await self._connection.disconnect()

    async def run(self) -> None:
        """Read until cancelled; a failure of the reader itself restarts it with backoff."""
        failures = 0
        try:
            while True:
                started = time.monotonic()
                self._running = True
                try:
                    await self._read_forever()
                except Exception:
                    self._running = False
                    self._lost()
                    if time.monotonic() - started > _HEALTHY_RUN_S:
                        failures = 0
                    delay = _backoff(failures)
                    failures += 1
                    logger.exception("pub/sub reader failed; restarting it in %.2fs", delay)
                    await asyncio.sleep(delay)
        finally:
            self._running = False

    async def _read_forever(self) -> None:
        attempt = 0
        while True:
            try:
                await self._connect()
                attempt = 0
                await self._read_messages()
            except (AbstractConnectionError, RedisTimeoutError, OSError) as exc:
                self._lost()
                self._counters.pubsub_reconnects += 1
                delay = _backoff(attempt)
                attempt += 1
                logger.warning("pub/sub connection lost (%s); reconnecting in %.2fs", exc, delay)
                await asyncio.sleep(delay)

    def _lost(self) -> None:
        """Pub/sub may have missed messages: each feed catches up once subscribed again."""
        if self._down_since is None:
            self._down_since = time.monotonic()
        self._connected.clear()
        for feed in self._by_channel.values():
            feed.subscribed.clear()
            feed.binding = None

    def _command(self, *args: str | bytes) -> None:
        """Send a (UN)SUBSCRIBE; its confirmation is read by `_read_messages`. While the
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
        await self._read_clock(connection)
        self._connected.set()
        self._down_since = None
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
            await self._on_announcement(feed, data)
        elif kind == b"subscribe" and not feed.subscribed.is_set():
            await self._catch_up(feed)
            feed.subscribed.set()

    async def _on_announcement(self, feed: Feed, data: bytes) -> None:
        """`<id> <event json>` as the publish script sends it, or a revocation notice."""
        raw_id, _, payload = data.partition(b" ")
        try:
            if raw_id == REVOKED_NOTICE:
                self._revoke(feed, _generation(payload))
                return
            entry = Entry.of(raw_id, payload)
            if entry.id.ms > self._clock.latest_ms():
                entry = await self._held(feed, entry)
        except BadEntry as error:
            self._bad_entries.skipped(feed.job_id, error)
            return
        self._dispatch(feed, entry)

    async def _held(self, feed: Feed, entry: Entry) -> Entry:
        """`entry` as the job's stream holds it; BadEntry if the stream does not hold its id."""
        position = str(entry.id)
        try:
            held = await self._redis.xrange(self._keys.events(feed.job_id), position, position)
        except ResponseError:  # the key is not a stream
            held = []
        if not held:
            raise BadEntry("an id ahead of Redis's clock that the stream does not hold")
        if not self._clock.fresh:  # a real id ahead of the clock as read: it has moved on
            sent = time.monotonic()
            self._clock.set(sent, await self._redis.time())
        raw_id, fields = held[0]
        return Entry.stored(raw_id, fields)

    async def _read_clock(self, connection: AbstractConnection) -> None:
        sent = time.monotonic()
        await connection.send_command("TIME", check_health=False)
        try:
            reply = await connection.read_response()
        except ResponseError as exc:  # TIME refused: no id is checked against the clock
            logger.warning("cannot read Redis's clock (%s): announced ids are not checked", exc)
            return
        self._clock.set(sent, reply)

    async def _catch_up(self, feed: Feed) -> None:
        """Read what pub/sub may have missed since the feed's last event."""
        start = _catch_up_start(feed)
        if start is None:
            return
        key = self._keys.events(feed.job_id)
        while True:
            try:
                entries = await self._redis.xrange(key, f"({start}", "+", count=CATCH_UP_BATCH)
            except ResponseError as exc:
                # Not a stream: that job's own reads fail too, every other job goes on.
                logger.warning("job %s: its events cannot be read (%s)", feed.job_id, exc)
                return
            for raw_id, fields in entries:
                self._dispatch_stored(feed, raw_id, fields)
            if len(entries) < CATCH_UP_BATCH:
                return
            start = StreamId.parse(entries[-1][0])

    def _dispatch_stored(self, feed: Feed, raw_id: bytes, fields: dict[bytes, bytes]) -> None:
        try:
            entry = Entry.stored(raw_id, fields)
        except BadEntry as error:
            self._bad_entries.skipped(feed.job_id, error)
            return
        self._dispatch(feed, entry)


def _catch_up_start(feed: Feed) -> StreamId | None:
    """The feed's last event; before its first, the earliest position a subscriber that
    joined ahead of it has (it must not miss what comes after); None: nothing to catch up."""
    if feed.last_id is not None:
        return feed.last_id
    positions = [s.cursor[feed.job_id] for s in feed.ahead]
    known = [position for position in positions if position is not None]
    return min(known) if known else None


class RedisClock:
    """Redis's clock as last read, run on by this process's monotonic clock.

    XADD takes a new entry's id from Redis's clock, or just past the stream's last id, so an
    id later than `latest_ms()` is not one it has made by now — unless the stream's ids ran
    ahead of its clock (the clock stepped back), which a lookup then shows.
    """

    def __init__(self) -> None:
        self._offset_ms = math.inf  # Redis's ms minus our monotonic ms; unknown: any id
        self._read_at = -math.inf

    @property
    def fresh(self) -> bool:
        return time.monotonic() - self._read_at < _CLOCK_FRESH_S

    def set(self, sent: float, reply: Sequence[bytes | int]) -> None:
        """Take TIME's reply (seconds, microseconds) to a request sent at monotonic `sent`."""
        seconds, micros = int(reply[0]), int(reply[1])
        # As if read the moment it was asked: never behind Redis's clock, ahead of it by at
        # most the round trip.
        self._offset_ms = seconds * 1000 + micros / 1000 - sent * 1000
        self._read_at = sent

    def latest_ms(self) -> float:
        """The latest ms an id XADD has made by now can have."""
        return time.monotonic() * 1000 + self._offset_ms + _CLOCK_SLACK_MS


def _backoff(attempt: int) -> float:
    return _RECONNECT_BACKOFF_S[min(attempt, len(_RECONNECT_BACKOFF_S) - 1)]


def _generation(payload: bytes) -> int:
    try:
        return int(payload)
    except ValueError:
        raise BadEntry("a revocation notice without a generation") from None
