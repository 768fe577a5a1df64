"""WebSocket streams across faults, with the Python client's `transport="ws"`: its gateway
SIGKILLed mid-stream (resumed on another gateway process from the last id), and the network
cut, stalled and half-closed by the chaos tests' proxy. Every sequence is compared with
XRANGE."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from jobwire.client import Backoff, Client, JobEvent
from shared.keys import Keys
from shared.publish import Publisher
from shared.settings import Settings
from tests.client_support import running_proxy
from tests.faultproxy import FaultProxy, FaultStats
from tests.feeds import new_feed_jobs, play_job
from tests.processes import ProcessGroup
from tests.support import scaled, stream_ids, wait_until
from tests.watchers import TEST_API_KEY

pytestmark = pytest.mark.timeout(90)

FAST = Backoff(0.02, 0.2)
EVENTS = 100


@pytest.fixture
async def processes() -> AsyncIterator[ProcessGroup]:
    async with ProcessGroup.open() as group:
        yield group


async def _consume(events: AsyncIterator[JobEvent], into: list[JobEvent]) -> None:
    async for event in events:
        into.append(event)


async def test_websockets_of_a_killed_gateway_resume_exactly_on_another(
    processes: ProcessGroup, settings: Settings, redis: Redis
) -> None:
    doomed, survivor = await asyncio.gather(
        processes.gateway(settings), processes.gateway(settings)
    )
    keys = Keys(settings.key_prefix)
    async with doomed.client() as api:
        single, *several = await new_feed_jobs(api, redis, keys, 4)
    alone: list[JobEvent] = []
    together: list[JobEvent] = []
    async with (
        running_proxy(doomed.url) as proxy,
        Client(proxy.url, TEST_API_KEY, backoff=FAST, transport="ws") as client,
    ):
        consumers = asyncio.gather(
            _consume(client.job(single).events(), alone),
            _consume(client.follow(several), together),
        )
        publisher = Publisher(redis, settings)
        feeds = asyncio.gather(
            *(
                play_job(publisher, job, events=EVENTS, interval_s=0.01)
                for job in [single, *several]
            )
        )
        await wait_until(lambda: len(alone) >= 20 and len(together) >= 40, message="streaming")
        proxy.target_url = survivor.url
        await doomed.kill()
        await feeds
        await asyncio.wait_for(consumers, scaled(20))

    assert [event.id for event in alone] == await stream_ids(redis, settings, single)
    for job_id in several:
        got = [event.id for event in together if event.job == job_id]
        assert got == await stream_ids(redis, settings, job_id)
    resumed = [head for head in proxy.requests if b"last_event_id=" in head]
    assert len(resumed) >= 2  # each of the two sockets, from where it was
    assert all(b"upgrade: websocket" in head.lower() for head in proxy.requests)


async def test_websockets_through_the_cutting_proxy_get_exactly_the_stream(
    processes: ProcessGroup, settings: Settings, redis: Redis
) -> None:
    gateway = await processes.gateway(settings)
    keys = Keys(settings.key_prefix)
    clients = 12
    async with gateway.client() as api:
        job_ids = await new_feed_jobs(api, redis, keys, 4)
    stats = FaultStats()
    proxies = [
        FaultProxy("127.0.0.1", gateway.port, seed=f"ws:{n}", stats=stats, max_offset=2_000)
        for n in range(clients)
    ]
    for proxy in proxies:
        await proxy.start()
    seen: list[list[JobEvent]] = [[] for _ in range(clients)]
    delays = random.Random(7).choices([0.0, 0.3, 1.0], k=clients)

    async def watch(n: int) -> None:
        await asyncio.sleep(delays[n])  # a client arriving late, not a wait for a condition
        url = proxies[n].url
        async with Client(url, TEST_API_KEY, backoff=FAST, transport="ws") as client:
            await _consume(client.job(job_ids[n % len(job_ids)]).events(), seen[n])

    try:
        watchers = asyncio.gather(*(watch(n) for n in range(clients)))
        publisher = Publisher(redis, settings)
        await asyncio.gather(
            *(play_job(publisher, job, events=EVENTS, interval_s=0.02) for job in job_ids)
        )
        await asyncio.wait_for(watchers, scaled(40))
    finally:
        for proxy in proxies:
            await proxy.close()

    for n in range(clients):
        expected = await stream_ids(redis, settings, job_ids[n % len(job_ids)])
        assert [event.id for event in seen[n]] == expected, f"client {n}"
    assert stats.faults >= clients
    assert min(stats.cuts, stats.stalls) > 0
