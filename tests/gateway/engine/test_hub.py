"""The fan-out hub under load and faults: exact sequences for subscribers that join at any
moment, a constant number of Redis connections, nothing left behind, slow and dying
connections that harm no one."""

from __future__ import annotations

import asyncio
import gc
import random

import pytest
from redis.asyncio import Redis

from gateway.engine.subscriber import Subscriber
from shared.events import EventType, make_event
from shared.keys import Keys
from shared.publish import Publisher
from shared.settings import Settings
from tests.conftest import Gateway, StartGateway
from tests.support import (
    RawResponse,
    close_with_reset,
    open_unread_stream,
    publish_completed,
    publish_progress,
    publish_started,
    raw_get,
    read_events,
    scaled,
    stream_ids,
    wait_until,
)

pytestmark = pytest.mark.timeout(90)


async def test_subscribers_joining_at_random_moments_get_exactly_the_stream(
    start_gateway: StartGateway, redis: Redis, settings: Settings
) -> None:
    gateway = await start_gateway()
    publisher = Publisher(redis, settings)
    rng = random.Random(5)
    job_id = "hot-job"
    await publish_started(publisher, job_id)
    watchers: list[asyncio.Task[RawResponse]] = []
    published = await stream_ids(redis, settings, job_id)
    total = 1000
    join_at = sorted(rng.sample(range(total), 200))
    for n in range(total):
        while join_at and join_at[0] == n:
            join_at.pop(0)
            path = f"/jobs/{job_id}/events"
            # Some join from scratch, some resume from a recent id (often one the hub has in
            # its ring, sometimes one it has not announced yet).
            position = rng.choice([None, *published[-5:]])
            headers = {} if position is None else {"Last-Event-ID": position}
            watchers.append(asyncio.create_task(raw_get(gateway.port, path, headers)))
        progress = make_event(EventType.PROGRESS, job_id, 1, {"current": n})
        published.append(str((await publisher.publish(progress)).id))
    await publish_completed(publisher, job_id)
    responses = await asyncio.gather(*watchers)

    stored = await stream_ids(redis, settings, job_id)
    for response in responses:
        ids = response.event_ids()
        assert response.status == 200
        assert ids == stored[len(stored) - len(ids) :], "a gap, a duplicate or a reordering"
        assert ids[-1] == stored[-1]


async def test_redis_connections_stay_constant_whatever_the_subscribers(
    start_gateway: StartGateway, redis: Redis, settings: Settings
) -> None:
    gateway = await start_gateway()
    publisher = Publisher(redis, settings)
    jobs = [f"conn-{n}" for n in range(20)]
    for job_id in jobs:
        await publish_started(publisher, job_id)
    watchers = [
        asyncio.create_task(raw_get(gateway.port, f"/jobs/{jobs[n % 20]}/events"))
        for n in range(400)
    ]
    await wait_until(lambda: gateway.hub.counts()["subscribers"] == 400, timeout=30)
    clients = await redis.client_list()
    gateway_connections = [c for c in clients if c["name"] == "jobwire-gateway"]
    counts = gateway.hub.counts()
    for job_id in jobs:
        await publish_completed(publisher, job_id)
    await asyncio.gather(*watchers)

    assert counts["feeds"] == 20, "one subscription per job"
    assert len(gateway_connections) <= 7
    pubsub = [c for c in gateway_connections if int(c["ssub"]) > 0]
    assert len(pubsub) == 1
    assert int(pubsub[0]["ssub"]) == 20


async def test_nothing_outlives_its_subscribers(
    start_gateway: StartGateway, redis: Redis, settings: Settings
) -> None:
    gateway = await start_gateway(settings.replace(hub_linger_s=0.05))
    publisher = Publisher(redis, settings)
    jobs = [f"leave-{n}" for n in range(5)]
    for job_id in jobs:
        await publish_started(publisher, job_id)
    tasks_before = len(asyncio.all_tasks())
    watchers = [
        asyncio.create_task(raw_get(gateway.port, f"/jobs/{job_id}/events"))
        for job_id in jobs
        for _ in range(10)
    ]
    await wait_until(lambda: gateway.hub.counts()["subscribers"] == 50)
    for watcher in watchers:  # every client goes away mid-stream
        watcher.cancel()
    await asyncio.gather(*watchers, return_exceptions=True)

    await wait_until(
        lambda: (
            gateway.hub.counts()
            == {"subscribers": 0, "feeds": 0, "ring_entries": 0, "ring_bytes": 0}
        )
    )
    channels = [Keys(settings.key_prefix).live(job_id) for job_id in jobs]
    await wait_until(lambda: _no_subscriptions(redis, channels))
    await wait_until(lambda: len(asyncio.all_tasks()) <= tasks_before)


