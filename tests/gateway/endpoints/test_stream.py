"""`GET /jobs/{id}/events`: live delivery and exact resume, through a real uvicorn, a real
arq worker and a real redis-server."""

from __future__ import annotations

import orjson
import pytest
from redis.asyncio import Redis

from shared.events import EventType, make_event
from shared.publish import Publisher
from shared.settings import Settings
from tests.auth_support import (
    holding_alices_one_stream,
)
from tests.conftest import Gateway, StartGateway
from tests.redis_reads import state_reads
from tests.support import (
    ServerSentEvent,
    collect_events,
    event_types,
    read_events,
    stream_ids,
    submit,
)

pytestmark = pytest.mark.timeout(60)


def stored(events: list[ServerSentEvent]) -> list[ServerSentEvent]:
    """Events that carry an id: the ones the stream holds."""
    return [event for event in events if event.id is not None]


async def test_live_stream_is_exactly_the_jobs_events(
    stack: Gateway, redis: Redis, settings: Settings
) -> None:
    async with stack.client() as client:
        job_id = await submit(client, "demo.countdown", seconds=0.5, steps=5)
        events = await collect_events(client, job_id)

    types = event_types(events)
    assert types == ["queued", "started"] + ["progress"] * (len(types) - 3) + ["completed"]
    currents = [event.json()["data"]["current"] for event in events if event.event == "progress"]
    assert currents == sorted(currents)
    assert currents[-1] == 5
    assert events[-1].json()["data"]["result"] == {"counted": 5}
    assert events[0].retry == settings.sse_retry_ms
    ids = [event.id for event in events]
    assert ids == await stream_ids(redis, settings, job_id)
    parsed = [tuple(map(int, str(event_id).split("-"))) for event_id in ids]
    assert parsed == sorted(set(parsed)), "ids strictly increase"
    assert all(event.json()["job"] == job_id for event in events)


@pytest.mark.parametrize("cut_after", [1, 2, 4, 7])
async def test_resume_after_cut_gets_exactly_the_rest(
    stack: Gateway, redis: Redis, settings: Settings, cut_after: int
) -> None:
    async with stack.client() as client:
        job_id = await submit(client, "demo.countdown", seconds=0.6, steps=6)
        first = await collect_events(client, job_id, limit=cut_after)
        rest = await collect_events(client, job_id, headers={"Last-Event-ID": str(first[-1].id)})

    assert [event.id for event in first + rest] == await stream_ids(redis, settings, job_id)
    assert rest[-1].event == "completed"


async def test_resume_by_query_parameter_and_chained_cuts(
    stack: Gateway, redis: Redis, settings: Settings
) -> None:
    received: list[ServerSentEvent] = []
    async with stack.client() as client:
        job_id = await submit(client, "demo.countdown", seconds=0.8, steps=8)
        params: dict[str, str] | None = None
        while not received or received[-1].event != "completed":
            received += stored(await collect_events(client, job_id, params=params, limit=2))
            params = {"last_event_id": str(received[-1].id)}

    assert [event.id for event in received] == await stream_ids(redis, settings, job_id)


async def test_resume_after_the_job_finished_gets_the_rest_and_closes(
    stack: Gateway, redis: Redis, settings: Settings
) -> None:
    async with stack.client() as client:
        job_id = await submit(client, "demo.countdown", seconds=0.2, steps=2)
        everything = await collect_events(client, job_id)
        ids = await stream_ids(redis, settings, job_id)
        rest = await collect_events(client, job_id, headers={"Last-Event-ID": ids[1]})

    assert [event.id for event in rest] == ids[2:]
    assert [event.id for event in everything] == ids


async def test_resume_at_the_terminal_event_is_204(stack: Gateway) -> None:
    async with stack.client() as client:
        job_id = await submit(client, "demo.countdown", seconds=0.1, steps=1)
        events = await collect_events(client, job_id)
        header = await client.get(
            f"/jobs/{job_id}/events", headers={"Last-Event-ID": str(events[-1].id)}
        )
        query = await client.get(
            f"/jobs/{job_id}/events", params={"last_event_id": str(events[-1].id)}
        )

    assert (header.status_code, header.content) == (204, b"")
    assert query.status_code == 204


async def test_stream_headers(stack: Gateway) -> None:
    async with stack.client() as client:
        job_id = await submit(client, "demo.countdown", seconds=0.1, steps=1)
        async with client.stream("GET", f"/jobs/{job_id}/events") as response:
            headers = response.headers
            await response.aread()

    assert headers["content-type"] == "text/event-stream"
    assert headers["cache-control"] == "no-cache"
    assert headers["x-accel-buffering"] == "no"


async def _publish_many(settings: Settings, redis: Redis, job_id: str, count: int) -> None:
    publisher = Publisher(redis, settings)
    queued = make_event(EventType.QUEUED, job_id, 0, {"name": "demo.countdown", "args": {}})
    assert (await publisher.publish(queued, create=True)).accepted
    await publisher.publish(make_event(EventType.STARTED, job_id, 1, {"attempt": 1}))
    for current in range(count):
        event = make_event(EventType.PROGRESS, job_id, 1, {"current": current, "total": count})
        await publisher.publish(event)
    await publisher.publish(make_event(EventType.COMPLETED, job_id, 1, {"result": None}))


