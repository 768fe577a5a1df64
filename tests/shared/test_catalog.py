from __future__ import annotations

import pytest
from redis.asyncio import Redis

from shared.catalog import JobSpec, advertise, count_alive, load_catalog, mark_alive, retire
from shared.events import now_ms
from shared.keys import Keys
from shared.settings import Settings

_SLEEP = JobSpec(name="sleep", params=["seconds"], required=["seconds"], accepts_any=False, doc="")
_ECHO = JobSpec(
    name="echo", params=["text", "times"], required=["text"], accepts_any=True, doc="Says é."
)


@pytest.fixture
def keys(settings: Settings) -> Keys:
    return Keys(settings.key_prefix)


async def test_advertised_specs_load_back(redis: Redis, keys: Keys) -> None:
    await advertise(redis, keys, [_SLEEP, _ECHO])

    assert await load_catalog(redis, keys) == {"sleep": _SLEEP, "echo": _ECHO}


async def test_advertising_again_replaces_a_spec_and_keeps_the_others(
    redis: Redis, keys: Keys
) -> None:
    await advertise(redis, keys, [_SLEEP, _ECHO])
    newer = JobSpec(name="sleep", params=[], required=[], accepts_any=True, doc="v2")

    await advertise(redis, keys, [newer])

    assert await load_catalog(redis, keys) == {"sleep": newer, "echo": _ECHO}


async def test_advertising_nothing_writes_nothing(redis: Redis, keys: Keys) -> None:
    await advertise(redis, keys, [])

    assert await redis.exists(keys.catalog()) == 0
    assert await load_catalog(redis, keys) == {}


async def test_catalogs_of_different_prefixes_are_separate(redis: Redis, keys: Keys) -> None:
    await advertise(redis, keys, [_SLEEP])

    assert await load_catalog(redis, Keys(keys.prefix + "-other")) == {}


async def test_alive_workers_are_counted_until_retired(redis: Redis, keys: Keys) -> None:
    await mark_alive(redis, keys, "worker-a")
    await mark_alive(redis, keys, "worker-b")
    await mark_alive(redis, keys, "worker-a")

    assert await count_alive(redis, keys, within_s=60) == 2
    await retire(redis, keys, "worker-a")
    assert await count_alive(redis, keys, within_s=60) == 1
    await retire(redis, keys, "worker-b")
    assert await count_alive(redis, keys, within_s=60) == 0


async def test_workers_not_seen_recently_are_pruned(redis: Redis, keys: Keys) -> None:
    await mark_alive(redis, keys, "fresh")
    await redis.zadd(keys.workers(), {"stale": now_ms() - 120_000})

    assert await count_alive(redis, keys, within_s=60) == 1
    assert await redis.zscore(keys.workers(), "stale") is None
    assert await redis.zscore(keys.workers(), "fresh") is not None
    assert await count_alive(redis, keys, within_s=600) == 1


async def test_mark_alive_records_the_current_time(redis: Redis, keys: Keys) -> None:
    before = now_ms()
    await mark_alive(redis, keys, "worker-a")
    after = now_ms()

    seen = await redis.zscore(keys.workers(), "worker-a")

    assert seen is not None
    assert before <= seen <= after
