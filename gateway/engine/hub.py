"""The fan-out hub: one per gateway process, between Redis and every open event stream.

- One pub/sub connection, subscribed to the live channel of each job that has subscribers
  here (one subscription per job, however many subscribers). The publish script announces
  `<stream id> <event json>` there, so live events need no read of the stream.
- Each event is framed once; the same bytes go to every single-job subscriber of that job.
  Delivery appends to the subscriber's outbox and one flush per loop turn writes each outbox
  in one write, straight to the socket (`gateway.engine.connection`): no task is woken per
  subscriber per event. A subscriber whose unsent bytes pass `max_buffer_bytes` is cut off;
  it resumes from its own Last-Event-ID like after any network loss.
- Joining: a subscriber attaches to the live feed first, then backfills from its position —
  from the job's ring of recent frames when it covers the position, else with XRANGE — and
  drops live events it already has by id. Events announced while it backfills wait in its
  own holding list.
- Pub/sub does not replay what it missed: after the connection is lost, the hub reconnects
  with backoff, subscribes again and re-reads each watched stream from the last id it
  delivered. The stream is the truth; ids are compared as integers.
- A job's subscription ends `hub_linger_s` after its last subscriber left (so a reconnecting
  crowd finds the ring still warm); nothing else outlives its subscribers.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import NamedTuple

import orjson
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as AbstractConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.engine.connection import Connection
from gateway.engine.resume import Resume, format_cursor
from shared import sse
from shared.events import TERMINAL_TYPES, now_ms
from shared.keys import Keys
from shared.settings import Settings
from shared.state import JobStatus, is_stalled, status_after
from shared.streamid import StreamId

__all__ = ["Entry", "Hub", "Outcome", "Subscriber"]

logger = logging.getLogger("jobwire.hub")

BACKFILL_BATCH = 500
# The first read of a backfill, before the size of this job's events is known.
FIRST_BACKFILL_BATCH = 32
PING = sse.comment("ping")
_RECONNECT_BACKOFF_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)
_SUBSCRIBE_TIMEOUT_S = 30.0
_STATUSES = frozenset(status.value for status in JobStatus)


class Outcome(Enum):
    FINISHED = "finished"  # every job delivered its terminal event
    LOST = "lost"  # the client went away
    CUT = "cut"  # too slow: more than max_buffer_bytes unsent
    SHUTDOWN = "shutdown"  # the gateway is stopping
    UNAVAILABLE = "unavailable"  # Redis could not be read to join: the client retries


class Entry(NamedTuple):
    """One stored event as the hub holds it: framed once for single-job streams."""

    id: StreamId
    type: str
    ts: int
    payload: bytes
    frame: bytes

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_TYPES

    @property
    def size(self) -> int:
        """Bytes the entry holds, as counted against the ring's byte bound."""
        return len(self.payload) + len(self.frame)

    @classmethod
    def of(cls, raw_id: bytes | str, payload: bytes) -> Entry:
        text_id = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
        event = orjson.loads(payload)
        event_type = event["type"]
        frame = _frame(payload, event_type, text_id)
        return cls(StreamId.parse(text_id), event_type, event["ts"], payload, frame)


def _frame(payload: bytes, event_type: str, event_id: str) -> bytes:
    return sse.frame(payload, event=event_type, id=event_id)


def _newer_in_ring(feed: Feed, position: StreamId) -> list[Entry] | None:
    """The ring's entries after `position`, oldest first, if the ring holds `position`."""
    if not feed.ring or feed.ring[-1].id != feed.last_id:
        return None
    newer: list[Entry] = []
    for entry in reversed(feed.ring):
        if entry.id == position:
            newer.reverse()
            return newer
        if entry.id < position:
            return None
        newer.append(entry)
    return None


class Subscriber:
    """One open stream: its connection, its outbox, and where it is in each job."""

    __slots__ = (
        "composite",
        "connection",
        "cursor",
        "done",
        "finishing",
        "holding",
        "open_jobs",
        "outbox",
        "wrote",
    )

    def __init__(self, connection: Connection, resumes: list[Resume], composite: bool) -> None:
        self.connection = connection
        self.composite = composite
        self.cursor: dict[str, StreamId | None] = {r.job_id: r.after for r in resumes}
        self.open_jobs = {r.job_id for r in resumes if not r.finished}
        self.holding: dict[str, list[Entry]] = {}
        self.outbox: list[bytes] = []
        self.finishing = False
        self.wrote = False
        self.done: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()

    def frame_for(self, job_id: str, entry: Entry) -> bytes:
        if not self.composite:
            return entry.frame
        cursor = {job: pos for job, pos in self.cursor.items() if pos is not None}
        return _frame(entry.payload, entry.type, format_cursor(cursor))