async def _no_subscriptions(redis: Redis, channels: list[str]) -> bool:
    counts = await redis.pubsub_shardnumsub(*channels)
    return all(count == 0 for _, count in counts)


async def test_lost_pubsub_connection_is_caught_up_from_the_stream(
    start_gateway: StartGateway, redis: Redis, settings: Settings
) -> None:
    gateway = await start_gateway()
    publisher = Publisher(redis, settings)
    job_id = "reconnecting-job"
    await publish_started(publisher, job_id)
    watchers = [
        asyncio.create_task(raw_get(gateway.port, f"/jobs/{job_id}/events")) for _ in range(20)
    ]
    await wait_until(lambda: gateway.hub.counts()["subscribers"] == 20)
    for _ in range(3):
        await publish_progress(publisher, job_id, 50)
        await redis.client_kill_filter(_type="pubsub")
        await publish_progress(publisher, job_id, 50)  # published while the hub is away
    await publish_completed(publisher, job_id)
    responses = await asyncio.gather(*watchers)

    stored = await stream_ids(redis, settings, job_id)
    for response in responses:
        assert response.event_ids() == stored


async def test_subscribers_that_never_read_are_cut_off_and_harm_no_one(
    start_gateway: StartGateway, redis: Redis, settings: Settings
) -> None:
    limit = 32 * 1024
    gateway = await start_gateway(settings.replace(max_buffer_bytes=limit))
    publisher = Publisher(redis, settings)
    job_id = "flooded-job"
    await publish_started(publisher, job_id)
    path = f"/jobs/{job_id}/events"
    stalled = [await open_unread_stream(gateway.port, path) for _ in range(1000)]
    reader = asyncio.create_task(raw_get(gateway.port, f"/jobs/{job_id}/events"))
    await wait_until(lambda: gateway.hub.counts()["subscribers"] == 1001, timeout=30)
    peak = 0
    for _ in range(20):
        await publish_progress(publisher, job_id, 10, size=4000)
        peak = max(peak, _buffered(gateway))
    await publish_completed(publisher, job_id)
    response = await reader
    await wait_until(lambda: gateway.hub.counts()["subscribers"] == 0, timeout=30)
    for sock in stalled:
        sock.close()

    assert response.event_ids() == await stream_ids(redis, settings, job_id)
    # Every stalled subscriber was cut off before it held much more than the limit.
    assert peak <= 1000 * (limit + 64 * 1024)


def _buffered(gateway: Gateway) -> int:
    return sum(s.connection.buffered() for s in gateway.hub._subscribers)


async def test_connections_dying_mid_write_do_not_stop_delivery(
    start_gateway: StartGateway, redis: Redis, settings: Settings
) -> None:
    gateway = await start_gateway()
    publisher = Publisher(redis, settings)
    job_id = "dying-job"
    await publish_started(publisher, job_id)
    dying = [await open_unread_stream(gateway.port, f"/jobs/{job_id}/events") for _ in range(50)]
    survivors = [
        asyncio.create_task(raw_get(gateway.port, f"/jobs/{job_id}/events")) for _ in range(5)
    ]
    await wait_until(lambda: gateway.hub.counts()["subscribers"] == 55)
    for n, sock in enumerate(dying):
        # A reset in the middle of the flood: the next write to it fails.
        close_with_reset(sock)
        await publish_progress(publisher, job_id, 2 + n % 3, size=500)
    await publish_completed(publisher, job_id)
    responses = await asyncio.gather(*survivors)

    stored = await stream_ids(redis, settings, job_id)
    assert all(response.event_ids() == stored for response in responses)


