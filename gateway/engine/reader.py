"""The hub's pub/sub reader (`PubSubReader`): subscribed to the live channel of each watched
job, it hands every announced event to the hub's dispatch.

Deliberate oddities:
- Live channels are shard channels (SSUBSCRIBE; the publish script SPUBLISHes): on a Redis
  Cluster only the master of a job's slot carries its announcements, so the reader keeps one
  connection per master serving watched jobs (`gateway.engine.shard`), routed by the cluster
  client's slot map (`gateway.engine.shardmap`); on one Redis it keeps one connection, as
  before. Nothing is read on a shard that carries no job: it is closed.
- Pub/sub does not replay what it missed. After a (re)subscribe is confirmed the reader reads
  the job's stream from the last id the feed delivered (a catch-up) before it sets
  `Feed.subscribed`, which is what a joining subscriber waits on; the hub drops overlaps by id.
  A lost connection is reopened with backoff (50 ms up to 2 s), after reading the slot map
  again: a feed whose slot moved (a failover, a resharding) is subscribed where it now lives,
  and caught up there. Should a shard fail for any other reason (a bug), it logs why and
  starts again the same way, with the same backoff; `ready` is False until it runs again.
- The catch-up reads from the feed's last id inclusive: a stream that no longer holds it (a
  failover lost events its master had not yet replicated, or the stream was trimmed past it
  while the reader was away) has diverged from what the feed delivered. The feed then forgets
  its history and the hub ends its streams (`diverged`); each client resumes from its own
  position and, the stream not vouching for it, gets `reset` with the snapshot.
- Anyone who can reach Redis can publish on a live channel. What is not an event the hub can
  deliver is skipped and counted (`BadEntryLog`), never allowed to stop the reader. An id
  later than the node's clock cannot be one XADD just made (`RedisClock`, one per shard):
  believed, it would move the feed past every real event up to it, so it is looked up in the
  stream first.
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

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError, ResponseError

from gateway.engine.counters import GatewayCounters
from gateway.engine.entry import BadEntry, BadEntryLog, Entry
from gateway.engine.feed import Feed
from gateway.engine.shard import READY_WITHIN_S, Message, Shard, backoff
from gateway.engine.shardmap import ShardMap
from shared.clients import EventsRedis
from shared.keys import Keys
from shared.publish import REVOKED_NOTICE
from shared.streamid import StreamId

__all__ = ["READY_WITHIN_S", "PubSubReader", "RedisClock"]

logger = logging.getLogger("jobwire.hub")

CATCH_UP_BATCH = 500
# Drift allowed between Redis's clock and ours since it was read; past it, a real id only
# costs a lookup and a fresh reading.
_CLOCK_SLACK_MS = 20
_CLOCK_FRESH_S = 1.0


class PubSubReader:
    def __init__(
        self,
        redis: EventsRedis,
        keys: Keys,
        dispatch: Callable[[Feed, Entry], None],
        revoke: Callable[[Feed, int], None],
        diverged: Callable[[Feed], None],
        bad_entries: BadEntryLog,
        counters: GatewayCounters,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._dispatch = dispatch
        self._revoke = revoke
        self._diverged = diverged
        self._bad_entries = bad_entries
        self._counters = counters
        self._map = ShardMap(redis)
        self._shards: dict[str, Shard] = {}  # by node
        self._clocks: dict[str, RedisClock] = {}  # by node
        self._unrouted: dict[bytes, Feed] = {}  # waiting for the cluster's slot map
        self._routing: asyncio.Task[None] | None = None
        self._running = False
        self._loop = asyncio.get_running_loop()

    @property
    def ready(self) -> bool:
        """Running, and every shard connected or reconnecting for less than READY_WITHIN_S."""
        return self._running and all(shard.ready for shard in self._shards.values())

    def subscribe(self, feed: Feed) -> None:
        self._place(feed)

    def unsubscribe(self, feed: Feed) -> None:
        self._unrouted.pop(feed.channel, None)
        shard = self._shard_of(feed)
        if shard is not None:
            shard.remove(feed)
            self._forget_if_empty(shard)

    def shards(self) -> dict[str, int]:
        """Node -> jobs watched through it (for tests and debugging)."""
        return {node: len(shard.feeds) for node, shard in self._shards.items()}

    async def close(self) -> None:
        """Forget every feed and close every shard (after `run` was cancelled)."""
        self._unrouted.clear()
        shards, self._shards = list(self._shards.values()), {}
        await asyncio.gather(*(shard.close() for shard in shards))

    async def run(self) -> None:
        """Route feeds until cancelled; each shard reads on its own task."""
        self._running = True
        try:
            await self._route_unrouted()
            await asyncio.Event().wait()
        finally:
            self._running = False
            if self._routing is not None:
                self._routing.cancel()

    # -- routing ----------------------------------------------------------------------

    def _place(self, feed: Feed) -> None:
        """Carry `feed` on the shard of its channel's node, made if need be; while the slot
        map does not know the node, keep it aside and read the map."""
        node = self._map.node_of(feed.channel)
        if node is None:
            self._unrouted[feed.channel] = feed
            self._route_soon()
            return
        shard = self._shards.get(node)
        if shard is None:
            shard = self._shards[node] = Shard(
                node, self._map, self._on_message, self._reroute, self._connected, self._counters
            )
            shard.add(feed)
            shard.start()
        else:
            shard.add(feed)

    def _shard_of(self, feed: Feed) -> Shard | None:
        for shard in self._shards.values():
            if shard.feeds.get(feed.channel) is feed:
                return shard
        return None

    def _forget_if_empty(self, shard: Shard) -> None:
        if not shard.feeds and self._shards.get(shard.node) is shard:
            del self._shards[shard.node]

    def _route_soon(self) -> None:
        if self._running and (self._routing is None or self._routing.done()):
            self._routing = self._loop.create_task(self._route_unrouted())

    async def _route_unrouted(self) -> None:
        attempt = 0
        while self._unrouted:
            try:
                await self._map.refresh()
            except (RedisError, OSError) as exc:
                logger.warning("cannot read the cluster's slots (%s)", exc)
            unrouted, self._unrouted = self._unrouted, {}
            for feed in unrouted.values():
                self._place(feed)
            if self._unrouted:
                await asyncio.sleep(backoff(attempt))
                attempt += 1

    async def _reroute(self, shard: Shard) -> None:
        """After `shard` lost its connection or its slots moved: read the slot map again and
        move each of its feeds whose channel another node now serves."""
        try:
            await self._map.refresh()
        except (RedisError, OSError) as exc:
            logger.warning("cannot read the cluster's slots (%s)", exc)
            return
        for feed in list(shard.feeds.values()):
            node = self._map.node_of(feed.channel)
            if node != shard.node:
                shard.remove(feed)
                self._place(feed)
        self._forget_if_empty(shard)

    async def _connected(self, shard: Shard, connection: AbstractConnection) -> None:
        await self._read_clock(self._clock_of(shard), connection)

    def _clock_of(self, shard: Shard) -> RedisClock:
        clock = self._clocks.get(shard.node)
        if clock is None:
            clock = self._clocks[shard.node] = RedisClock()
        return clock

    # -- messages ---------------------------------------------------------------------

    async def _on_message(self, shard: Shard, message: Message) -> None:
        kind, channel, data = message
        feed = shard.feeds.get(channel)
        if feed is None:
            return
        if kind == b"smessage" and isinstance(data, bytes):
            await self._on_announcement(shard, feed, data)
        elif kind == b"ssubscribe" and not feed.subscribed.is_set():
            await self._catch_up(feed)
            feed.subscribed.set()

    async def _on_announcement(self, shard: Shard, feed: Feed, data: bytes) -> None:
        """`<id> <event json>` as the publish script sends it, or a revocation notice."""
        raw_id, _, payload = data.partition(b" ")
        try:
            if raw_id == REVOKED_NOTICE:
                self._revoke(feed, _generation(payload))
                return
            entry = Entry.of(raw_id, payload)
            clock = self._clock_of(shard)
            if entry.id.ms > clock.latest_ms():
                entry = await self._held(clock, feed, entry)
        except BadEntry as error:
            self._bad_entries.skipped(feed.job_id, error)
            return
        self._dispatch(feed, entry)

    async def _held(self, clock: RedisClock, feed: Feed, entry: Entry) -> Entry:
        """`entry` as the job's stream holds it; BadEntry if the stream does not hold its id."""
        position = str(entry.id)
        try:
            held = await self._redis.xrange(self._keys.events(feed.job_id), position, position)
        except ResponseError:  # the key is not a stream
            held = []
        if not held:
            raise BadEntry("an id ahead of Redis's clock that the stream does not hold")
        if not clock.fresh:  # a real id ahead of the clock as read: it has moved on
            sent = time.monotonic()
            clock.set(sent, await self._redis.time())
        raw_id, fields = held[0]
        return Entry.stored(raw_id, fields)

    async def _read_clock(self, clock: RedisClock, connection: AbstractConnection) -> None:
        sent = time.monotonic()
        await connection.send_command("TIME", check_health=False)
        try:
            reply = await connection.read_response()
        except ResponseError as exc:  # TIME refused: no id is checked against the clock
            logger.warning("cannot read Redis's clock (%s): announced ids are not checked", exc)
            return
        clock.set(sent, reply)

    async def _catch_up(self, feed: Feed) -> None:
        """Read what pub/sub may have missed since the feed's last event, from that event on:
        a stream that no longer holds it has diverged from what the feed delivered."""
        start = _catch_up_start(feed)
        if start is None:
            return
        key = self._keys.events(feed.job_id)
        check = feed.last_id
        low = f"({start}" if check is None else str(start)
        while True:
            try:
                batch = await self._redis.xrange(key, low, "+", count=CATCH_UP_BATCH)
            except ResponseError as exc:
                # Not a stream: that job's own reads fail too, every other job goes on.
                logger.warning("job %s: its events cannot be read (%s)", feed.job_id, exc)
                return
            entries = batch
            if check is not None:
                if not batch or StreamId.parse(batch[0][0]) != check:
                    self._on_diverged(feed, check)
                    return
                entries, check = batch[1:], None
            for raw_id, fields in entries:
                self._dispatch_stored(feed, raw_id, fields)
            if len(batch) < CATCH_UP_BATCH:
                return
            low = f"({StreamId.parse(batch[-1][0])}"

    def _on_diverged(self, feed: Feed, last: StreamId) -> None:
        logger.warning(
            "job %s: its stream no longer holds %s, the last event delivered here (lost in a "
            "failover, or trimmed while pub/sub was away): its streams end, and resume with "
            "a reset",
            feed.job_id,
            last,
        )
        self._diverged(feed)

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


def _generation(payload: bytes) -> int:
    try:
        return int(payload)
    except ValueError:
        raise BadEntry("a revocation notice without a generation") from None
