"""What every job attempt on one worker shares. It is made when the worker starts, kept in
arq's `ctx` (the only thing arq hands each job) and closed when the worker stops."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from shared.clients import EventsRedis, create_events_redis
from shared.keys import Keys
from shared.publish import Publisher
from shared.settings import Settings
from worker.metrics import WorkerMetrics

__all__ = ["WorkerRuntime", "Workload", "new_worker_id"]

_CTX_KEY = "jobwire"


def new_worker_id() -> str:
    """Unique among live workers, and says where to look: host, pid and a random tail."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Workload:
    """How many jobs this worker runs now; `changed` is set whenever the number moves, so the
    presence beat reports it at once (`worker.presence`)."""

    def __init__(self) -> None:
        self.running = 0
        self.changed = asyncio.Event()

    @contextlib.contextmanager
    def job(self) -> Iterator[None]:
        """Counts one job as running while the block runs."""
        self.running += 1
        self.changed.set()
        try:
            yield
        finally:
            self.running -= 1
            self.changed.set()


@dataclass(frozen=True, slots=True)
class WorkerRuntime:
    settings: Settings
    redis: EventsRedis
    publisher: Publisher
    keys: Keys
    worker_id: str
    # Set when the worker begins to stop: a job handed to it from then on is not run.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    workload: Workload = field(default_factory=Workload)
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)

    @classmethod
    def create(cls, settings: Settings) -> WorkerRuntime:
        redis = create_events_redis(settings.events_redis_url)
        return cls(
            settings=settings,
            redis=redis,
            publisher=Publisher(redis, settings),
            keys=Keys(settings.key_prefix),
            worker_id=new_worker_id(),
        )

    def install(self, ctx: dict[Any, Any]) -> None:
        ctx[_CTX_KEY] = self

    @classmethod
    def of(cls, ctx: dict[Any, Any]) -> WorkerRuntime:
        runtime = ctx[_CTX_KEY]
        assert isinstance(runtime, cls)
        return runtime

    @classmethod
    def find(cls, ctx: dict[Any, Any]) -> WorkerRuntime | None:
        """The runtime, if the worker got as far as installing one."""
        runtime = ctx.get(_CTX_KEY)
        return runtime if isinstance(runtime, cls) else None

    @classmethod
    def remove(cls, ctx: dict[Any, Any]) -> WorkerRuntime | None:
        runtime = cls.find(ctx)
        ctx.pop(_CTX_KEY, None)
        return runtime

    async def close(self) -> None:
        await self.redis.aclose()
