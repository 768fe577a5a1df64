"""The one path by which an attempt's events reach its stream.

Writes are serialized under one lock, so the stream holds events in the order they were
written. Progress is coalesced: a value arriving sooner than `progress_interval_s` after the
last written one is held as *pending* (a later value replaces it) and is written by a timer when
its interval is due, or before any other event, whichever comes first. So the last value of a
burst always lands, and always before whatever the job writes next. A heartbeat fills any
silence longer than `heartbeat_s`.

Every event passes here, so here its size is bounded: an event whose encoding is over
`max_event_bytes` is stored with its data replaced by `{"truncated": true, "bytes": n}` (a
warning names the job and the event type) and the job goes on. An unbounded event would sit in
Redis and in every gateway's ring of recent events, and be more than a subscriber may have
unsent (JOBWIRE_MAX_BUFFER_BYTES): each subscriber would be cut off on it, resume before it,
and be cut off again.

While Redis is unreachable, a write the job or its lifecycle waits on is retried with backoff
for up to `publish_retry_s` (one deadline for the write and the pending value before it): the
job is paused in its `await`, so events are neither dropped nor reordered, and a Redis restart
costs a delay, not an event. Past the deadline the write raises `EventNotStored`, logged as an
error with the job id and event type (never the payload). Background writes (the heartbeat and
the progress flush timer) try once: a lost heartbeat is replaced by the next one, and a pending
value that could not be written stays pending for the next write.

A retried write whose first try reached Redis but whose reply was lost is stored twice: events
are written at least once. A terminal event cannot be (the publish script refuses anything after
it), and subscribers resume by stream id, so a duplicate never reaches a client twice.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.events import Event, EventType, make_event, within_size
from shared.publish import Publisher, PublishResult
from shared.streamid import StreamId
from worker.metrics import WorkerMetrics

__all__ = ["ATTEMPT_FLOOR_S", "EventNotStored", "EventWriter", "JobEnded"]

logger = logging.getLogger(__name__)

# Every try is bounded by what is left of its write's deadline, but never by less than this:
# a healthy Redis answers in milliseconds, and background writes (with no deadline) get this long.
ATTEMPT_FLOOR_S = 1.0
_FIRST_BACKOFF_S = 0.05
_MAX_BACKOFF_S = 1.0
# What an unreachable (or restarting, or still loading) Redis raises; anything else is a bug.
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, TimeoutError, OSError)


class JobEnded(Exception):
    """The job's stream already holds its terminal event (it was cancelled, for one)."""

    def __init__(self, job_id: str, status: str | None) -> None:
        super().__init__(f"job {job_id} already {status or 'ended'}")
        self.status = status


class EventNotStored(ConnectionError):
    """Redis stayed unreachable for the whole retry budget of a write."""

    def __init__(self, job_id: str, event_type: EventType, waited_s: float) -> None:
        super().__init__(
            f"job {job_id}: its {event_type.value} event was not stored, "
            f"Redis unreachable for {waited_s:.1f} s"
        )
        self.job_id = job_id
        self.event_type = event_type


