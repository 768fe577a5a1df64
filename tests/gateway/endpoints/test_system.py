"""`GET /system` with a real worker: workers alive, jobs queued and running, as they change."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis

from shared.keys import Keys
from shared.settings import Settings
from tests.auth_support import ALICE_KEY, bearer, submit_as, with_auth
from tests.conftest import RunWorker, StartGateway
from tests.support import wait_until

pytestmark = pytest.mark.timeout(60)


async def test_workers_queued_and_running_follow_a_real_worker(
    start_gateway: StartGateway, start_worker: RunWorker, settings: Settings, redis: Redis
) -> None:
    worker = await start_worker(settings.replace(worker_concurrency=1))
    gateway = await start_gateway(with_auth(settings))
    async with gateway.client(headers=bearer(ALICE_KEY)) as client:
        figures: list[dict[str, Any]] = []

        async def shows(expected: dict[str, int]) -> bool:
            figures.append((await client.get("/system")).json())
            return figures[-1] == expected

        assert (await client.get("/system")).json() == {"workers": 1, "queued": 0, "running": 0}
        first = await submit_as(client, ALICE_KEY, "demo.countdown", seconds=60)
        second = await submit_as(client, ALICE_KEY, "demo.countdown", seconds=60)
        await wait_until(
            lambda: shows({"workers": 1, "queued": 1, "running": 1}),
            timeout=10,
            message=f"one running, one waiting: {figures[-1:]}",
        )

        await client.delete(f"/jobs/{second['job_id']}")
        await client.delete(f"/jobs/{first['job_id']}")
        await wait_until(
            lambda: shows({"workers": 1, "queued": 0, "running": 0}),
            timeout=10,
            message=f"nothing left: {figures[-1:]}",
        )

        await worker.close()
        assert (await client.get("/system")).json() == {"workers": 0, "queued": 0, "running": 0}
    worker_loads = await redis.keys(Keys(settings.key_prefix).worker_load("*"))
    assert worker_loads == []


async def test_a_key_is_needed(start_gateway: StartGateway, settings: Settings) -> None:
    gateway = await start_gateway(with_auth(settings))
    async with gateway.client() as client:
        response = await client.get("/system")

    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
