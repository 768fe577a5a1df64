"""One watched job (`Feed`): its subscribers in this process, grouped by how far along they
are, and a ring of its latest events that lets a resume skip Redis.

The ring is bounded by count and by bytes, oldest out first, so a job of large events keeps
fewer of them; the newest entry always stays, however large, so the ring can still vouch for
the job's last event.

The feed also remembers who may watch the job (`binding`: its owner, incarnation and token
generation, as a joining subscriber read them from the job's state), so a watch token can be
checked without Redis when the ring vouches; and which subscribers a watch token let in, so
revoking the job's tokens ends their streams. A `queued` event begins a job: whatever the
feed held belonged to an earlier job under the same id, so the ring and binding start over.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice

from gateway.engine.entry import Entry
from gateway.engine.framing import WEBSOCKET
from gateway.engine.resume import Resume
from gateway.engine.subscriber import Subscriber
from shared.events import EventType
from shared.state import JobStatus, TokenBinding
from shared.streamid import StreamId

__all__ = ["Feed"]


@dataclass(eq=False)
class Feed:
    """One watched job: its subscribers here and the recent events the hub has seen."""

    job_id: str
    channel: bytes  # its live pub/sub channel
    max_ring_entries: int
    max_ring_bytes: int
    ring: deque[Entry] = field(default_factory=deque)
    ring_bytes: int = 0
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)  # and caught up
    last_id: StreamId | None = None  # the last event delivered live to this feed
    live: set[Subscriber] = field(default_factory=set)  # single-job SSE, at last_id
    live_ws: set[Subscriber] = field(default_factory=set)  # single-job WebSocket, at last_id
    live_composite: set[Subscriber] = field(default_factory=set)
    joining: set[Subscriber] = field(default_factory=set)
    ahead: set[Subscriber] = field(default_factory=set)  # joined past last_id
    linger: asyncio.TimerHandle | None = None
    # What `gateway.engine.liveness` watches for `stalled`.
    status: str = JobStatus.QUEUED.value
    last_event_ms: int = 0
    stalled: bool = False  # `stalled` was sent and no event came since
    binding: TokenBinding | None = None  # who may watch the job; None: not known here
    began_ms: int = 0  # when the job now under this id was queued, if the feed saw it
    # When the job was queued, until its `started` is seen here (for the submit-to-first-
    # event delay); 0: not known, or already started.
    queued_ms: int = 0
    by_token: dict[Subscriber, int] = field(default_factory=dict)  # -> its token's generation

    @property
    def empty(self) -> bool:
        return not (self.live or self.live_ws or self.live_composite or self.joining or self.ahead)

    def members(self) -> Iterator[Subscriber]:
        yield from self.live
        yield from self.live_ws
        yield from self.live_composite
        yield from self.joining
        yield from self.ahead

    def admit(self, subscriber: Subscriber) -> None:
        """Take a subscriber that has joined: live if it is at the feed's last event, else
        ahead until the feed catches up with it."""
        if self.last_id is not None and subscriber.cursor[self.job_id] == self.last_id:
            self.go_live(subscriber)
        else:
            self.ahead.add(subscriber)

    def go_live(self, subscriber: Subscriber) -> None:
        """Deliver the job's events to `subscriber` as they come: a single-job subscriber gets
        the event's shared frame (of its framing), a multi-job one its own."""
        if subscriber.composite:
            self.live_composite.add(subscriber)
        elif subscriber.framing is WEBSOCKET:
            self.live_ws.add(subscriber)
        else:
            self.live.add(subscriber)

    def learn(self, resume: Resume, subscriber: Subscriber) -> None:
        """Take what `resume` read of who may watch the job, unless it is older than what the
        feed knows (read before the job now under this id began, or a lower generation of the
        same job); and note the token that let `subscriber` in."""
        read = resume.binding
        if read is not None and _supersedes(read, self.binding, resume.updated_at >= self.began_ms):
            self.binding = read
        if resume.token_generation is not None:
            self.by_token[subscriber] = resume.token_generation

    def revoke(self, generation: int) -> list[Subscriber]:
        """The job's tokens before `generation` were revoked: the subscribers they let in."""
        if self.binding is not None and self.binding.generation < generation:
            self.binding = self.binding._replace(generation=generation)
        return [s for s, issued in self.by_token.items() if issued < generation]

    def remove(self, subscriber: Subscriber) -> bool:
        """Forget `subscriber`; True when no subscriber is left."""
        self.by_token.pop(subscriber, None)
        self.live.discard(subscriber)
        self.live_ws.discard(subscriber)
        self.live_composite.discard(subscriber)
        self.joining.discard(subscriber)
        self.ahead.discard(subscriber)
        return self.empty

    def record(self, entry: Entry) -> bool:
        """Move on to `entry` and keep it in the ring; False if the feed already had it
        (pub/sub and a catch-up read overlap)."""
        if self.last_id is not None and entry.id <= self.last_id:
            return False
        self.last_id = entry.id
        ring = self.ring
        if entry.type == EventType.QUEUED:
            ring.clear()
            self.ring_bytes = 0
            self.binding = None
            self.began_ms = self.queued_ms = entry.ts
        ring.append(entry)
        self.ring_bytes += entry.size
        while len(ring) > self.max_ring_entries or (
            self.ring_bytes > self.max_ring_bytes and len(ring) > 1
        ):
            self.ring_bytes -= ring.popleft().size
        return True

    def forget_history(self) -> None:
        """The stream no longer holds what the feed delivered (a failover lost it): start over
        as a feed that has seen nothing, so the ring vouches for no position of that past."""
        self.ring.clear()
        self.ring_bytes = 0
        self.last_id = None
        self.binding = None

    def newer_than(self, position: StreamId) -> list[Entry] | None:
        """The ring's entries after `position`, oldest first, if the ring holds `position`;
        None if it does not (never seen here, or already pushed out)."""
        index = self._index_of(position)
        return None if index is None else list(islice(self.ring, index + 1, None))

    def holds(self, position: StreamId) -> bool:
        """Whether the ring holds `position` (`newer_than` would not be None)."""
        return self._index_of(position) is not None

    def _index_of(self, position: StreamId) -> int | None:
        ring = self.ring
        if not ring or ring[-1].id != self.last_id:
            return None
        # Ids rise along the ring: a bisection, not a walk back from the newest (each
        # reconnect of a storm asks twice, to vouch and to replay).
        index = bisect_left(ring, position, key=_entry_id)
        if index == len(ring) or ring[index].id != position:
            return None
        return index


def _entry_id(entry: Entry) -> StreamId:
    return entry.id


def _supersedes(read: TokenBinding, known: TokenBinding | None, read_since_began: bool) -> bool:
    """Whether `read` is news to a feed that knows `known`: read since the job now under this
    id began, and of another job or owner, or of a later token generation."""
    if not read_since_began:
        return False
    return known is None or read[:2] != known[:2] or read.generation > known.generation