class EventWriter:
    def __init__(
        self,
        publisher: Publisher,
        job_id: str,
        attempt: int,
        *,
        progress_interval_s: float,
        heartbeat_s: float,
        max_event_bytes: int,
        publish_retry_s: float = 0.0,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.job_id = job_id
        self.attempt = attempt
        self._publisher = publisher
        self._progress_interval_s = progress_interval_s
        self._heartbeat_s = heartbeat_s
        self._publish_retry_s = publish_retry_s
        self._max_event_bytes = max_event_bytes
        self._metrics = metrics
        self._lock = asyncio.Lock()
        self._ended: JobEnded | None = None
        self._pending: dict[str, Any] | None = None
        self._last_write = -math.inf
        self._last_progress_write = -math.inf
        self._flush_timer: asyncio.Task[None] | None = None
        self._heartbeats: asyncio.Task[None] | None = None

    def start_heartbeats(self) -> None:
        if self._heartbeats is None:
            self._heartbeats = asyncio.create_task(self._beat(), name=f"heartbeat {self.job_id}")

    async def stop(self) -> None:
        """Stops the heartbeat and the flush timer; a pending value stays for the next write."""
        # Under the lock, neither task is mid-publish, so cancelling them loses no event.
        async with self._lock:
            tasks = [task for task in (self._heartbeats, self._flush_timer) if task is not None]
            for task in tasks:
                task.cancel()
            self._heartbeats = self._flush_timer = None
        await asyncio.gather(*tasks, return_exceptions=True)

    async def write(self, event_type: EventType, data: dict[str, Any]) -> StreamId:
        """Writes the pending progress value, if any, then this event; retried while Redis is
        unreachable, up to `publish_retry_s` for both."""
        async with self._lock:
            deadline = self._retry_deadline()
            await self._write_pending(deadline)
            return await self._publish(event_type, data, deadline)

    async def finish(self, event_type: EventType, data: dict[str, Any]) -> StreamId:
        """The attempt's last event: background writes stop, pending progress goes first."""
        await self.stop()
        return await self.write(event_type, data)

    async def write_progress(self, data: dict[str, Any], *, immediate: bool = False) -> None:
        """Writes `data` now, or holds it as pending if the last progress write is too recent.

        `immediate` writes the pending value and then `data` at once (a new stage begins).
        """
        async with self._lock:
            deadline = self._retry_deadline()
            if immediate:
                await self._write_pending(deadline)
            elif self._pending is not None or not self._progress_due():
                self._check_not_ended()
                self._pending = data
                self._schedule_flush()
                return
            await self._publish_progress(data, deadline)

    def _progress_due(self) -> bool:
        return time.monotonic() - self._last_progress_write >= self._progress_interval_s

    def _schedule_flush(self) -> None:
        if self._flush_timer is None:
            self._flush_timer = asyncio.create_task(
                self._flush_when_due(), name=f"progress flush {self.job_id}"
            )

    async def _flush_when_due(self) -> None:
        while True:
            due = self._last_progress_write + self._progress_interval_s
            await asyncio.sleep(max(due - time.monotonic(), 0))
            async with self._lock:
                # Another write may have flushed the value and a newer one restarted the clock.
                if self._pending is not None and not self._progress_due():
                    continue
                self._flush_timer = None
                try:
                    await self._write_pending(deadline=None)
                except JobEnded:
                    pass  # remembered: the job's next write raises it
                except Exception:
                    # Still pending: the job's next write (or its end) writes it.
                    logger.warning("writing progress of job %s failed", self.job_id, exc_info=True)
                return

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(max(self._last_write + self._heartbeat_s - time.monotonic(), 0))
            async with self._lock:
                if time.monotonic() - self._last_write < self._heartbeat_s:
                    continue
                try:
                    await self._write_pending(deadline=None)
                    await self._publish(
                        EventType.HEARTBEAT, {"interval_s": self._heartbeat_s}, deadline=None
                    )
                except JobEnded:
                    return
                except Exception:
                    logger.warning("heartbeat of job %s failed", self.job_id, exc_info=True)
                    # Wait a full interval before trying again rather than spinning.
                    self._last_write = time.monotonic()

    def _retry_deadline(self) -> float:
        return time.monotonic() + self._publish_retry_s

    async def _write_pending(self, deadline: float | None) -> None:
        """Writes the pending value; it stays pending if the write fails."""
        if self._pending is not None:
            await self._publish_progress(self._pending, deadline)
            self._pending = None

    async def _publish_progress(self, data: dict[str, Any], deadline: float | None) -> None:
        await self._publish(EventType.PROGRESS, data, deadline)
        self._last_progress_write = time.monotonic()

    async def _publish(
        self, event_type: EventType, data: dict[str, Any], deadline: float | None
    ) -> StreamId:
        """Stores the event; `deadline` (monotonic) bounds the retries, None means one try."""
        self._check_not_ended()
        event = self._within_size(make_event(event_type, self.job_id, self.attempt, data))
        result = await self._publish_until(event, event_type, deadline)
        if result.id is None:
            self._ended = JobEnded(self.job_id, result.status)
            raise self._ended
        self._last_write = time.monotonic()
        if self._metrics is not None:
            self._metrics.events_published.labels(event_type.value).inc()
        return result.id

    def _within_size(self, event: Event) -> Event:
        event, replaced_bytes = within_size(event, self._max_event_bytes)
        if replaced_bytes is not None:
            logger.warning(
                "job %s: its %s event's data (%d bytes encoded) is over JOBWIRE_MAX_EVENT_BYTES "
                "(%d); stored as truncated",
                self.job_id,
                event["type"],
                replaced_bytes,
                self._max_event_bytes,
            )
        return event

    async def _publish_until(
        self, event: Event, event_type: EventType, deadline: float | None
    ) -> PublishResult:
        started = time.monotonic()
        last_try_by = started if deadline is None else deadline
        backoff = _FIRST_BACKOFF_S
        failures = 0
        while True:
            try:
                tried_at = time.monotonic()
                async with asyncio.timeout(max(last_try_by - tried_at, ATTEMPT_FLOOR_S)):
                    result = await self._publisher.publish(event)
                if self._metrics is not None:
                    self._metrics.publish_time.observe(time.monotonic() - tried_at)
                return result
            except _UNREACHABLE as exc:
                failures += 1
                remaining = last_try_by - time.monotonic()
                if deadline is None:
                    raise
                if remaining > 0 and self._metrics is not None:
                    self._metrics.publish_retries.inc()
                if remaining <= 0:
                    raise self._not_stored(event_type, time.monotonic() - started, exc) from exc
                if failures == 1:
                    logger.warning(
                        "job %s: Redis unreachable (%s); retrying its %s event for up to %.1f s",
                        self.job_id,
                        type(exc).__name__,
                        event_type.value,
                        remaining,
                    )
            await asyncio.sleep(min(backoff, remaining))
            backoff = min(backoff * 2, _MAX_BACKOFF_S)

    def _not_stored(
        self, event_type: EventType, waited_s: float, cause: BaseException
    ) -> EventNotStored:
        logger.error(
            "job %s: gave up writing its %s event after %.1f s: Redis unreachable (%s)",
            self.job_id,
            event_type.value,
            waited_s,
            type(cause).__name__,
        )
        return EventNotStored(self.job_id, event_type, waited_s)

    def _check_not_ended(self) -> None:
        if self._ended is not None:
            raise JobEnded(self.job_id, self._ended.status)
