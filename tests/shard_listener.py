"""A listener on one shard channel (SSUBSCRIBE), for tests: redis-py's asyncio `PubSub` has no
sharded pub/sub. Its messages look like `PubSub.get_message`'s dicts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection

__all__ = ["ShardListener"]

_TIMEOUT_S = 10.0


class ShardListener:
    def __init__(self, connection: AbstractConnection) -> None:
        self._connection = connection

    @classmethod
    @asynccontextmanager
    async def open(cls, redis: Redis, channel: str) -> AsyncIterator[ShardListener]:
        """Subscribed to `channel`, the subscription confirmed by the server."""
        pool = redis.connection_pool
        connection: AbstractConnection = pool.connection_class(**pool.connection_kwargs)
        await connection.connect()  # type: ignore[no-untyped-call]
        try:
            await connection.send_command("SSUBSCRIBE", channel)
            listener = cls(connection)
            confirmation = await listener.next()
            assert confirmation["type"] == "ssubscribe", confirmation
            yield listener
        finally:
            await connection.disconnect()

    async def next(self) -> dict[str, Any]:
        """The next message: {"type", "channel", "data"}."""
        async with asyncio.timeout(_TIMEOUT_S):
            kind, channel, data = await self._connection.read_response()
        return {"type": kind.decode(), "channel": channel, "data": data}
