"""Driving real workers without the gateway: submit jobs the way it does, run workers with any
registry, and read a job's stream straight from Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from arq import ArqRedis, create_pool
from arq.connections import RedisSettings
from arq.jobs import Job
from arq.worker import Worker
from redis.asyncio import Redis

from shared.events import Event, EventType, decode_event, make_event, now_ms
from shared.keys import Keys
from shared.publish import Publisher
from shared.settings import Settings
from shared.state import CANCEL_REQUESTED
from tests.support import scaled, wait_until
from worker.main import create_worker
from worker.registry import JobRegistry

__all__ = ["JobHarness", "types"]


def types(events: Sequence[Event]) -> list[str]:
    return [event["type"] for event in events]


class JobHarness:
    def __init__(self, settings: Settings, redis: Redis, pool: ArqRedis) -> None:
        self.settings = settings
        self.redis = redis
        self.pool = pool
        self.keys = Keys(settings.key_prefix)
        self.publisher = Publisher(redis, settings)
        self._workers: list[tuple[Worker, asyncio.Task[None]]] = []

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings, redis: Redis) -> AsyncIterator[JobHarness]:
        pool = await create_pool(
            RedisSettings.from_dsn(settings.arq_redis_url), default_queue_name=settings.queue_name
        )
        harness = cls(settings, redis, pool)
        try:
            yield harness
        finally:
            try:
                for worker, _ in list(harness._workers):
                    await harness.stop_worker(worker)
            finally:
                await pool.aclose()

    async def start_worker(
        self, registry: JobRegistry | None = None, settings: Settings | None = None
    ) -> Worker:
        registries = None if registry is None else [registry]
        worker = create_worker(settings or self.settings, registries)
        self._workers.append((worker, asyncio.create_task(worker.async_run())))
        return worker

    async def stop_worker(self, worker: Worker) -> None:
        """What `jobwire worker` does on SIGTERM: stop polling, cancel running jobs, close."""
        for entry in self._workers:
            if entry[0] is worker:
                self._workers.remove(entry)
                entry[1].cancel()
                await asyncio.gather(entry[1], return_exceptions=True)
                await worker.close()
                return

    async def submit(self, name: str, *, job_id: str | None = None, **args: Any) -> str:
        job_id = job_id or f"job-{uuid.uuid4().hex[:12]}"
        queued = make_event(EventType.QUEUED, job_id, 0, {"name": name, "args": args})
        assert (await self.publisher.publish(queued, create=True)).accepted
        assert await self.pool.enqueue_job(name, _job_id=job_id, **args) is not None
        return job_id

    async def cancel_running(self, job_id: str) -> bool:
        """What the gateway's DELETE does for a running job; True once arq aborted it."""
        await self.redis.hset(self.keys.state(job_id), CANCEL_REQUESTED, str(now_ms()))  # type: ignore[misc]
        return await self.arq_job(job_id).abort(timeout=scaled(10), poll_delay=0.02)

    def arq_job(self, job_id: str) -> Job:
        return Job(job_id, self.pool, _queue_name=self.settings.queue_name)

    async def events(self, job_id: str) -> list[Event]:
        entries = await self.redis.xrange(self.keys.events(job_id))
        return [decode_event(fields[b"e"]) for _, fields in entries]

    async def raw_stream(self, job_id: str) -> bytes:
        entries = await self.redis.xrange(self.keys.events(job_id))
        return b"\n".join(fields[b"e"] for _, fields in entries)

    async def wait_for(self, job_id: str, event_type: str, *, timeout: float = 10) -> list[Event]:
        """The job's events, once one of them is of `event_type`."""

        async def seen() -> list[Event] | None:
            events = await self.events(job_id)
            return events if event_type in types(events) else None

        found = await wait_until(seen, timeout=timeout, message=f"a {event_type} event")
        assert isinstance(found, list)
        return found

    async def wait_until_ended(self, job_id: str, *, timeout: float = 10) -> list[Event]:
        """The job's events, once the last one is terminal."""

        async def ended() -> list[Event] | None:
            events = await self.events(job_id)
            return events if events and EventType(events[-1]["type"]).is_terminal else None

        found = await wait_until(ended, timeout=timeout, message=f"job {job_id} ending")
        assert isinstance(found, list)
        return found
