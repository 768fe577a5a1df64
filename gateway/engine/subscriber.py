"""One open stream as the hub sees it (`Subscriber`), and the ways a stream ends (`Outcome`).

A subscriber has no task of its own: the hub appends frames to its outbox and writes them to
its connection in one write per loop turn; the stream's request task only awaits `done`.
"""

from __future__ import annotations

import asyncio
from enum import Enum

from gateway.engine.connection import Connection
from gateway.engine.entry import Entry
from gateway.engine.framing import SSE, Framing
from gateway.engine.resume import Resume, format_cursor
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
        "open_jobs",
        "outbox",
        "wrote",
    )

    def __init__(
        self,
        connection: Connection,
        resumes: list[Resume],
        composite: bool,
        framing: Framing = SSE,
    ) -> None:
        self.connection = connection
        self.composite = composite
        self.framing = framing  # SSE or WebSocket: which bytes of each event it gets
        self.cursor: dict[str, StreamId | None] = {r.job_id: r.after for r in resumes}
        self.open_jobs = {r.job_id for r in resumes if not r.finished}
        # Per job being joined: events announced live while its backfill reads the stream.
        self.holding: dict[str, list[Entry]] = {}
        self.outbox: list[bytes] = []
        self.finishing = False  # the last open job ended: done once the outbox is written
        self.wrote = False  # written to since the last ping round
        self.done: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()

    def frame_for(self, job_id: str, entry: Entry) -> bytes:
        if not self.composite:
            return self.framing.event(entry)
        cursor = {job: pos for job, pos in self.cursor.items() if pos is not None}
        return self.framing.event_as(entry, format_cursor(cursor))
