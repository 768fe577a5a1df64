"""Keeping streams alive and honest: a ping on each idle stream (an SSE comment, a WebSocket
ping frame), so proxies do not cut it, and a `stalled` event for the subscribers of a running
job gone silent (its worker died or hung).

Neither carries an `id:`, so neither moves a client's position. Both go out through the hub's
`send`, so they share the subscriber's outbox and its one write per loop turn. A job's next
event is the all-clear for `stalled` (`note`); arq reruns a job whose worker died.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping

import orjson

from gateway.engine.feed import Feed
from gateway.engine.framing import Framing
from gateway.engine.subscriber import Subscriber
from shared.events import now_ms
from shared.state import JobStatus, is_stalled, status_after

__all__ = ["note", "ping_forever", "stall_data", "watch_stalls"]

_STATUSES = frozenset(status.value for status in JobStatus)

Send = Callable[[Subscriber, bytes], None]


def note(feed: Feed, event_type_or_status: str, at_ms: int) -> None:
    """Track what the job is doing, for `stalled`: its status and last event time."""
    status = (
        event_type_or_status
        if event_type_or_status in _STATUSES
        else status_after(event_type_or_status)
    )
    if status is not None:
        feed.status = str(status)
    feed.last_event_ms = max(feed.last_event_ms, at_ms)
    feed.stalled = False


async def ping_forever(interval_s: float, subscribers: Collection[Subscriber], send: Send) -> None:
    """Every `interval_s`, ping each subscriber nothing was written to since the last round."""
    while True:
        await asyncio.sleep(interval_s)
        for subscriber in subscribers:
            if not subscriber.wrote:
                send(subscriber, subscriber.framing.ping)
            subscriber.wrote = False


async def watch_stalls(heartbeat_s: float, feeds: Mapping[str, Feed], send: Send) -> None:
    """Every heartbeat, tell the subscribers of each running job silent for too long, once."""
    while True:
        await asyncio.sleep(heartbeat_s)
        now = now_ms()
        for feed in feeds.values():
            if feed.stalled or feed.empty:
                continue
            if is_stalled(feed.status, feed.last_event_ms, heartbeat_s, now):
                feed.stalled = True
                data = stall_data(feed, now)
                frames: dict[Framing, bytes] = {}
                for subscriber in list(feed.members()):
                    framing = subscriber.framing
                    frame = frames.get(framing)
                    if frame is None:
                        frame = frames[framing] = framing.notice("stalled", data)
                    send(subscriber, frame)


def stall_data(feed: Feed, now: int) -> bytes:
    data = {
        "job": feed.job_id,
        "silent_s": round((now - feed.last_event_ms) / 1000, 1),
        "last_event_id": None if feed.last_id is None else str(feed.last_id),
    }
    return orjson.dumps(data)