@dataclass(eq=False)
class Feed:
    """One watched job: its subscribers here and the recent events the hub has seen."""

    job_id: str
    channel: bytes
    ring: deque[Entry] = field(default_factory=deque)
    ring_bytes: int = 0
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    last_id: StreamId | None = None  # the last event delivered live to this feed
    live: set[Subscriber] = field(default_factory=set)  # single-job, at last_id
    live_composite: set[Subscriber] = field(default_factory=set)
    joining: set[Subscriber] = field(default_factory=set)
    ahead: set[Subscriber] = field(default_factory=set)  # joined past last_id
    linger: asyncio.TimerHandle | None = None
    status: str = JobStatus.QUEUED.value
    last_event_ms: int = 0
    stalled: bool = False  # `stalled` was sent and no event came since

    @property
    def empty(self) -> bool:
        return not (self.live or self.live_composite or self.joining or self.ahead)

    def members(self) -> Iterable[Subscriber]:
        yield from self.live
        yield from self.live_composite
        yield from self.joining
        yield from self.ahead


class Hub:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._settings = settings
        self._keys = Keys(settings.key_prefix)
        self._feeds: dict[str, Feed] = {}
        self._by_channel: dict[bytes, Feed] = {}
        self._subscribers: set[Subscriber] = set()
        self._dirty: set[Subscriber] = set()
        self._flush_scheduled = False
        self._pubsub: AbstractConnection | None = None
        self._connected = asyncio.Event()
        self._has_feeds = asyncio.Event()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._loop = asyncio.get_running_loop()

    # -- life cycle ---------------------------------------------------------------------

    async def start(self, shutdown: asyncio.Event) -> None:
        """Start reading; `shutdown` (the app's) ends every stream when it is set."""
        self._tasks = [
            self._loop.create_task(self._read_forever(), name="jobwire-hub-reader"),
            self._loop.create_task(self._ping_forever(), name="jobwire-hub-ping"),
            self._loop.create_task(self._watch_stalls(), name="jobwire-hub-stalls"),
            self._loop.create_task(self._shutdown_on(shutdown), name="jobwire-hub-shutdown"),
        ]

    async def _shutdown_on(self, shutdown: asyncio.Event) -> None:
        await shutdown.wait()
        self.shutdown()

    async def close(self) -> None:
        self.shutdown()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for feed in list(self._feeds.values()):
            if feed.linger is not None:
                feed.linger.cancel()
        self._feeds.clear()
        self._by_channel.clear()
        if self._pubsub is not None:
            await self._pubsub.disconnect()

    def shutdown(self) -> None:
        """End every open stream at once, so its client reconnects elsewhere."""
        self._stopping = True
        for subscriber in list(self._subscribers):
            self._end(subscriber, Outcome.SHUTDOWN)

    def counts(self) -> dict[str, int]:
        """What the hub holds: for /readyz, tests and benchmarks."""
        return {
            "subscribers": len(self._subscribers),
            "feeds": len(self._feeds),
            "ring_entries": sum(len(feed.ring) for feed in self._feeds.values()),
            "ring_bytes": sum(feed.ring_bytes for feed in self._feeds.values()),
        }

    # -- subscribing --------------------------------------------------------------------

    async def serve(
        self, connection: Connection, resumes: list[Resume], head: bytes, *, composite: bool
    ) -> Outcome:
        """Stream `resumes` to `connection` until an outcome; `head` goes first."""
        subscriber = Subscriber(connection, resumes, composite)
        if self._stopping:
            return Outcome.SHUTDOWN
        self._subscribers.add(subscriber)
        connection.on_lost(lambda: self._end(subscriber, Outcome.LOST))
        self._send(subscriber, head)
        try:
            for resume in resumes:
                if resume.job_id in subscriber.open_jobs and not subscriber.done.done():
                    await self._join(subscriber, resume)
            if not subscriber.open_jobs:
                subscriber.finishing = True
                self._send(subscriber, b"")
            return await subscriber.done
        except (RedisError, OSError, TimeoutError) as exc:
            logger.warning("a stream could not join its jobs: %s", exc)
            self._end(subscriber, Outcome.UNAVAILABLE)
            return Outcome.UNAVAILABLE
        finally:
            self._end(subscriber, Outcome.LOST)

    async def _join(self, subscriber: Subscriber, resume: Resume) -> None:
        job_id = resume.job_id
        feed = self._attach(job_id)
        if resume.updated_at > feed.last_event_ms:
            self._note(feed, resume.status, resume.updated_at)
        feed.joining.add(subscriber)
        subscriber.holding[job_id] = []
        try:
            if not feed.subscribed.is_set():  # wait_for would make a task per join
                await asyncio.wait_for(feed.subscribed.wait(), _SUBSCRIBE_TIMEOUT_S)
            if not self._replay_ring(subscriber, feed):
                await self._backfill(subscriber, feed)
            for entry in subscriber.holding.pop(job_id):
                self._deliver_if_new(subscriber, job_id, entry)
        finally:
            subscriber.holding.pop(job_id, None)
            feed.joining.discard(subscriber)
        if job_id in subscriber.open_jobs and not subscriber.done.done():
            self._go_live(subscriber, feed)

    def vouch(self, job_id: str, position: StreamId) -> Resume | None:
        """A resume point from memory, when this process watches the job and its ring holds
        `position` (so the stream vouches for it without a Redis read); None otherwise."""
        feed = self._feeds.get(job_id)
        if feed is None or _newer_in_ring(feed, position) is None:
            return None
        last = feed.ring[-1]
        finished = last.id == position and last.terminal
        return Resume(job_id, position, None, finished, feed.status, feed.last_event_ms)

    def _replay_ring(self, subscriber: Subscriber, feed: Feed) -> bool:
        """Serve the backfill from the ring if it holds the subscriber's position."""
        position = subscriber.cursor[feed.job_id]
        newer = None if position is None else _newer_in_ring(feed, position)
        if newer is None:
            return False
        for entry in newer:
            self._deliver(subscriber, feed.job_id, entry)
        return True

    async def _backfill(self, subscriber: Subscriber, feed: Feed) -> None:
        """Read the stream from the subscriber's position, pacing the writes to how fast the
        client takes them: a client far behind on large events is served, not cut off."""
        key = self._keys.events(feed.job_id)
        pace_bytes = self._settings.max_buffer_bytes // 4
        count = FIRST_BACKFILL_BATCH
        while feed.job_id in subscriber.open_jobs and not subscriber.done.done():
            position = subscriber.cursor[feed.job_id]
            start = "-" if position is None else f"({position}"
            entries = await self._redis.xrange(key, start, "+", count=count)
            unflushed = read = 0
            for raw_id, fields in entries:
                payload = fields[b"e"]
                self._deliver_if_new(subscriber, feed.job_id, Entry.of(raw_id, payload))
                unflushed += len(payload)
                read += len(payload)
                if unflushed > pace_bytes:
                    unflushed = 0
                    await self._write_now(subscriber)
            if len(entries) < count:
                return
            # Large events: read fewer at a time, so one read holds about one buffer's worth.
            average = read // len(entries) + 1
            count = max(1, min(BACKFILL_BATCH, self._settings.max_buffer_bytes // average))

    async def _write_now(self, subscriber: Subscriber) -> None:
        """Write the subscriber's outbox and wait until the client has taken most of it."""
        self._dirty.discard(subscriber)
        self._write(subscriber)
        if subscriber.done.done():
            return
        try:
            await asyncio.wait_for(subscriber.connection.drain(), self._settings.send_timeout_s)
        except TimeoutError:
            self._end(subscriber, Outcome.CUT)

    def _go_live(self, subscriber: Subscriber, feed: Feed) -> None:
        position = subscriber.cursor[feed.job_id]
        if feed.last_id is not None and position == feed.last_id:
            (feed.live_composite if subscriber.composite else feed.live).add(subscriber)
        else:
            feed.ahead.add(subscriber)

    # -- delivering ---------------------------------------------------------------------

    def _dispatch(self, feed: Feed, entry: Entry) -> None:
        """A new event of `feed`'s job, from pub/sub or from a catch-up read."""
        if feed.last_id is not None and entry.id <= feed.last_id:
            return  # already delivered (pub/sub and a catch-up read overlap)
        feed.last_id = entry.id
        self._remember(feed, entry)
        self._note(feed, entry.type, entry.ts)
        frame = entry.frame
        for subscriber in feed.live:
            subscriber.outbox.append(frame)
        self._dirty.update(feed.live)
        for subscriber in list(feed.live_composite):
            self._deliver(subscriber, feed.job_id, entry)
        for subscriber in list(feed.ahead):
            self._deliver_if_new(subscriber, feed.job_id, entry)
            if subscriber.cursor[feed.job_id] == entry.id:
                feed.ahead.discard(subscriber)
                (feed.live_composite if subscriber.composite else feed.live).add(subscriber)
        for subscriber in feed.joining:
            subscriber.holding[feed.job_id].append(entry)
        if entry.terminal:
            for subscriber in list(feed.live):
                self._close_job(subscriber, feed.job_id)
        self._schedule_flush()

    def _remember(self, feed: Feed, entry: Entry) -> None:
        """Keep `entry` in the job's ring, oldest out first past its count or byte bound (a
        job of large events keeps fewer of them; the last one always stays)."""
        ring = feed.ring
        ring.append(entry)
        feed.ring_bytes += entry.size
        settings = self._settings
        while len(ring) > settings.hub_ring_size or (
            feed.ring_bytes > settings.hub_ring_bytes and len(ring) > 1
        ):
            feed.ring_bytes -= ring.popleft().size

    def _deliver_if_new(self, subscriber: Subscriber, job_id: str, entry: Entry) -> None:
        position = subscriber.cursor[job_id]
        if position is None or entry.id > position:
            self._deliver(subscriber, job_id, entry)

    def _deliver(self, subscriber: Subscriber, job_id: str, entry: Entry) -> None:
        if job_id not in subscriber.open_jobs:
            return
        subscriber.cursor[job_id] = entry.id
        self._send(subscriber, subscriber.frame_for(job_id, entry))
        if entry.terminal:
            self._close_job(subscriber, job_id)

    def _close_job(self, subscriber: Subscriber, job_id: str) -> None:
        subscriber.open_jobs.discard(job_id)
        feed = self._feeds.get(job_id)
        if feed is not None:
            self._detach(feed, subscriber)
        if not subscriber.open_jobs:
            subscriber.finishing = True

    def _send(self, subscriber: Subscriber, data: bytes) -> None:
        subscriber.outbox.append(data)
        self._dirty.add(subscriber)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Write each waiting outbox in one write (frames queued together go out together)."""
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, set()
        for subscriber in dirty:
            self._write(subscriber)

    def _write(self, subscriber: Subscriber) -> None:
        outbox = subscriber.outbox
        if subscriber.done.done():
            outbox.clear()
            return
        data = outbox[0] if len(outbox) == 1 else b"".join(outbox)
        outbox.clear()
        connection = subscriber.connection
        if data:
            connection.write(data)
        subscriber.wrote = True
        if connection.exceeds(self._settings.max_buffer_bytes):
            self._end(subscriber, Outcome.CUT)
        elif subscriber.finishing:
            self._end(subscriber, Outcome.FINISHED)

    def _end(self, subscriber: Subscriber, outcome: Outcome) -> None:
        if subscriber.done.done():
            return
        subscriber.done.set_result(outcome)
        self._subscribers.discard(subscriber)
        self._dirty.discard(subscriber)
        for job_id in list(subscriber.cursor):
            feed = self._feeds.get(job_id)
            if feed is not None:
                self._detach(feed, subscriber)

    # -- feeds and the pub/sub connection ----------------------------------------------

    def _attach(self, job_id: str) -> Feed:
        feed = self._feeds.get(job_id)
        if feed is None:
            channel = self._keys.live(job_id).encode()
            feed = Feed(job_id, channel)
            self._feeds[job_id] = feed
            self._by_channel[channel] = feed
            self._has_feeds.set()
            self._command("SUBSCRIBE", channel)
        elif feed.linger is not None:
            feed.linger.cancel()
            feed.linger = None
        return feed

    def _detach(self, feed: Feed, subscriber: Subscriber) -> None:
        feed.live.discard(subscriber)
        feed.live_composite.discard(subscriber)
        feed.joining.discard(subscriber)
        feed.ahead.discard(subscriber)
        if feed.empty and feed.linger is None and self._feeds.get(feed.job_id) is feed:
            feed.linger = self._loop.call_later(self._settings.hub_linger_s, self._forget, feed)

    def _forget(self, feed: Feed) -> None:
        feed.linger = None  # the timer refers to the feed: no cycle may outlive it
        if not feed.empty or self._feeds.get(feed.job_id) is not feed:
            return
        del self._feeds[feed.job_id]
        del self._by_channel[feed.channel]
        if not self._feeds:
            self._has_feeds.clear()
        self._command("UNSUBSCRIBE", feed.channel)

    def _command(self, *args: str | bytes) -> None:
        """Send a (UN)SUBSCRIBE; its confirmation is read by the reader task."""
        if self._pubsub is not None and self._connected.is_set():
            self._loop.create_task(self._send_command(self._pubsub, *args))

    async def _send_command(self, connection: AbstractConnection, *args: str | bytes) -> None:
        try:
            await connection.send_command(*args, check_health=False)
        except (RedisError, OSError) as exc:
            logger.warning("pub/sub %s failed: %s", args[0], exc)
            await connection.disconnect()  # the reader reconnects and subscribes again

    async def _read_forever(self) -> None:
        attempt = 0
        while True:
            try:
                await self._connect()
                attempt = 0
                await self._read_messages()
            except (AbstractConnectionError, RedisTimeoutError, OSError) as exc:
                self._connected.clear()
                for feed in self._feeds.values():
                    feed.subscribed.clear()
                delay = _RECONNECT_BACKOFF_S[min(attempt, len(_RECONNECT_BACKOFF_S) - 1)]
                attempt += 1
                logger.warning("pub/sub connection lost (%s); reconnecting in %.2fs", exc, delay)
                await asyncio.sleep(delay)

    async def _connect(self) -> None:
        if self._pubsub is not None:
            await self._pubsub.disconnect()
        pool = self._redis.connection_pool
        connection: AbstractConnection = pool.connection_class(**pool.connection_kwargs)
        connection.health_check_interval = 0
        await connection.connect()  # type: ignore[no-untyped-call]
        self._pubsub = connection
        self._connected.set()
        if self._feeds:
            await connection.send_command("SUBSCRIBE", *self._by_channel, check_health=False)

    async def _read_messages(self) -> None:
        assert self._pubsub is not None
        connection = self._pubsub
        while True:
            # With no subscription nothing arrives; a read would block (and cancelling a read
            # drops the connection), so wait for a feed instead.
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
        """After (re)subscribing, read what pub/sub may have missed since the last event."""
        start = self._catch_up_start(feed)
        if start is None:
            return
        key = self._keys.events(feed.job_id)
        while True:
            entries = await self._redis.xrange(key, f"({start}", "+", count=BACKFILL_BATCH)
            for raw_id, fields in entries:
                self._dispatch(feed, Entry.of(raw_id, fields[b"e"]))
            if len(entries) < BACKFILL_BATCH:
                return
            start = StreamId.parse(entries[-1][0])

    def _catch_up_start(self, feed: Feed) -> StreamId | None:
        if feed.last_id is not None:
            return feed.last_id
        positions = [s.cursor[feed.job_id] for s in feed.ahead]
        known = [position for position in positions if position is not None]
        return min(known) if known else None

    async def _ping_forever(self) -> None:
        """An idle stream gets a comment ping, so proxies do not cut it."""
        while True:
            await asyncio.sleep(self._settings.ping_s)
            for subscriber in self._subscribers:
                if not subscriber.wrote:
                    subscriber.outbox.append(PING)
                    self._dirty.add(subscriber)
                subscriber.wrote = False
            self._schedule_flush()

    # -- liveness -----------------------------------------------------------------------

    def _note(self, feed: Feed, event_type_or_status: str, at_ms: int) -> None:
        """Track what the job is doing, for `stalled`: its status and last event time."""
        status = (
            event_type_or_status
            if event_type_or_status in _STATUSES
            else status_after(event_type_or_status)
        )
        if status is not None:
            feed.status = str(status)
        feed.last_event_ms = max(feed.last_event_ms, at_ms)
        feed.stalled = False

    async def _watch_stalls(self) -> None:
        """Tell the subscribers of a running job that went silent (its worker died or hung).

        `stalled` carries no `id:`, so it never moves a client's position; the job's next
        event, if any, is the all-clear (arq reruns a job whose worker died).
        """
        heartbeat_s = self._settings.heartbeat_s
        while True:
            await asyncio.sleep(heartbeat_s)
            now = now_ms()
            for feed in self._feeds.values():
                if feed.stalled or feed.empty:
                    continue
                if is_stalled(feed.status, feed.last_event_ms, heartbeat_s, now):
                    feed.stalled = True
                    self._announce_stall(feed, now)

    def _announce_stall(self, feed: Feed, now: int) -> None:
        data = {
            "job": feed.job_id,
            "silent_s": round((now - feed.last_event_ms) / 1000, 1),
            "last_event_id": None if feed.last_id is None else str(feed.last_id),
        }
        frame = sse.frame(orjson.dumps(data), event="stalled")
        for subscriber in list(feed.members()):
            self._send(subscriber, frame)
