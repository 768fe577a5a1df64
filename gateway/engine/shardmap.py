"""Where a job's live channel is served (`ShardMap`): on one Redis, that Redis; on a Redis
Cluster, the master of the channel's slot, from the cluster client's slot map.

The hub opens its pub/sub connections itself (redis-py's asyncio `RedisCluster` has no
pub/sub): `connect` makes a bare connection to a node with the client's own options (timeouts,
credentials, TLS, client name). `refresh` reads the cluster's slots again; the reader calls
it after a MOVED reply, a `sunsubscribe` it did not ask for, or a lost connection.
"""

from __future__ import annotations

import asyncio
import time

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError

from shared.clients import EventsRedis

__all__ = ["ShardMap"]

# Refreshes asked for within this long of the last one share it.
_REFRESH_SHARED_S = 0.05


class ShardMap:
    def __init__(self, redis: EventsRedis) -> None:
        self._redis = redis
        self._lock = asyncio.Lock()
        self._refreshed_at = -1.0

    @property
    def clustered(self) -> bool:
        return isinstance(self._redis, RedisCluster)

    def node_of(self, channel: bytes) -> str | None:
        """`host:port` of the node serving `channel`; None while the cluster's slots are not
        known (before the first refresh, or a slot no node serves)."""
        redis = self._redis
        if isinstance(redis, Redis):
            kwargs = redis.connection_pool.connection_kwargs
            return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
        try:
            node = redis.get_node_from_key(channel.decode())
        except (KeyError, RedisError):
            return None
        return None if node is None else node.name

    def connection_to(self, node: str) -> AbstractConnection:
        """A new, unconnected connection to `node`, with the client's options."""
        redis = self._redis
        if isinstance(redis, Redis):
            pool = redis.connection_pool
            connection: AbstractConnection = pool.connection_class(**pool.connection_kwargs)
        else:
            cluster_node = redis.get_node(node_name=node)
            if cluster_node is None:
                raise ConnectionError(f"{node} is no longer a node of the cluster")
            connection = cluster_node.connection_class(**cluster_node.connection_kwargs)
        connection.health_check_interval = 0
        return connection

    async def refresh(self) -> None:
        """Read the cluster's slot map again (nothing to do on one Redis). Raises RedisError
        or OSError when no node answers."""
        redis = self._redis
        if not isinstance(redis, RedisCluster):
            return
        asked_at = time.monotonic()
        async with self._lock:
            if self._refreshed_at >= asked_at - _REFRESH_SHARED_S:
                return
            await redis.nodes_manager.initialize()
            self._refreshed_at = time.monotonic()
