"""Jobs played by the test itself, far faster than a worker would run them — how fault tests
get thousands of events in seconds.

The test acts as a worker would: it advertises the job name in the catalog, the job is
submitted through the gateway like any other (so the gateway records whatever it records at
submit, its owner included), and its events are written through the real publish script
(`shared.publish.Publisher`) at a chosen pace and size. Nothing consumes the job from arq's
queue; the test's publishing is the job.
"""

from __future__ import annotations

import asyncio

import httpx
from redis.asyncio import Redis

from shared.catalog import JobSpec, advertise
from shared.events import EventType, make_event
from shared.keys import Keys
from shared.publish import Publisher

__all__ = ["FEED_JOB_NAME", "advertise_feed", "new_feed_jobs", "play_job", "submit_feed"]

FEED_JOB_NAME = "test.feed"


async def advertise_feed(redis: Redis, keys: Keys) -> None:
    """Makes the feed job's name known to the gateway, as a worker's start-up does."""
    spec = JobSpec(name=FEED_JOB_NAME, params=[], required=[], accepts_any=False, doc="")
    await advertise(redis, keys, [spec])


async def submit_feed(api: httpx.AsyncClient) -> str:
    """Submits a feed job through the gateway; its `queued` event is the gateway's."""
    reply = await api.post("/jobs", json={"name": FEED_JOB_NAME})
    assert reply.status_code == 202, reply.text
    job_id: str = reply.json()["job_id"]
    return job_id


async def new_feed_jobs(api: httpx.AsyncClient, redis: Redis, keys: Keys, count: int) -> list[str]:
    """`count` feed jobs, submitted through the gateway `api` talks to."""
    await advertise_feed(redis, keys)
    return [await submit_feed(api) for _ in range(count)]


async def play_job(
    publisher: Publisher,
    job_id: str,
    *,
    events: int,
    interval_s: float = 0.0,
    payload_bytes: int = 0,
    finish: bool = True,
) -> None:
    """`started`, `events` data events `interval_s` apart (each with `payload_bytes` of text),
    then `completed` unless not `finish`."""
    await _publish(publisher, job_id, EventType.STARTED, {"attempt": 1, "worker": "feed"})
    filler = "x" * payload_bytes
    for index in range(events):
        await _publish(publisher, job_id, EventType.DATA, {"index": index, "text": filler})
        if interval_s:
            await asyncio.sleep(interval_s)
    if finish:
        await _publish(publisher, job_id, EventType.COMPLETED, {"result": {"events": events}})


async def _publish(
    publisher: Publisher, job_id: str, event_type: EventType, data: dict[str, object]
) -> None:
    result = await publisher.publish(make_event(event_type, job_id, 1, data))
    assert result.accepted, result
