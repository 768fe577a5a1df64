"""The Redis client factory: every connection Jobwire makes, to the event streams or to arq's
queue, retries the same way across a brief disconnect (a restart is tests/faults/test_redis.py).
"""

from __future__ import annotations

from typing import NamedTuple

from arq.connections import create_pool
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.exceptions import ConnectionError, TimeoutError

from shared.clients import connection_pool, retry_policy
from shared.settings import Settings
from worker.main import worker_options


class Retries(NamedTuple):
    """What a connection does when a command fails (redis-py keeps these private)."""

    times: int
    on: frozenset[type[Exception]]
    backoff: type
    cap_s: float | None
    base_s: float | None


def _retries(pool: ConnectionPool) -> Retries:
    connection: AbstractConnection = pool.make_connection()  # type: ignore[no-untyped-call]
    retry, backoff = connection.retry, connection.retry._backoff
    return Retries(
        retry._retries,
        frozenset(retry._supported_errors),
        type(backoff),
        getattr(backoff, "_cap", None),
        getattr(backoff, "_base", None),
    )


def test_the_policy_retries_connection_errors_and_timeouts() -> None:
    policy = retry_policy()

    assert set(policy["retry_on_error"]) == {ConnectionError, TimeoutError}
    assert policy["retry"] is not retry_policy()["retry"]  # each pool gets its own


async def test_the_queue_connection_retries_like_the_events_connections(
    settings: Settings,
) -> None:
    events = _retries(connection_pool(settings.events_redis_url))
    bounded = _retries(connection_pool(settings.events_redis_url, max_connections=2))
    queue = await create_pool(worker_options(settings)["redis_settings"])
    try:
        queued = _retries(queue.connection_pool)

        assert events.times > 0
        assert {ConnectionError, TimeoutError} <= events.on
        assert queued == events == bounded
    finally:
        await queue.aclose()
