"""The fan-out hub: one per gateway process, between Redis and every open event stream.

Each event is framed once (`entry`), recorded in its job's feed and ring (`feed`), and its
bytes appended to the outbox of each of the job's subscribers (`subscriber`); one flush per
loop turn writes each outbox in one write (`connection`): no task is woken per subscriber per
event. A subscriber with more than `max_buffer_bytes` unsent is cut off and resumes from its
Last-Event-ID, as after any network loss. Live events come from one pub/sub connection
(`reader`); pings and `stalled` from `liveness`.

Joining: a subscriber attaches to the job's feed first, then backfills from its position (from
the ring when it holds the position, else with XRANGE) while live events wait in its holding
list; it drops those it already has by id. Which jobs are watched, and for how long after their
last subscriber left, is the `watchlist`'s; reading a stream when the ring does not hold a
position is the `backfill`'s.

What it does is counted in plain integers (`counters`), once per event or per flush, never
with a metric call per subscriber: the /metrics endpoint reads them at scrape time.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial

from redis.exceptions import RedisError

from gateway.engine.backfill import Backfill
from gateway.engine.connection import Connection
from gateway.engine.counters import GatewayCounters
from gateway.engine.entry import BadEntryLog, Entry
from gateway.engine.feed import Feed
from gateway.engine.framing import SSE, Framing
from gateway.engine.liveness import note, ping_forever, watch_stalls
from gateway.engine.reader import PubSubReader
from gateway.engine.resume import Resume
from gateway.engine.subscriber import Outcome, Subscriber
from gateway.engine.watchlist import Watchlist
from shared.clients import EventsRedis
from shared.events import TERMINAL_TYPES, EventType, now_ms
from shared.keys import Keys
from shared.settings import Settings
from shared.state import JobStatus
from shared.streamid import StreamId

__all__ = ["Hub"]

logger = logging.getLogger("jobwire.hub")

_SUBSCRIBE_TIMEOUT_S = 30.0


class Hub:
    def __init__(
        self, redis: EventsRedis, settings: Settings, counters: GatewayCounters | None = None
    ) -> None:
        self._redis = redis
        self._settings = settings
        self.counters = GatewayCounters() if counters is None else counters
        self._keys = Keys(settings.key_prefix)
        self._subscribers: set[Subscriber] = set()
        self._dirty: set[Subscriber] = set()
        self._flush_scheduled = False
        self._bad_entries = BadEntryLog()
        self._reader = PubSubReader(
            redis,
            self._keys,
            self._dispatch,
            self._revoke,
            self._diverged,
            self._bad_entries,
            self.counters,
        )
        self._feeds = Watchlist(self._keys, settings, self._reader)
        self._backfill = Backfill(
            redis,
            settings.max_buffer_bytes,
            self._bad_entries,
            self._deliver_if_new,
            self._write_now,
        )
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._loop = asyncio.get_running_loop()

    # -- life cycle ---------------------------------------------------------------------

    async def start(self, shutdown: asyncio.Event) -> None:
        """Start reading; `shutdown` (the app's) ends every stream when it is set."""
        loop, settings = self._loop, self._settings
        pings = ping_forever(settings.ping_s, self._subscribers, self._send)
        stalls = watch_stalls(settings.heartbeat_s, self._feeds, self._send)
        self._tasks = [
            loop.create_task(self._reader.run(), name="jobwire-hub-reader"),
            loop.create_task(pings, name="jobwire-hub-ping"),
            loop.create_task(stalls, name="jobwire-hub-stalls"),
            loop.create_task(self._shutdown_on(shutdown), name="jobwire-hub-shutdown"),
        ]

    async def _shutdown_on(self, shutdown: asyncio.Event) -> None:
        await shutdown.wait()
        self.shutdown()

    async def close(self) -> None:
        self.shutdown()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._feeds.clear()
        await self._reader.close()

    def shutdown(self) -> None:
        """End every open stream at once, so its client reconnects elsewhere."""
        self._stopping = True
        for subscriber in list(self._subscribers):
            self._end(subscriber, Outcome.SHUTDOWN)

    @property
    def ready(self) -> bool:
        """Live delivery works: the pub/sub reader runs and is connected (or has been within
        `reader.READY_WITHIN_S`)."""
        return self._reader.ready

    @property
    def bad_entries(self) -> int:
        """Announced or stored entries skipped as not deliverable events, since start."""
        return self._bad_entries.count

    @property
    def open_streams(self) -> int:
        return len(self._subscribers)

    @property
    def watched_jobs(self) -> int:
        return len(self._feeds)

    def subscriptions(self) -> int:
        """Subscribers summed over the watched jobs (a stream of three jobs counts three);
        O(watched jobs): for a scrape, not the hot path."""
        return sum(
            len(feed.live)
            + len(feed.live_ws)
            + len(feed.live_composite)
            + len(feed.joining)
            + len(feed.ahead)
            for feed in self._feeds.values()
        )

    def counts(self) -> dict[str, int]:
        """What the hub holds: for tests and debugging; no endpoint reports it."""
        return {
            "subscribers": len(self._subscribers),
            "feeds": len(self._feeds),
            "ring_entries": sum(len(feed.ring) for feed in self._feeds.values()),
            "ring_bytes": sum(feed.ring_bytes for feed in self._feeds.values()),
        }

    # -- subscribing --------------------------------------------------------------------

    async def serve(
        self,
        connection: Connection,
        resumes: list[Resume],
        head: bytes,
        *,
        composite: bool,
        framing: Framing = SSE,
    ) -> Outcome:
        """Stream `resumes` to `connection` until an outcome, framed as `framing` says; `head`
        goes first."""
        subscriber = Subscriber(connection, resumes, composite, framing, self._loop)
        if self._stopping:
            return Outcome.SHUTDOWN
        self._subscribers.add(subscriber)
        lost = partial(self._end, subscriber, Outcome.LOST)
        connection.on_lost(lost)
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
            # The socket may carry the next request (keep-alive): it must let this one go.
            connection.remove_on_lost(lost)
            self._end(subscriber, Outcome.LOST)

    async def _join(self, subscriber: Subscriber, resume: Resume) -> None:
        job_id = resume.job_id
        feed = self._feeds.attach(job_id)
        feed.learn(resume, subscriber)
        if resume.updated_at > feed.last_event_ms:
            note(feed, resume.status, resume.updated_at)
        if resume.status == JobStatus.QUEUED and not feed.queued_ms:
            feed.queued_ms = resume.updated_at
        feed.joining.add(subscriber)
        subscriber.holding[job_id] = []
        try:
            if not feed.subscribed.is_set():  # wait_for would make a task per join
                await asyncio.wait_for(feed.subscribed.wait(), _SUBSCRIBE_TIMEOUT_S)
            if not self._replay_ring(subscriber, feed):
                await self._backfill.run(subscriber, job_id, self._keys.events(job_id))
            for entry in subscriber.holding.pop(job_id):
                self._deliver_if_new(subscriber, job_id, entry)
        finally:
            subscriber.holding.pop(job_id, None)
            feed.joining.discard(subscriber)
        if job_id in subscriber.open_jobs and not subscriber.done.done():
            feed.admit(subscriber)

    def vouch(self, job_id: str, position: StreamId) -> Resume | None:
        """A resume point from memory, when this process watches the job and its ring holds
        `position` (so the stream vouches for it without a Redis read), with who may watch
        the job as far as the feed knows; None otherwise."""
        feed = self._feeds.get(job_id)
        # Not subscribed: pub/sub is catching up, and may yet find the ring's past gone.
        if feed is None or not feed.subscribed.is_set() or not feed.holds(position):
            return None
        last = feed.ring[-1]
        finished = last.id == position and last.terminal
        return Resume(
            job_id,
            position,
            None,
            finished,
            feed.status,
            feed.last_event_ms,
            feed.binding,
            from_ring=True,
        )

    def _revoke(self, feed: Feed, generation: int) -> None:
        """The job's watch tokens before `generation` were revoked (on any gateway): end the
        streams they opened here; their clients reconnect and are refused."""
        for subscriber in feed.revoke(generation):
            self._end(subscriber, Outcome.REVOKED)

    def _diverged(self, feed: Feed) -> None:
        """The job's stream lost events this feed delivered (a Redis failover): end its
        streams; each client resumes from its own position and gets `reset`."""
        feed.forget_history()
        for subscriber in list(feed.members()):
            self._end(subscriber, Outcome.CUT)

    def _replay_ring(self, subscriber: Subscriber, feed: Feed) -> bool:
        """Serve the backfill from the ring if it holds the subscriber's position."""
        position = subscriber.cursor[feed.job_id]
        newer = None if position is None else feed.newer_than(position)
        if newer is None:
            return False
        if newer and feed.job_id in subscriber.open_jobs:
            self._replay(subscriber, feed.job_id, newer)
        return True

    def _replay(self, subscriber: Subscriber, job_id: str, newer: list[Entry]) -> None:
        """`newer` queued at once, as `_deliver` would queue it event by event, up to the first
        terminal event: a storm of reconnects replays the ring thousands of times. A single-job
        stream gets the ring's own frames, shared."""
        for count, entry in enumerate(newer, 1):
            if entry.type in TERMINAL_TYPES:
                del newer[count:]
                break
        subscriber.outbox.extend(subscriber.advance_through(job_id, newer))
        self.counters.events_delivered += len(newer)
        self._dirty.add(subscriber)
        self._schedule_flush()
        if newer[-1].terminal:
            self._close_job(subscriber, job_id)

    async def _write_now(self, subscriber: Subscriber) -> None:
        """Write the subscriber's outbox and wait until the client has taken most of it."""
        self._dirty.discard(subscriber)
        self.counters.bytes_written += self._write(subscriber)
        if subscriber.done.done():
            return
        try:
            await asyncio.wait_for(subscriber.connection.drain(), self._settings.send_timeout_s)
        except TimeoutError:
            self.counters.send_timeouts += 1
            self._end(subscriber, Outcome.CUT)

    # -- delivering ---------------------------------------------------------------------

    def _dispatch(self, feed: Feed, entry: Entry) -> None:
        """A new event of `feed`'s job, from pub/sub or from a catch-up read."""
        if not feed.record(entry):
            return  # already delivered (pub/sub and a catch-up read overlap)
        note(feed, entry.type, entry.ts)
        if entry.type == EventType.STARTED and feed.queued_ms:
            self.counters.first_event_delays.append((now_ms() - feed.queued_ms) / 1000)
            feed.queued_ms = 0
        frame = entry.frame
        self.counters.events_delivered += len(feed.live)
        for subscriber in feed.live:
            subscriber.outbox.append(frame)
        self._dirty.update(feed.live)
        if feed.live_ws:  # one test for a job no WebSocket watches: its frame is not built
            self._fan_out(feed.live_ws, entry.ws_frame)
        for subscriber in list(feed.live_composite):
            self._deliver(subscriber, feed.job_id, entry)
        for subscriber in list(feed.ahead):
            self._deliver_if_new(subscriber, feed.job_id, entry)
            if subscriber.cursor[feed.job_id] == entry.id:
                feed.ahead.discard(subscriber)
                feed.go_live(subscriber)
        for subscriber in feed.joining:
            subscriber.holding[feed.job_id].append(entry)
        if entry.terminal:
            for subscriber in [*feed.live, *feed.live_ws]:
                self._close_job(subscriber, feed.job_id)
        self._schedule_flush()

    def _fan_out(self, subscribers: set[Subscriber], frame: bytes) -> None:
        self.counters.events_delivered += len(subscribers)
        for subscriber in subscribers:
            subscriber.outbox.append(frame)
        self._dirty.update(subscribers)

    def _deliver_if_new(self, subscriber: Subscriber, job_id: str, entry: Entry) -> None:
        position = subscriber.cursor[job_id]
        if position is None or entry.id > position:
            self._deliver(subscriber, job_id, entry)

    def _deliver(self, subscriber: Subscriber, job_id: str, entry: Entry) -> None:
        if job_id not in subscriber.open_jobs:
            return
        self.counters.events_delivered += 1
        self._send(subscriber, subscriber.advance(job_id, entry))
        if entry.terminal:
            self._close_job(subscriber, job_id)

    def _close_job(self, subscriber: Subscriber, job_id: str) -> None:
        subscriber.open_jobs.discard(job_id)
        feed = self._feeds.get(job_id)
        if feed is not None:
            self._feeds.detach(feed, subscriber)
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
        written = 0
        for subscriber in dirty:
            written += self._write(subscriber)
        self.counters.bytes_written += written

    def _write(self, subscriber: Subscriber) -> int:
        """Write the outbox; the bytes written (the caller counts them, once per flush)."""
        outbox = subscriber.outbox
        if subscriber.done.done():
            outbox.clear()
            return 0
        data = outbox[0] if len(outbox) == 1 else b"".join(outbox)
        outbox.clear()
        connection = subscriber.connection
        if data:
            connection.write(data)
        subscriber.wrote = True
        if connection.exceeds(self._settings.max_buffer_bytes):
            self.counters.slow_consumer_cutoffs += 1
            self._end(subscriber, Outcome.CUT)
        elif subscriber.finishing:
            self._end(subscriber, Outcome.FINISHED)
        return len(data)

    def _end(self, subscriber: Subscriber, outcome: Outcome) -> None:
        if subscriber.done.done():
            return
        subscriber.done.set_result(outcome)
        self._subscribers.discard(subscriber)
        self._dirty.discard(subscriber)
        for job_id in list(subscriber.cursor):
            feed = self._feeds.get(job_id)
            if feed is not None:
                self._feeds.detach(feed, subscriber)
