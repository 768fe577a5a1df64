"""The cluster suite: one Redis Cluster per session (`bench.cluster`), started only
when a test here runs. The events live on the cluster, arq's queue on the session's single
redis-server, as `JOBWIRE_QUEUE_REDIS_URL` says they must."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import RedisCluster

from bench.cluster import LocalCluster
from shared.clients import create_events_redis
from shared.settings import Settings
from tests.support import TIMEOUT_SCALE, RedisServer


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    with tempfile.TemporaryDirectory(prefix="jobwire-cluster-") as data_dir:
        cluster = LocalCluster(Path(data_dir), timeout_scale=TIMEOUT_SCALE)
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()


@pytest.fixture
def settings(
    settings: Settings, redis_cluster: LocalCluster, redis_server: RedisServer
) -> Settings:
    """The suite's settings with the events on the cluster and the queue beside it."""
    return settings.replace(redis_url=redis_cluster.url, queue_redis_url=redis_server.url)


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[RedisCluster]:
    """A cluster client, as the gateway and the workers make theirs."""
    client = create_events_redis(settings.events_redis_url)
    assert isinstance(client, RedisCluster)
    try:
        await client.initialize()
        yield client
    finally:
        await client.aclose()
