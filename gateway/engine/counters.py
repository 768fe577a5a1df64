"""What one gateway process counts (`GatewayCounters`): plain integers, bumped where things
happen and turned into Prometheus metrics only when read (`gateway.endpoints.instruments`).

The hub writes to thousands of sockets per flush. A Prometheus `inc()` per write would cost
every subscriber of every event a method call and a lock (a file write, in multiprocess mode);
an integer added once per event or per flush costs next to nothing, and the reading happens
at scrape time (and once a second when several processes share the port).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import Enum

__all__ = ["GatewayCounters", "ResumeKind"]


class ResumeKind(Enum):
    """How a stream request that named a position in a job was answered, for that job."""

    RING = "ring"  # the hub's ring of recent events held the position: no Redis read
    REDIS = "redis"  # the stream in Redis held it
    RESET = "reset"  # nothing could vouch for it: `reset`, then what the stream holds
    FINISHED = "finished"  # the client had the terminal event (all of them: 204)


@dataclass(slots=True, eq=False)
class GatewayCounters:
    """Totals since the process started; the gauges are read from the hub itself."""

    events_delivered: int = 0  # event frames handed to subscribers (one per event per stream)
    bytes_written: int = 0  # to event-stream sockets, pings and heads included
    slow_consumer_cutoffs: int = 0  # past JOBWIRE_MAX_BUFFER_BYTES unsent
    send_timeouts: int = 0  # nothing taken within JOBWIRE_SEND_TIMEOUT_S
    pubsub_reconnects: int = 0  # the pub/sub connection was lost and opened again
    resumes: Counter[ResumeKind] = field(default_factory=Counter)
    # (route template, method, status)
    requests: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    # Seconds from a job's `queued` to its `started` reaching its streams here, one per job
    # whose start was seen live; taken (and emptied) by whoever reads the counters.
    first_event_delays: list[float] = field(default_factory=list)