async def test_trimmed_history_gives_reset_with_snapshot_then_the_rest(
    start_gateway: StartGateway, redis: Redis, settings: Settings
) -> None:
    trimming = settings.replace(stream_maxlen=10)
    gateway = await start_gateway(trimming)
    job_id = "trimmed-job"
    await _publish_many(trimming, redis, job_id, count=500)
    ids = await stream_ids(redis, settings, job_id)
    assert len(ids) < 200, "the stream was trimmed"
    async with gateway.client() as client:
        trimmed_away = "0-1"
        resumed = await collect_events(client, job_id, headers={"Last-Event-ID": trimmed_away})
        fresh = await collect_events(client, job_id)

    for events in (resumed, fresh):
        reset, rest = events[0], events[1:]
        assert reset.event == "reset"
        assert reset.id is None, "a reset must not move the client's position"
        state = reset.json()["state"]
        assert state["status"] == "completed"
        assert state["last_event_id"] == ids[-1]
        assert [event.id for event in rest] == ids


async def test_position_of_another_stream_gives_reset(
    stack: Gateway, redis: Redis, settings: Settings
) -> None:
    async with stack.client() as client:
        job_a = await submit(client, "demo.countdown", seconds=0.1, steps=1)
        events_a = await collect_events(client, job_a)
        job_b = await submit(client, "demo.countdown", seconds=0.1, steps=1)
        await collect_events(client, job_b)
        # An id of job A, which job B's stream never held, but lies below B's last id.
        events_b = await collect_events(
            client, job_b, headers={"Last-Event-ID": str(events_a[-1].id)}
        )

    assert events_b[0].event == "reset"
    assert events_b[0].json()["reason"] == "unknown_position"
    assert [event.id for event in events_b[1:]] == await stream_ids(redis, settings, job_b)


async def test_idle_stream_gets_comment_pings(
    start_gateway: StartGateway, redis: Redis, settings: Settings
) -> None:
    fast_ping = settings.replace(ping_s=0.1)
    gateway = await start_gateway(fast_ping)
    queued = make_event(EventType.QUEUED, "idle-job", 0, {"name": "demo.countdown", "args": {}})
    await Publisher(redis, settings).publish(queued, create=True)
    chunks = b""
    async with (
        gateway.client() as client,
        client.stream("GET", "/jobs/idle-job/events") as stream,
    ):
        async for chunk in stream.aiter_raw():
            chunks += chunk
            if chunks.count(b": ping\n\n") >= 2:
                break

    assert chunks.startswith(b"retry: ")
    assert b"event: queued\n" in chunks


async def test_new_events_arrive_live_on_an_open_stream(
    start_gateway: StartGateway, redis: Redis, settings: Settings
) -> None:
    gateway = await start_gateway()
    publisher = Publisher(redis, settings)
    job_id = "live-job"
    queued = make_event(EventType.QUEUED, job_id, 0, {"name": "demo.countdown", "args": {}})
    await publisher.publish(queued, create=True)
    received: list[ServerSentEvent] = []
    async with (
        gateway.client() as client,
        client.stream("GET", f"/jobs/{job_id}/events") as response,
    ):
        events = read_events(response)
        received.append(await anext(events))
        for current in range(3):
            progress = make_event(EventType.PROGRESS, job_id, 1, {"current": current})
            await publisher.publish(progress)
            event = await anext(events)
            assert orjson.loads(event.data)["data"]["current"] == current
            received.append(event)
        await publisher.publish(make_event(EventType.COMPLETED, job_id, 1, {"result": 1}))
        received.append(await anext(events))
        with pytest.raises(StopAsyncIteration):
            await anext(events)

    assert event_types(received) == ["queued", "progress", "progress", "progress", "completed"]
    assert [event.id for event in received] == await stream_ids(redis, settings, job_id)


async def test_streams_with_and_without_an_origin_header_are_the_same(stack: Gateway) -> None:
    # Without Origin a stream skips the middleware stack; with it, it goes through CORS.
    async with stack.client() as client:
        job_id = await submit(client, "demo.countdown", seconds=0.1, steps=1)
        direct = await collect_events(client, job_id)
        via_middleware = await collect_events(
            client, job_id, headers={"Origin": "http://elsewhere.example"}
        )
        missing = await client.get("/jobs/no-such-job/events")
        bad = await client.get(f"/jobs/{job_id}/events", headers={"Last-Event-ID": "x"})

    assert [event.id for event in direct] == [event.id for event in via_middleware]
    assert (missing.status_code, missing.json()["error"]) == (404, "job_not_found")
    assert (bad.status_code, bad.json()["error"]) == (400, "invalid_last_event_id")


async def test_a_made_up_job_is_refused_before_redis_is_read_once_the_slots_are_taken(
    start_gateway: StartGateway, settings: Settings, redis: Redis
) -> None:
    # The stream slot comes first: a key with none left costs the gateway no Redis round trip.
    async with holding_alices_one_stream(start_gateway, redis, settings) as (_, client, _):
        before = await state_reads(redis)
        refused = await client.get("/jobs/made-up/events")
        reads = await state_reads(redis) - before

    assert refused.status_code == 429, refused.text
    assert (refused.json()["error"], refused.headers["retry-after"]) == ("too_many_streams", "5")
    assert reads == 0
