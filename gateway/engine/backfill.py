"""The backfill: a joining subscriber's events read from the stream (XRANGE) when the feed's
ring does not hold its position.

The writes are paced to how fast the client takes them: every quarter of `max_buffer_bytes`
the subscriber's outbox is written and drained, so a client far behind on large events is
served, not cut off as too slow. An entry that is not an event is skipped and counted, and
reading goes on after it, so a bad entry is never read again and again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.engine.entry import BadEntry, BadEntryLog, Entry
from gateway.engine.subscriber import Subscriber
from shared.clients import EventsRedis

__all__ = ["BACKFILL_BATCH", "FIRST_BACKFILL_BATCH", "Backfill"]

BACKFILL_BATCH = 500
# The first read of a backfill, before the size of this job's events is known.
FIRST_BACKFILL_BATCH = 32

Deliver = Callable[[Subscriber, str, Entry], None]
WriteNow = Callable[[Subscriber], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Backfill:
    redis: EventsRedis
    max_buffer_bytes: int
    bad_entries: BadEntryLog
    deliver: Deliver  # hands one entry to the subscriber, if it does not have it yet
    write_now: WriteNow  # writes the subscriber's outbox and waits for the client to take it

    async def run(self, subscriber: Subscriber, job_id: str, stream_key: str) -> None:
        """Deliver the stream after the subscriber's position in `job_id`, until its end."""
        pace_bytes = self.max_buffer_bytes // 4
        position = subscriber.cursor[job_id]
        start = "-" if position is None else f"({position}"
        count = FIRST_BACKFILL_BATCH
        while job_id in subscriber.open_jobs and not subscriber.done.done():
            entries = await self.redis.xrange(stream_key, start, "+", count=count)
            unflushed = read = 0
            for raw_id, fields in entries:
                size = self._deliver_stored(subscriber, job_id, raw_id, fields)
                unflushed += size
                read += size
                if unflushed > pace_bytes:
                    unflushed = 0
                    await self.write_now(subscriber)
            if len(entries) < count:
                return
            # From the last entry read, delivered or not: a bad one must not be read forever.
            start = f"({entries[-1][0].decode()}"
            # Large events: read fewer at a time, so one read holds about one buffer's worth.
            average = read // len(entries) + 1
            count = max(1, min(BACKFILL_BATCH, self.max_buffer_bytes // average))

    def _deliver_stored(
        self, subscriber: Subscriber, job_id: str, raw_id: bytes, fields: dict[bytes, bytes]
    ) -> int:
        """Deliver an entry XRANGE read, unless it is not an event; the bytes of its event."""
        try:
            entry = Entry.stored(raw_id, fields)
        except BadEntry as error:
            self.bad_entries.skipped(job_id, error)
            return 0
        self.deliver(subscriber, job_id, entry)
        return len(entry.payload)
