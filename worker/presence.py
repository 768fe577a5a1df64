"""A running worker's presence: its jobs in the catalog, its id among the live workers."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.exceptions import RedisError

from shared.catalog import BEAT_INTERVAL_S, JobSpec, advertise, mark_alive, retire
from worker.runtime import WorkerRuntime

__all__ = ["Presence"]

logger = logging.getLogger(__name__)


class Presence:
    def __init__(self, runtime: WorkerRuntime, specs: list[JobSpec]) -> None:
        self._runtime = runtime
        self._specs = specs
        self._beats: asyncio.Task[None] | None = None

    async def start(self) -> None:
        runtime = self._runtime
        await advertise(runtime.redis, runtime.keys, self._specs)
        await mark_alive(runtime.redis, runtime.keys, runtime.worker_id)
        self._beats = asyncio.create_task(self._beat(), name=f"alive {runtime.worker_id}")

    async def stop(self) -> None:
        if self._beats is not None:
            self._beats.cancel()
            await asyncio.gather(self._beats, return_exceptions=True)
            self._beats = None
        runtime = self._runtime
        try:
            await retire(runtime.redis, runtime.keys, runtime.worker_id)
        except (RedisError, OSError) as exc:
            # It drops out of the live count on its own once its last beat is old enough.
            logger.warning("could not retire worker %s: %r", runtime.worker_id, exc)

    async def _beat(self) -> None:
        runtime = self._runtime
        while True:
            await asyncio.sleep(BEAT_INTERVAL_S)
            with contextlib.suppress(RedisError, OSError):
                await mark_alive(runtime.redis, runtime.keys, runtime.worker_id)
