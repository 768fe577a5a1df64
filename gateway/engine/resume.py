"""Where one subscriber starts in one job: the hub's input, decided before the stream opens.

A multi-job stream's position is a cursor, one stream id per job: `<job>:<ms>-<seq>` entries
joined by `,` (`:` and `,` never occur in job ids). The subscriber formats it into every
composite frame (`gateway.engine.subscriber`); reading a client's position is the HTTP
layer's (`gateway.endpoints.position`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.state import JobStatus, TokenBinding
from shared.streamid import StreamId

__all__ = ["Resume"]


@dataclass(frozen=True, slots=True)
class Resume:
    """Where one job's events start for this subscriber."""

    job_id: str
    after: StreamId | None  # deliver events after this id; None: from the stream's start
    reset: dict[str, Any] | None  # the `reset` event's data, when the position is not vouched
    finished: bool  # the subscriber already has the terminal event
    status: str = JobStatus.QUEUED.value  # as the state hash had it when the stream opened
    updated_at: int = 0  # unix ms of the job's last event then
    # Who may watch the job, as its state recorded when the stream opened (None: not read),
    # for the hub's feed to remember; and the generation of the watch token that opened the
    # job for this subscriber (None: not a token), so revoking it ends the stream.
    binding: TokenBinding | None = None
    token_generation: int | None = None
    from_ring: bool = False  # vouched for by the hub's ring of recent events (no Redis read)
