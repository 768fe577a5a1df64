"""The one path by which an attempt's events reach its stream.

Writes are serialized under one lock, so the stream holds events in the order they were
written. Progress is coalesced: a value arriving sooner than `progress_interval_s` after the
last written one is held as *pending* (a later value replaces it) and is written by a timer when
its interval is due, or before any other event, whichever comes first. So the last value of a
burst always lands, and always before whatever the job writes next. A heartbeat fills any
silence longer than `heartbeat_s`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

from shared.events import EventType, make_event
from shared.publish import Publisher
from shared.streamid import StreamId

__all__ = ["EventWriter", "JobEnded"]

logger = logging.getLogger(__name__)


class JobEnded(Exception):
    """The job's stream already holds its terminal event (it was cancelled, for one)."""

    def __init__(self, job_id: str, status: str | None) -> None:
        super().__init__(f"job {job_id} already {status or 'ended'}")
        self.status = status


class EventWriter:
    def __init__(
        self,
        publisher: Publisher,
        job_id: str,
        attempt: int,
        *,
        progress_interval_s: float,
        heartbeat_s: float,
    ) -> None:
        self.job_id = job_id
        self.attempt = attempt
        self._publisher = publisher
        self._progress_interval_s = progress_interval_s
        self._heartbeat_s = heartbeat_s
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
        """Writes the pending progress value, if any, then this event."""
        async with self._lock:
            await self._write_pending()
            return await self._publish(event_type, data)

    async def finish(self, event_type: EventType, data: dict[str, Any]) -> StreamId:
        """The attempt's last event: background writes stop, pending progress goes first."""
        await self.stop()
        return await self.write(event_type, data)

    async def write_progress(self, data: dict[str, Any], *, immediate: bool = False) -> None:
        """Writes `data` now, or holds it as pending if the last progress write is too recent.

        `immediate` writes the pending value and then `data` at once (a new stage begins).
        """
        async with self._lock:
            if immediate:
                await self._write_pending()
            elif self._pending is not None or not self._progress_due():
                self._check_not_ended()
                self._pending = data
                self._schedule_flush()
                return
            await self._publish_progress(data)

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
                    await self._write_pending()
                except JobEnded:
                    pass  # remembered: the job's next write raises it
                except Exception:
                    logger.warning("writing progress of job %s failed", self.job_id, exc_info=True)
                return

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(max(self._last_write + self._heartbeat_s - time.monotonic(), 0))
            async with self._lock:
                if time.monotonic() - self._last_write < self._heartbeat_s:
                    continue
                try:
                    await self._write_pending()
                    await self._publish(EventType.HEARTBEAT, {"interval_s": self._heartbeat_s})
                except JobEnded:
                    return
                except Exception:
                    logger.warning("heartbeat of job %s failed", self.job_id, exc_info=True)
                    # Wait a full interval before trying again rather than spinning.
                    self._last_write = time.monotonic()

    async def _write_pending(self) -> None:
        if self._pending is not None:
            data, self._pending = self._pending, None
            await self._publish_progress(data)

    async def _publish_progress(self, data: dict[str, Any]) -> None:
        await self._publish(EventType.PROGRESS, data)
        self._last_progress_write = time.monotonic()

    async def _publish(self, event_type: EventType, data: dict[str, Any]) -> StreamId:
        self._check_not_ended()
        result = await self._publisher.publish(
            make_event(event_type, self.job_id, self.attempt, data)
        )
        if result.id is None:
            self._ended = JobEnded(self.job_id, result.status)
            raise self._ended
        self._last_write = time.monotonic()
        return result.id

    def _check_not_ended(self) -> None:
        if self._ended is not None:
            raise JobEnded(self.job_id, self._ended.status)
