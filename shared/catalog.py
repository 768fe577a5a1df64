"""How workers make their job names known, and that they are alive, without the gateway
importing worker code.

Each worker writes a spec per job name into one hash when it starts (the catalog stays when
workers stop, so jobs can be queued while none runs) and refreshes its own last-seen time in a
sorted set while it runs. `/readyz` counts the workers seen recently.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

import orjson

from shared.clients import EventsRedis
from shared.events import now_ms
from shared.keys import Keys

__all__ = [
    "ALIVE_WITHIN_S",
    "BEAT_INTERVAL_S",
    "JobSpec",
    "advertise",
    "args_schema",
    "count_alive",
    "load_catalog",
    "mark_alive",
    "retire",
]

# A worker marks itself alive this often; it counts as alive for three missed beats.
BEAT_INTERVAL_S = 5.0
ALIVE_WITHIN_S = 3 * BEAT_INTERVAL_S


class JobSpec(TypedDict):
    name: str
    params: list[str]
    required: list[str]
    accepts_any: bool
    doc: str
    # The JSON Schema (Draft 2020-12) of the job's `args`, made from its annotations by the
    # worker; a worker of an older release writes none (see `args_schema`).
    args_schema: NotRequired[dict[str, Any]]


def args_schema(spec: JobSpec) -> dict[str, Any]:
    """The schema `spec` advertises, or for a spec without one the schema its parameter names
    say: those, the required ones, and others only when the job takes `**kwargs`."""
    if "args_schema" in spec:
        return spec["args_schema"]
    return {
        "type": "object",
        "properties": {name: {} for name in spec["params"]},
        "required": spec["required"],
        "additionalProperties": spec["accepts_any"],
    }


async def advertise(redis: EventsRedis, keys: Keys, specs: list[JobSpec]) -> None:
    if specs:
        mapping = {spec["name"]: orjson.dumps(spec) for spec in specs}
        await redis.hset(keys.catalog(), mapping=mapping)  # type: ignore[misc]


async def load_catalog(redis: EventsRedis, keys: Keys) -> dict[str, JobSpec]:
    raw: dict[bytes, bytes] = await redis.hgetall(keys.catalog())  # type: ignore[misc]
    return {name.decode(): orjson.loads(spec) for name, spec in raw.items()}


async def mark_alive(redis: EventsRedis, keys: Keys, worker_id: str) -> None:
    await redis.zadd(keys.workers(), {worker_id: now_ms()})


async def retire(redis: EventsRedis, keys: Keys, worker_id: str) -> None:
    await redis.zrem(keys.workers(), worker_id)


async def count_alive(redis: EventsRedis, keys: Keys, within_s: float) -> int:
    """Workers seen in the last `within_s` seconds; older entries are pruned."""
    cutoff = now_ms() - int(within_s * 1000)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zremrangebyscore(keys.workers(), "-inf", f"({cutoff}")
        pipe.zcard(keys.workers())
        _, alive = await pipe.execute()
    return int(alive)
