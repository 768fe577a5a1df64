"""The events client on a cluster (`shared.cluster`): a burst of commands waits for a free
connection instead of failing, and the node connections stay within the client's bound."""

from __future__ import annotations

import asyncio

import pytest

from bench.cluster import LocalCluster
from shared.clients import CLUSTER_COMMANDS_IN_FLIGHT, create_events_redis
from shared.cluster import EventsCluster
from shared.keys import Keys
from shared.settings import Settings

pytestmark = pytest.mark.timeout(60)


async def test_a_burst_past_the_connection_bound_waits_for_a_free_connection(
    settings: Settings, redis_cluster: LocalCluster
) -> None:
    name = "jobwire-burst-test"
    client = create_events_redis(settings.events_redis_url, max_connections=4, name=name)
    assert isinstance(client, EventsCluster)
    key = Keys(settings.key_prefix).events("burst")  # one slot: every command to one master
    try:
        await client.delete(key)
        burst = 10 * CLUSTER_COMMANDS_IN_FLIGHT
        replies = await asyncio.gather(
            *(client.xadd(key, {"n": str(n)}) for n in range(burst)), return_exceptions=True
        )
        node = client.get_node_from_key(key)
        assert node is not None
        clients: list[dict[str, str]] = redis_cluster.client(int(node.port)).client_list()  # type: ignore[assignment]
        connected = [c for c in clients if c["name"] == name]
        lengths = await asyncio.gather(*(_two_lengths(client, key) for _ in range(burst)))

        assert [r for r in replies if isinstance(r, BaseException)] == []
        assert await client.xlen(key) == burst
        assert lengths == [[burst, burst]] * burst
        assert 1 <= len(connected) <= CLUSTER_COMMANDS_IN_FLIGHT
    finally:
        await client.delete(key)
        await client.aclose()


async def _two_lengths(client: EventsCluster, key: str) -> list[int]:
    async with client.pipeline(transaction=False) as pipe:
        pipe.xlen(key)
        pipe.xlen(key)
        return await pipe.execute()
