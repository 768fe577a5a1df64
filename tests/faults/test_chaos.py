"""Chaos between clients and the gateway: 100 clients each watch a job through their own
fault-injecting proxy (`tests.faultproxy`) that cuts, stalls and half-closes connections at
random byte offsets, while 20 jobs publish thousands of events. Every client reconnects with
its Last-Event-ID, like an EventSource, and must end up with exactly the job's stream.

The faults are drawn from a seed (printed; set `CHAOS_SEED` to replay a run): each client's
proxy draws its own sequence, so a client meets the same faults at the same byte offsets on
every run with that seed. (`JOBWIRE_*` names are settings only: an unknown one is warned about.)

Long test (about 15-30 s on 2 cores); it runs in the default suite.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis

from shared.keys import Keys
from shared.publish import Publisher
from shared.settings import Settings
from tests.faultproxy import FaultProxy, FaultStats
from tests.feeds import new_feed_jobs, play_job
from tests.processes import ProcessGroup
from tests.support import scaled
from tests.watchers import Verdict, Watch, verify, watch_client, watch_job

pytestmark = pytest.mark.timeout(90)

CLIENTS = 100
JOBS = 20
EVENTS_PER_JOB = 100
# Each job's events are spread over about this long, so clients see both backfill and live.
PUBLISH_SPAN_S = 3.0
MIN_FAULTS = 1_000
DEFAULT_SEED = "1"


@pytest.fixture
async def processes() -> AsyncIterator[ProcessGroup]:
    async with ProcessGroup.open() as group:
        yield group


def chaos_seed() -> str:
    return os.environ.get("CHAOS_SEED") or DEFAULT_SEED


async def test_every_client_gets_exactly_the_stream_through_a_thousand_faults(
    processes: ProcessGroup,
    settings: Settings,
    redis: Redis,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seed = chaos_seed()
    gateway = await processes.gateway(settings)
    publisher = Publisher(redis, settings)
    async with gateway.client() as api:
        job_ids = await new_feed_jobs(api, redis, Keys(settings.key_prefix), JOBS)

    stats = FaultStats()
    proxies = [
        FaultProxy(
            "127.0.0.1", gateway.port, seed=f"{seed}:{client}", stats=stats, max_offset=1_000
        )
        for client in range(CLIENTS)
    ]
    for proxy in proxies:
        await proxy.start()
    clients = [watch_client(proxy.url) for proxy in proxies]
    # Clients join at different moments: some from the start, some far behind the live edge.
    delays = random.Random(seed).choices([0.0, 0.5, 1.5, 3.0], k=CLIENTS)
    try:
        watches = [
            asyncio.create_task(_watch_after(delay, client, job_ids[index % JOBS]))
            for index, (client, delay) in enumerate(zip(clients, delays, strict=True))
        ]
        interval_s = PUBLISH_SPAN_S / EVENTS_PER_JOB
        async with asyncio.timeout(scaled(30)):
            await asyncio.gather(
                *(
                    play_job(publisher, job_id, events=EVENTS_PER_JOB, interval_s=interval_s)
                    for job_id in job_ids
                )
            )
        results = await asyncio.gather(*watches)
    finally:
        for client in clients:
            await client.aclose()
        for proxy in proxies:
            await proxy.close()

    keys = Keys(settings.key_prefix)
    verdicts = [await verify(watch, redis, keys) for watch in results]
    summary = _summary(seed, stats, verdicts, sum(w.connections for w in results))
    with capsys.disabled():
        print(f"\n{summary}")

    assert sum(v.lost for v in verdicts) == 0, summary
    assert sum(v.duplicated for v in verdicts) == 0, summary
    assert all(v.exact for v in verdicts), summary
    assert all(watch.made_up == [] for watch in results), summary
    assert all(set(watch.statuses) <= {200, 204} for watch in results), summary
    assert stats.faults >= MIN_FAULTS, summary
    assert min(stats.cuts, stats.stalls, stats.half_closes) > 0, summary
    assert sum(v.checked for v in verdicts) == CLIENTS * (EVENTS_PER_JOB + 3)


async def _watch_after(delay_s: float, client: httpx.AsyncClient, job_id: str) -> Watch:
    await asyncio.sleep(delay_s)  # a client arriving late, not a wait for a condition
    return await watch_job([client], job_id, timeout=60)


def _summary(seed: str, stats: FaultStats, verdicts: list[Verdict], connections: int) -> str:
    checked = sum(v.checked for v in verdicts)
    lost = sum(v.lost for v in verdicts)
    duplicated = sum(v.duplicated for v in verdicts)
    return (
        f"chaos seed={seed} (replay: CHAOS_SEED={seed}) clients={CLIENTS} jobs={JOBS} "
        f"connections={connections} faults={stats.faults} (cuts={stats.cuts} "
        f"stalls={stats.stalls} half-closes={stats.half_closes}) events checked={checked} "
        f"lost={lost} duplicated={duplicated}"
    )