async def test_a_silent_running_job_is_reported_stalled_until_it_speaks(
    start_gateway: StartGateway, redis: Redis, settings: Settings
) -> None:
    quick = settings.replace(heartbeat_s=0.1)
    gateway = await start_gateway(quick)
    publisher = Publisher(redis, quick)
    job_id = "silent-job"
    await publish_started(publisher, job_id)
    async with (
        gateway.client() as client,
        client.stream("GET", f"/jobs/{job_id}/events") as response,
    ):
        events = read_events(response)
        assert [(await anext(events)).event for _ in range(2)] == ["queued", "started"]
        stalled = await anext(events)
        snapshot = (await client.get(f"/jobs/{job_id}")).json()
        await publish_progress(publisher, job_id, 1)
        resumed = await anext(events)
        after = (await client.get(f"/jobs/{job_id}")).json()
        await publish_completed(publisher, job_id)
        rest = [event async for event in events]

    assert stalled.event == "stalled"
    assert stalled.id is None, "stalled must not move the client's position"
    assert stalled.json()["job"] == job_id
    assert stalled.json()["silent_s"] >= 0.3
    assert snapshot["stalled"] is True
    assert resumed.event == "progress"
    assert after["stalled"] is False
    assert rest[-1].event == "completed"


async def test_the_ring_is_bounded_in_bytes_and_resumes_behind_it_stay_exact(
    start_gateway: StartGateway, redis: Redis, settings: Settings
) -> None:
    ring_bytes = 64 * 1024
    gateway = await start_gateway(settings.replace(hub_ring_bytes=ring_bytes))
    publisher = Publisher(redis, settings)
    job_id = "large-events"
    await publish_started(publisher, job_id)
    watcher = asyncio.create_task(raw_get(gateway.port, f"/jobs/{job_id}/events"))
    await wait_until(lambda: gateway.hub.counts()["subscribers"] == 1)
    await publish_progress(publisher, job_id, 30, size=10_000)  # ~20 KB per entry: frame + payload
    await wait_until(lambda: gateway.hub.counts()["ring_entries"] > 0)

    counts = gateway.hub.counts()
    assert counts["ring_bytes"] <= ring_bytes
    assert 1 <= counts["ring_entries"] <= 4, "30 large events, only the newest few kept"
    stored = await stream_ids(redis, settings, job_id)
    # From inside the ring (served from memory) and from behind it (read from the stream).
    positions = (1, 10, len(stored) - 2)
    resumes = [
        asyncio.create_task(
            raw_get(gateway.port, f"/jobs/{job_id}/events", {"Last-Event-ID": stored[n]})
        )
        for n in positions
    ]
    await wait_until(lambda: gateway.hub.counts()["subscribers"] == 4)
    await publish_completed(publisher, job_id)
    stored = await stream_ids(redis, settings, job_id)

    assert (await watcher).event_ids() == stored
    for n, resumed in zip(positions, await asyncio.gather(*resumes), strict=True):
        assert resumed.event_ids() == stored[n + 1 :]


async def _read_response(reader: asyncio.StreamReader) -> bytes:
    """One chunked response of a kept-alive connection: its body, once the final chunk came."""
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    body = bytearray()
    while size := int((await reader.readuntil(b"\r\n"))[:-2], 16):
        body += (await reader.readexactly(size + 2))[:-2]
    await reader.readexactly(2)
    return bytes(body)


async def test_streams_on_one_kept_alive_connection_do_not_pile_up_in_memory(
    start_gateway: StartGateway, redis: Redis, settings: Settings
) -> None:
    gateway = await start_gateway(settings.replace(hub_linger_s=600))
    publisher = Publisher(redis, settings)
    job_id = "kept-alive"
    await publish_started(publisher, job_id)
    watcher = asyncio.create_task(raw_get(gateway.port, f"/jobs/{job_id}/events"))
    await wait_until(lambda: gateway.hub.counts()["subscribers"] == 1)
    await publish_progress(publisher, job_id, 1)
    await publish_completed(publisher, job_id)
    await watcher  # the ring now holds the job: each stream below is served from memory
    stored = await stream_ids(redis, settings, job_id)
    request = (
        f"GET /jobs/{job_id}/events HTTP/1.1\r\nHost: x\r\nLast-Event-ID: {stored[-2]}\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    streams, batch = 10_000, 50
    try:
        for _ in range(streams // batch):
            writer.write(request * batch)  # back to back on the one connection
            for _ in range(batch):
                body = await asyncio.wait_for(_read_response(reader), scaled(10))
                assert f"id: {stored[-1]}\n".encode() in body
        gc.collect()
        alive = sum(1 for obj in gc.get_objects() if type(obj) is Subscriber)
    finally:
        writer.close()

    assert alive <= 1, f"{alive} finished streams still held by the open connection"
