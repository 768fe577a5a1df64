"""One open stream as the hub sees it (`Subscriber`), and the ways a stream ends (`Outcome`).

A subscriber has no task of its own: the hub appends frames to its outbox and writes them to
its connection in one write per loop turn; the stream's request task only awaits `done`.
"""

from __future__ import annotations

import asyncio
from enum import Enum

from gateway.engine.connection import Connection
from gateway.engine.entry import Entry
from gateway.engine.framing import Framing
from gateway.engine.resume import Resume
from shared.streamid import StreamId

__all__ = ["Outcome", "Subscriber"]


class Outcome(Enum):
    FINISHED = "finished"  # every job delivered its terminal event
    LOST = "lost"  # the client went away
    CUT = "cut"  # too slow: more than max_buffer_bytes unsent
    SHUTDOWN = "shutdown"  # the gateway is stopping
    UNAVAILABLE = "unavailable"  # Redis could not be read to join: the client retries
    REVOKED = "revoked"  # a watch token it was opened with was revoked


class Subscriber:
    """One open stream: its connection, its outbox, and where it is in each job."""

    __slots__ = (
        "composite",
        "connection",
        "cursor",
        "done",
        "finishing",
        "framing",
        "holding",
        "marks",
        "open_jobs",
        "outbox",
        "wrote",
    )

    def __init__(
        self,
        connection: Connection,
        resumes: list[Resume],
        composite: bool,
        framing: Framing,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.connection = connection
        self.composite = composite
        self.framing = framing  # SSE or WebSocket: which bytes of each event it gets
        self.cursor: dict[str, StreamId | None] = {r.job_id: r.after for r in resumes}
        self.open_jobs = {r.job_id for r in resumes if not r.finished}
        # A multi-job stream's cursor as the `job:id` parts of its `id:`, in the cursor's order
        # (b"": no position yet): each event rewrites one part instead of the whole cursor.
        self.marks: dict[str, bytes] | None = (
            {job: b"" if at is None else _mark(job, at) for job, at in self.cursor.items()}
            if composite
            else None
        )
        # Per job being joined: events announced live while its backfill reads the stream.
        self.holding: dict[str, list[Entry]] = {}
        self.outbox: list[bytes] = []
        self.finishing = False  # the last open job ended: done once the outbox is written
        self.wrote = False  # written to since the last ping round
        self.done: asyncio.Future[Outcome] = loop.create_future()

    def advance(self, job_id: str, entry: Entry) -> bytes:
        """Move the cursor past `entry`; the event's frame for this stream."""
        self.cursor[job_id] = entry.id
        marks = self.marks
        if marks is None:
            return self.framing.event(entry)
        marks[job_id] = _mark(job_id, entry.id)
        return self.framing.event_as(entry, b",".join(filter(None, marks.values())))

    def advance_through(self, job_id: str, entries: list[Entry]) -> list[bytes]:
        """`advance` past each of `entries`, one job's, oldest first: their frames. The other
        jobs' parts of a cursor do not change meanwhile, so they are joined once, not once per
        event (a storm replays a ring to thousands of multi-job streams)."""
        self.cursor[job_id] = entries[-1].id
        marks = self.marks
        if marks is None:
            return [self.framing.event(entry) for entry in entries]
        jobs = list(marks)
        at = jobs.index(job_id)
        before = b",".join(filter(None, [marks[job] for job in jobs[:at]]))
        after = b",".join(filter(None, [marks[job] for job in jobs[at + 1 :]]))
        head = (before + b"," if before else b"") + job_id.encode() + b":"
        tail = b"," + after if after else b""
        event_as = self.framing.event_as
        frames = [
            event_as(entry, b"%b%d-%d%b" % (head, entry.id.ms, entry.id.seq, tail))
            for entry in entries
        ]
        marks[job_id] = _mark(job_id, entries[-1].id)
        return frames


def _mark(job_id: str, position: StreamId) -> bytes:
    return b"%s:%d-%d" % (job_id.encode(), position.ms, position.seq)
