"""The Redis client factory: one place that decides timeouts, retries and keepalives."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, TimeoutError

__all__ = ["create_redis"]


def create_redis(url: str) -> Redis:
    """A client for `url` (bytes replies) that retries a command across a brief disconnect.

    No socket read timeout: blocking reads carry their own bound (XREAD BLOCK of seconds),
    and TCP keepalive plus the periodic health check find a dead peer.
    """
    redis: Redis = Redis.from_url(
        url,
        socket_connect_timeout=5,
        socket_keepalive=True,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=5),
        retry_on_error=[ConnectionError, TimeoutError],
    )
    return redis
