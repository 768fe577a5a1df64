"""Where a consumer is in its stream: the last stored event delivered, the `Last-Event-ID` the
next attempt sends, and the rule that drops duplicates.

One job (`JobPosition`): its last stream id. Several jobs on one connection (`Cursor`, for
`GET /events`): every event's `id:` is the cursor of every job — `<job>:<ms>-<seq>` entries
joined by `,` — and each job keeps a position of its own, so duplicates are dropped per job
and the next attempt resumes each job where it was.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from jobwire.client.events import InvalidEvent, JobEvent, parse_event
from jobwire.client.sse import ServerSentEvent
from shared.streamid import StreamId

__all__ = ["Cursor", "JobPosition", "Position"]


class Position(Protocol):
    """What the resume loop (`jobwire.client.stream`) needs to know of where it is."""

    @property
    def last_event_id(self) -> str | None:
        """What to send as `Last-Event-ID` (None: nothing delivered yet)."""
        ...

    @property
    def finished(self) -> bool:
        """Every job's terminal event was delivered."""
        ...

    def read(self, message: ServerSentEvent) -> JobEvent: ...

    def take(self, event: JobEvent) -> bool:
        """Whether `event` is new; moves the position if it is."""
        ...


class JobPosition:
    """One job's last stored event delivered. After a `reset` the gateway starts over from
    what the stream still holds, so the next stored event is taken whatever its id.

    `job_id` may be "" until the first event names it (a submit-and-stream)."""

    def __init__(self, job_id: str, after: str | None = None) -> None:
        self.job_id = job_id
        self.last = None if after is None else StreamId.parse(after)
        self.finished = False
        self._after_reset = False

    @property
    def last_event_id(self) -> str | None:
        return None if self.last is None else str(self.last)

    def read(self, message: ServerSentEvent) -> JobEvent:
        return parse_event(message, self.job_id)

    def take(self, event: JobEvent) -> bool:
        stream_id = event.stream_id
        if stream_id is None:
            self._after_reset = self._after_reset or event.is_reset
            return True
        if self.last is not None and stream_id <= self.last and not self._after_reset:
            return False
        self.job_id = self.job_id or event.job
        self.last, self._after_reset = stream_id, False
        self.finished = event.is_terminal
        return True


class Cursor:
    """Several jobs' positions, for one stream of all of them."""

    def __init__(self, after: Mapping[str, str | None]) -> None:
        """`after`: each job, with the id of its last event delivered (None: none yet)."""
        self._jobs = {job_id: JobPosition(job_id, position) for job_id, position in after.items()}

    @property
    def last_event_id(self) -> str | None:
        entries = [
            f"{job_id}:{position.last_event_id}"
            for job_id, position in self._jobs.items()
            if position.last_event_id is not None
        ]
        return ",".join(entries) or None

    @property
    def finished(self) -> bool:
        return all(position.finished for position in self._jobs.values())

    def read(self, message: ServerSentEvent) -> JobEvent:
        return parse_event(message, "", composite=True)

    def take(self, event: JobEvent) -> bool:
        position = self._jobs.get(event.job)
        if position is None:
            raise InvalidEvent(f"an event of job {event.job!r}, which the stream was not asked for")
        return position.take(event)
