"""The probes: `/healthz` says the process serves requests; `/readyz` says whether Redis
answers, and how many workers are alive, and never shows a client what Redis's error said.
(`/readyz` while live delivery is down: tests/gateway/engine/test_reader.py.)"""

from __future__ import annotations

import logging

import httpx
import pytest

from shared.settings import Settings
from tests.conftest import RunWorker, StartGateway
from tests.support import free_port, wait_until

pytestmark = pytest.mark.timeout(60)


async def _workers(client: httpx.AsyncClient, count: int) -> bool:
    body = (await client.get("/readyz")).json()
    return bool(body["workers"] == count)


async def test_readyz_counts_workers(start_gateway: StartGateway, start_worker: RunWorker) -> None:
    gateway = await start_gateway()
    async with gateway.client() as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["workers"] == 0
        assert "no worker" in ready.json()["warning"]
        await start_worker()
        await start_worker()
        await wait_until(lambda: _workers(client, 2))
        health = await client.get("/healthz")

    assert health.json() == {"status": "ok"}


async def test_readyz_tells_no_client_what_redis_error_it_met(
    start_gateway: StartGateway, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()  # nothing listens there: the queue's Redis is unreachable
    gateway = await start_gateway(settings.replace(queue_redis_url=f"redis://127.0.0.1:{port}/0"))
    with caplog.at_level(logging.WARNING, logger="jobwire.gateway"):
        async with gateway.client() as client:
            response = await client.get("/readyz")

    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "redis": "unavailable", "workers": None}
    assert str(port) not in response.text
    logged = [r.getMessage() for r in caplog.records if r.name == "jobwire.gateway"]
    assert any(str(port) in message for message in logged), "the detail is in the log"
