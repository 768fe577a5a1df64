"""Three gateway processes behind HAProxy (the repository's balancer/haproxy.cfg), one Redis, a
real worker: gateways are lost one at a time while jobs run — one killed outright and
started again, then another stopped with SIGTERM — and every client, reconnecting through the
balancer with its Last-Event-ID, ends with exactly each job's stream."""

from __future__ import annotations

import asyncio
import signal
import statistics
import time
from collections.abc import AsyncIterator, Sequence

import httpx
import pytest
from redis.asyncio import Redis

from bench.balancer import Balancer, ServerState, balancer
from shared.events import EventType, make_event
from shared.keys import Keys
from shared.publish import Publisher
from shared.settings import Settings
from tests.processes import GatewayProcess, ProcessGroup
from tests.support import scaled, submit, wait_until
from tests.watchers import TEST_API_KEY, Watch, shared_ssl_context, verify, watch_client, watch_job

pytestmark = pytest.mark.timeout(60)

GATEWAYS = 3
JOBS = 6
WATCHERS = 30
# Longer than the test on any machine: the test cancels the jobs once the gateways are done.
WORDS = 2_000
WORD_DELAY_MS = 40


@pytest.fixture
async def processes() -> AsyncIterator[ProcessGroup]:
    async with ProcessGroup.open() as group:
        yield group


def _api(lb: Balancer) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=lb.url,
        timeout=scaled(10),
        headers={"Authorization": f"Bearer {TEST_API_KEY}"},
        verify=shared_ssl_context(),
    )


async def _servers(lb: Balancer) -> dict[str, ServerState]:
    return await asyncio.to_thread(lb.servers)


async def _wait_status(lb: Balancer, name: str, status: str) -> None:
    async def reached() -> bool:
        return (await _servers(lb))[name].status == status

    await wait_until(reached, timeout=10, interval=0.05, message=f"{name} {status} in HAProxy")


async def _wait_all_progress(watches: Sequence[Watch], events: int, message: str) -> None:
    """Until every watcher has `events` more stored events than it has now."""
    marks = [len(watch.events) + events for watch in watches]

    def ready() -> bool:
        return all(len(watch.events) >= mark for watch, mark in zip(watches, marks, strict=True))

    await wait_until(ready, timeout=20, message=message)


async def _restart(gateway: GatewayProcess) -> None:
    """The same gateway again, on the port HAProxy knows it by."""
    await gateway.start()
    await gateway.wait_ready()


async def test_clients_behind_the_balancer_get_exact_streams_while_gateways_are_lost(
    processes: ProcessGroup, settings: Settings, redis: Redis
) -> None:
    gateways = await asyncio.gather(*(processes.gateway(settings) for _ in range(GATEWAYS)))
    await processes.worker(settings)
    killed, stopped = gateways[0], gateways[1]
    text = " ".join(f"w{index}" for index in range(WORDS))
    with balancer([f"127.0.0.1:{gateway.port}" for gateway in gateways]) as lb:
        for index in range(GATEWAYS):
            await _wait_status(lb, f"gateway-{index}", "UP")
        async with _api(lb) as api:
            job_ids = [
                await submit(api, "demo.tokens", text=text, delay_ms=WORD_DELAY_MS)
                for _ in range(JOBS)
            ]
            watches = [Watch(job_ids[index % JOBS]) for index in range(WATCHERS)]
            clients = [watch_client(lb.url)]
            tasks = [
                asyncio.create_task(watch_job(clients, watch.job_id, into=watch, timeout=50))
                for watch in watches
            ]
            try:
                await _wait_all_progress(watches, 3, "every watcher streaming")
                spread = await _servers(lb)

                await killed.kill()
                await _wait_status(lb, "gateway-0", "DOWN")
                await _wait_all_progress(watches, 3, "every watcher streaming after the kill")
                reconnects_after_kill = sum(watch.connections for watch in watches) - WATCHERS
                await _restart(killed)
                await _wait_status(lb, "gateway-0", "UP")

                before_stop = (await _servers(lb))["gateway-1"].current
                stopped.signal(signal.SIGTERM)
                exit_status = await stopped.wait(timeout=15)
                await _wait_all_progress(watches, 3, "every watcher streaming after the stop")
                after_stop = await _servers(lb)

                for job_id in job_ids:
                    reply = await api.delete(f"/jobs/{job_id}")
                    assert reply.status_code == 202, reply.text
                results = await asyncio.wait_for(asyncio.gather(*tasks), scaled(20))
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                for client in clients:
                    await client.aclose()

    # The balancer spread the streams over all three gateways.
    assert all(spread[f"gateway-{index}"].current >= 5 for index in range(GATEWAYS)), spread
    # Every stream of the killed gateway reconnected; the restarted one took streams again.
    assert reconnects_after_kill >= spread["gateway-0"].current
    assert after_stop["gateway-0"].current >= 1, after_stop
    assert before_stop >= 1
    assert exit_status in (0, -signal.SIGTERM), processes.logs()
    keys = Keys(settings.key_prefix)
    verdicts = [await verify(watch, redis, keys) for watch in results]
    assert [verdict for verdict in verdicts if not verdict.exact] == []
    assert all(watch.events[-1].event == "cancelled" for watch in results)
    # HAProxy retried every connection a lost gateway refused on another one: no 502 or 503.
    assert all(set(watch.statuses) <= {200, 204} for watch in results)


async def test_each_event_leaves_the_balancer_as_soon_as_the_gateway_writes_it(
    processes: ProcessGroup, settings: Settings, redis: Redis
) -> None:
    """HAProxy holds a chunk it expects more data after (MSG_MORE) for up to 200 ms unless
    told not to (`option http-no-delay`): a live event must not wait for the next one."""
    gateway = await processes.gateway(settings)
    publisher = Publisher(redis, settings)
    job_id = "balancer-latency"
    queued = make_event(EventType.QUEUED, job_id, 0, {"name": "test.feed", "args": {}})
    assert (await publisher.publish(queued, create=True)).accepted
    latencies: list[float] = []
    with balancer([f"127.0.0.1:{gateway.port}"]) as lb:
        await _wait_status(lb, "gateway-0", "UP")
        headers = {"Accept": "text/event-stream"}
        async with (
            _api(lb) as api,
            api.stream("GET", f"/jobs/{job_id}/events", headers=headers) as reply,
        ):
            assert reply.status_code == 200
            lines = reply.aiter_lines()
            async with asyncio.timeout(scaled(20)):
                async for line in lines:  # the queued event: the stream is live from here
                    if line.startswith("data:"):
                        break
                for seq in range(10):
                    sent = time.monotonic()
                    event = make_event(EventType.DATA, job_id, 0, {"seq": seq})
                    assert (await publisher.publish(event)).accepted
                    async for line in lines:
                        if line.startswith("data:") and f'"seq":{seq}' in line:
                            break
                    latencies.append(time.monotonic() - sent)
    # Held back, every event arrives 200 ms late; sent at once, in a few milliseconds.
    assert statistics.median(latencies) < 0.1, latencies
