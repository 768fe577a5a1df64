"""A running worker's presence: its jobs in the catalog, its id among the live workers, and how
many jobs it runs (`GET /system` sums them over the live workers).

The beat comes every `BEAT_INTERVAL_S`, and sooner when the number of running jobs moves, but
never closer together than `MIN_BEAT_GAP_S`: however fast jobs come and go, a worker writes
at most a few times a second."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.exceptions import RedisError

from shared.catalog import ALIVE_WITHIN_S, BEAT_INTERVAL_S, JobSpec, advertise, mark_alive, retire
from shared.workload import report_running
from worker.runtime import WorkerRuntime

__all__ = ["Presence"]

logger = logging.getLogger(__name__)

MIN_BEAT_GAP_S = 0.25


class Presence:
    def __init__(self, runtime: WorkerRuntime, specs: list[JobSpec]) -> None:
        self._runtime = runtime
        self._specs = specs
        self._beats: asyncio.Task[None] | None = None

    async def start(self) -> None:
        runtime = self._runtime
        await advertise(runtime.redis, runtime.keys, self._specs)
        await self._mark_alive()
        self._beats = asyncio.create_task(self._beat(), name=f"alive {runtime.worker_id}")

    async def stop(self) -> None:
        if self._beats is not None:
            self._beats.cancel()
            await asyncio.gather(self._beats, return_exceptions=True)
            self._beats = None
        runtime = self._runtime
        try:
            await retire(runtime.redis, runtime.keys, runtime.worker_id)
            await runtime.redis.delete(runtime.keys.worker_load(runtime.worker_id))
        except (RedisError, OSError) as exc:
            # It drops out of the live count on its own once its last beat is old enough.
            logger.warning("could not retire worker %s: %r", runtime.worker_id, exc)

    async def _beat(self) -> None:
        workload = self._runtime.workload
        while True:
            await asyncio.sleep(MIN_BEAT_GAP_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(workload.changed.wait(), BEAT_INTERVAL_S - MIN_BEAT_GAP_S)
            with contextlib.suppress(RedisError, OSError):
                await self._mark_alive()

    async def _mark_alive(self) -> None:
        runtime = self._runtime
        # Cleared before the count is read: a change while writing brings the next beat soon.
        runtime.workload.changed.clear()
        running = runtime.workload.running
        await mark_alive(runtime.redis, runtime.keys, runtime.worker_id)
        await report_running(
            runtime.redis, runtime.keys, runtime.worker_id, running, ALIVE_WITHIN_S
        )
