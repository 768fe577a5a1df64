"""Gateways lost under load: killed outright, or stopped with SIGTERM while streams are open.
Clients move to another gateway process on the same Redis with their Last-Event-ID and get
exactly the job's stream."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from jobwire.client import Backoff, Client, JobEvent
from shared.keys import Keys
from shared.publish import Publisher
from shared.settings import Settings
from tests.client_support import running_proxy
from tests.feeds import FEED_JOB_NAME, advertise_feed, new_feed_jobs, play_job
from tests.processes import ProcessGroup
from tests.support import scaled, stream_ids, wait_until
from tests.watchers import (
    TEST_API_KEY,
    Verdict,
    Watch,
    submit_and_watch,
    verify,
    watch_client,
    watch_job,
)

pytestmark = pytest.mark.timeout(60)

# A stream open on a gateway that begins shutting down must end within this, so its client
# reconnects elsewhere at once instead of waiting out the whole drain.
STREAM_END_ON_SIGTERM_S = 3.0


@pytest.fixture
async def processes() -> AsyncIterator[ProcessGroup]:
    async with ProcessGroup.open() as group:
        yield group


async def test_clients_of_a_killed_gateway_resume_exactly_on_another(
    processes: ProcessGroup, settings: Settings, redis: Redis
) -> None:
    doomed, survivor = await asyncio.gather(
        processes.gateway(settings), processes.gateway(settings)
    )
    publisher = Publisher(redis, settings)
    async with doomed.client() as api:
        job_ids = await new_feed_jobs(api, redis, Keys(settings.key_prefix), 10)
    clients = [watch_client(doomed.url), watch_client(survivor.url)]
    watches = [Watch(job_ids[index % len(job_ids)]) for index in range(100)]
    try:
        # Each watcher starts on the doomed gateway and, after a failure, tries the next one.
        tasks = [
            asyncio.create_task(watch_job(clients, watch.job_id, into=watch, timeout=40))
            for watch in watches
        ]
        feeds = asyncio.gather(
            *(play_job(publisher, job_id, events=120, interval_s=0.02) for job_id in job_ids)
        )
        await wait_until(
            lambda: all(len(watch.events) >= 20 for watch in watches),
            timeout=20,
            message="every watcher streaming from the doomed gateway",
        )
        await doomed.kill()
        await feeds
        results = await asyncio.gather(*tasks)
    finally:
        for client in clients:
            await client.aclose()

    keys = Keys(settings.key_prefix)
    verdicts = [await verify(watch, redis, keys) for watch in results]
    assert [v for v in verdicts if not v.exact] == []
    assert sum(v.checked for v in verdicts) == 100 * (120 + 3)
    # Everyone really moved: the first connection broke and a later one finished the job.
    assert all(watch.broken >= 1 for watch in results)
    assert all(set(watch.statuses) <= {200, 204} for watch in results)
    assert survivor.running


async def test_a_submit_and_stream_retried_on_another_gateway_resumes_exactly(
    processes: ProcessGroup, settings: Settings, redis: Redis
) -> None:
    """A POST with `Accept: text/event-stream` whose gateway is killed mid-stream, retried as
    `fetch-event-source` retries it: the same POST and Idempotency-Key, and the last id."""
    doomed, survivor = await asyncio.gather(
        processes.gateway(settings), processes.gateway(settings)
    )
    keys = Keys(settings.key_prefix)
    await advertise_feed(redis, keys)
    clients = [watch_client(doomed.url), watch_client(survivor.url)]
    watch = Watch("")
    try:
        task = asyncio.create_task(
            submit_and_watch(clients, {"name": FEED_JOB_NAME}, "chat-1", into=watch, timeout=40)
        )
        await wait_until(lambda: watch.events, message="the queued event on the doomed gateway")
        feed = asyncio.create_task(
            play_job(Publisher(redis, settings), watch.job_id, events=150, interval_s=0.01)
        )
        await wait_until(lambda: len(watch.events) >= 30, message="30 events streamed")
        await doomed.kill()
        await feed
        result = await task
    finally:
        for client in clients:
            await client.aclose()

    verdict = await verify(result, redis, keys)
    assert verdict == Verdict(checked=1 + 150 + 2, lost=0, duplicated=0, exact=True)
    # Two POSTs: the first cut on the doomed gateway, the retry answered by the survivor
    # from exactly where the first one stopped.
    assert result.statuses == {200: 2}
    first, retry = result.requests
    assert "Last-Event-ID" not in first
    assert result.ids.index(retry["Last-Event-ID"]) >= 29
    assert retry["Idempotency-Key"] == first["Idempotency-Key"] == "chat-1"
    assert result.made_up == []


async def test_the_python_client_moves_to_another_gateway_exactly(
    processes: ProcessGroup, settings: Settings, redis: Redis
) -> None:
    """`Client.run` (submit-and-stream) and `Client.follow` (several jobs on one stream),
    their gateway killed mid-stream, each resumed on another one."""
    doomed, survivor = await asyncio.gather(
        processes.gateway(settings), processes.gateway(settings)
    )
    keys = Keys(settings.key_prefix)
    publisher = Publisher(redis, settings)
    async with doomed.client() as api:
        followed = await new_feed_jobs(api, redis, keys, 3)
    ran: list[JobEvent] = []
    seen: list[JobEvent] = []

    async def consume(events: AsyncIterator[JobEvent], into: list[JobEvent]) -> None:
        async for event in events:
            into.append(event)

    fast = Backoff(0.02, 0.2)
    async with (
        running_proxy(doomed.url) as proxy,
        Client(proxy.url, TEST_API_KEY, backoff=fast) as client,
    ):
        consumers = asyncio.gather(
            consume(client.run(FEED_JOB_NAME), ran),
            consume(client.follow(followed), seen),
        )
        await wait_until(lambda: ran, message="the run's queued event")
        job_ids = [ran[0].job, *followed]
        feeds = asyncio.gather(
            *(play_job(publisher, job, events=100, interval_s=0.01) for job in job_ids)
        )
        await wait_until(lambda: len(ran) >= 20 and len(seen) >= 40, message="streaming")
        proxy.target_url = survivor.url
        await doomed.kill()
        await feeds
        await asyncio.wait_for(consumers, scaled(20))

    assert [event.id for event in ran] == await stream_ids(redis, settings, ran[0].job)
    for job_id in followed:
        got = [event.id for event in seen if event.job == job_id]
        assert got == await stream_ids(redis, settings, job_id)
    assert len(ran) + len(seen) == 4 * (1 + 100 + 2)
    retries = [head for head in proxy.requests if b"\r\nLast-Event-ID: " in head]
    assert sorted(head.split(b" ")[0] for head in retries) == [b"GET", b"POST"]


async def test_sigterm_ends_open_streams_at_once_and_the_gateway_exits(
    processes: ProcessGroup, settings: Settings, redis: Redis
) -> None:
    stopping, other = await asyncio.gather(processes.gateway(settings), processes.gateway(settings))
    publisher = Publisher(redis, settings)
    async with stopping.client() as api:
        [job_id] = await new_feed_jobs(api, redis, Keys(settings.key_prefix), 1)
    await play_job(publisher, job_id, events=5, finish=False)
    clients = [watch_client(stopping.url), watch_client(other.url)]
    watches = [Watch(job_id) for _ in range(20)]
    try:
        tasks = [
            asyncio.create_task(watch_job(clients, job_id, into=watch, timeout=30))
            for watch in watches
        ]
        await wait_until(
            lambda: all(len(watch.events) == 7 for watch in watches),
            message="every watcher caught up on the stopping gateway",
        )
        stopping.signal(signal.SIGTERM)
        signalled = time.monotonic()
        await wait_until(
            lambda: all(watch.connections >= 2 for watch in watches),
            timeout=10,
            message="every watcher reconnected",
        )
        first_ends = [watch.ended_at[0] - signalled for watch in watches]
        exit_status = await stopping.wait(timeout=15)
        exited_after = time.monotonic() - signalled
        await play_job(publisher, job_id, events=5)
        results = await asyncio.gather(*tasks)
    finally:
        for client in clients:
            await client.aclose()

    assert max(first_ends) <= STREAM_END_ON_SIGTERM_S, first_ends
    # uvicorn re-raises the signal once its graceful shutdown is over.
    assert exit_status in (0, -signal.SIGTERM), processes.logs()
    assert "Finished server process" in stopping.log()
    assert exited_after <= STREAM_END_ON_SIGTERM_S + 2, exited_after
    keys = Keys(settings.key_prefix)
    verdicts = [await verify(watch, redis, keys) for watch in results]
    assert [v for v in verdicts if not v.exact] == []
    assert all(v.checked == 7 + 7 for v in verdicts)
