"""How many jobs the live workers run: each worker writes its count with its presence beat,
in a key of its own that expires unless renewed, so a worker that died stops counting."""

from __future__ import annotations

from shared.clients import EventsRedis
from shared.events import now_ms
from shared.keys import Keys

__all__ = ["report_running", "running_jobs"]


async def report_running(
    redis: EventsRedis, keys: Keys, worker_id: str, running: int, ttl_s: float
) -> None:
    await redis.set(keys.worker_load(worker_id), running, px=max(1, int(ttl_s * 1000)))


async def running_jobs(redis: EventsRedis, keys: Keys, within_s: float) -> int:
    """The jobs the workers seen in the last `within_s` seconds report running: one command
    per live worker, in one round trip."""
    cutoff = now_ms() - int(within_s * 1000)
    workers: list[bytes] = await redis.zrangebyscore(keys.workers(), cutoff, "+inf")
    if not workers:
        return 0
    async with redis.pipeline(transaction=False) as pipe:
        for worker in workers:
            pipe.get(keys.worker_load(worker.decode()))
        counts = await pipe.execute()
    return sum(int(count) for count in counts if count is not None)
