"""The Redis client factory: one place that decides timeouts, retries, keepalives and how
many connections a process may hold.

`JOBWIRE_REDIS_URL` names a single Redis (`redis://`, `rediss://`) or a Redis Cluster
(`redis+cluster://host:port`, `rediss+cluster://`): one seed node, the others discovered. The
events client is then redis-py's asyncio `RedisCluster`; arq's queue is always one Redis.
"""

from __future__ import annotations

from typing import Any, TypeAlias, TypedDict

from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, TimeoutError

from shared.cluster import POOL_WAIT_S, EventsCluster
from shared.redisurl import is_cluster_url, node_url

__all__ = [
    "EventsRedis",
    "RetryPolicy",
    "connection_pool",
    "create_events_redis",
    "create_redis",
    "retry_policy",
]

# The client of the event streams: one Redis, or a cluster of them.
EventsRedis: TypeAlias = Redis | RedisCluster
# A cluster client runs this many commands at once at most (each on one connection per node
# it touches), so no node has more of its connections busy; more wait (shared.cluster). Wider
# than a single Redis's pool: one client spreads them over every master.
CLUSTER_COMMANDS_IN_FLIGHT = 32

# How long a command waits for a free connection of a bounded pool before failing
# (POOL_WAIT_S, in shared.cluster, as a cluster's commands wait as long). A storm of 10,000
# reconnects queues on a gateway's few connections for several seconds (bench/: 1-22 of
# 10,000-15,000 connects answered 503 with 10 s); waiting beats sending them away.


class RetryPolicy(TypedDict):
    """The retry options of a redis-py connection (and of arq's `RedisSettings`)."""

    retry: Retry
    retry_on_error: list[type[Exception]]


def retry_policy() -> RetryPolicy:
    """How every connection to Redis rides out a brief disconnect (a restart, a failover): a
    command that meets a connection error or timeout is retried 5 times, backing off from
    50 ms to 2 s. Used for the event streams here and for arq's queue by the worker."""
    return RetryPolicy(
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=5),
        retry_on_error=[ConnectionError, TimeoutError],
    )


def create_events_redis(
    url: str, *, max_connections: int | None = None, name: str | None = None
) -> EventsRedis:
    """The events client for `url`: a `RedisCluster` for a cluster's URL, else `create_redis`."""
    if is_cluster_url(url):
        return _cluster(url, max_connections=max_connections, name=name)
    return create_redis(url, max_connections=max_connections, name=name)


def create_redis(url: str, *, max_connections: int | None = None, name: str | None = None) -> Redis:
    """A client for one Redis at `url` (bytes replies); see `connection_pool`."""
    pool = connection_pool(url, max_connections=max_connections, name=name)
    return Redis.from_pool(pool)  # closing the client closes its pool


def _cluster(url: str, *, max_connections: int | None, name: str | None) -> EventsCluster:
    """A cluster client seeded by `url`'s node; each node's connections retry as a single
    Redis's do, a connection error or MOVED makes it read the cluster's slots again, and a
    command waits for a free connection (`shared.cluster`)."""
    cluster = EventsCluster.from_url(
        node_url(url),
        commands_in_flight=max(max_connections or 0, CLUSTER_COMMANDS_IN_FLIGHT),
        socket_connect_timeout=5,
        socket_keepalive=True,
        health_check_interval=30,
        client_name=name,
        **retry_policy(),
    )
    assert isinstance(cluster, EventsCluster)
    return cluster


def connection_pool(
    url: str, *, max_connections: int | None = None, name: str | None = None
) -> ConnectionPool:
    """Connections to `url` that retry a command across a brief disconnect.

    `max_connections` bounds the pool: commands then wait for a free connection instead of
    opening more (a gateway's connections must not grow with its subscribers). `name` is set
    with CLIENT SETNAME, so `CLIENT LIST` shows whose connections these are.

    No socket read timeout: blocking reads carry their own bound, and TCP keepalive plus the
    periodic health check find a dead peer.
    """
    options: dict[str, Any] = {
        "socket_connect_timeout": 5,
        "socket_keepalive": True,
        "health_check_interval": 30,
        "client_name": name,
        **retry_policy(),
    }
    if max_connections is None:
        return ConnectionPool.from_url(url, **options)
    return BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=POOL_WAIT_S, **options
    )
