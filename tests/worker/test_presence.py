"""A running worker's presence: its jobs in the catalog while it runs and after, itself among
the live workers until it stops."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from shared.catalog import count_alive, load_catalog
from shared.settings import Settings
from tests.support import wait_until
from tests.worker_support import JobHarness
from worker import demo

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def harness(settings: Settings, redis: Redis) -> AsyncIterator[JobHarness]:
    async with JobHarness.open(settings, redis) as harness:
        yield harness


async def test_running_worker_advertises_its_jobs_and_is_counted_alive(
    harness: JobHarness, redis: Redis
) -> None:
    first = await harness.start_worker()

    await wait_until(lambda: count_alive(redis, harness.keys, 15), message="a live worker")
    catalog = await load_catalog(redis, harness.keys)
    assert sorted(catalog) == sorted(spec["name"] for spec in demo.jobs.specs())
    assert catalog["demo.countdown"]["params"] == ["seconds", "steps"]

    await harness.stop_worker(first)
    assert await count_alive(redis, harness.keys, 15) == 0
    assert sorted(await load_catalog(redis, harness.keys)) == sorted(catalog)
