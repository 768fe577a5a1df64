"""Helpers for tests of a gateway with access control on: two API keys, the token secret,
and a job name that is advertised but never run (its jobs stay queued, their streams open)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from redis.asyncio import Redis

from shared.catalog import JobSpec, advertise
from shared.keys import Keys
from shared.settings import Settings
from tests.conftest import Gateway, StartGateway

__all__ = [
    "ALICE_KEY",
    "BOB_KEY",
    "TOKEN_SECRET",
    "WAITING_JOB",
    "advertise_waiting_job",
    "bearer",
    "holding_alices_one_stream",
    "start_keyed_gateway",
    "submit_as",
    "with_auth",
]

ALICE_KEY = "alice-key-0123456789abcdef"
BOB_KEY = "bob-key-fedcba9876543210"
TOKEN_SECRET = "test-token-secret-" + "7" * 32
WAITING_JOB = "test.wait"


def with_auth(settings: Settings, **changes: Any) -> Settings:
    """`settings` with access control on: keys `alice` and `bob`."""
    auth = {
        "auth_disabled": False,
        "api_keys": f"alice:{ALICE_KEY},bob:{BOB_KEY}",
        "token_secret": TOKEN_SECRET,
    }
    return settings.replace(**(auth | changes))


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


async def advertise_waiting_job(redis: Redis, settings: Settings) -> None:
    """Makes `WAITING_JOB` submittable with no worker to run it."""
    spec = JobSpec(name=WAITING_JOB, params=[], required=[], accepts_any=True, doc="never runs")
    await advertise(redis, Keys(settings.key_prefix), [spec])


async def start_keyed_gateway(
    start_gateway: StartGateway, redis: Redis, settings: Settings, **changes: Any
) -> Gateway:
    """A gateway `with_auth(settings, **changes)`, on which `WAITING_JOB` may be submitted."""
    await advertise_waiting_job(redis, settings)
    return await start_gateway(with_auth(settings, **changes))


async def submit_as(
    client: httpx.AsyncClient, key: str, name: str = WAITING_JOB, **args: object
) -> dict[str, Any]:
    """The submit answer of a job submitted with API key `key`."""
    response = await client.post("/jobs", json={"name": name, "args": args}, headers=bearer(key))
    assert response.status_code == 202, response.text
    answer: dict[str, Any] = response.json()
    return answer


@asynccontextmanager
async def holding_alices_one_stream(
    start_gateway: StartGateway, redis: Redis, settings: Settings, *, multi: bool = False
) -> AsyncIterator[tuple[Gateway, httpx.AsyncClient, str]]:
    """A gateway on which key `alice` may hold one event stream, while she holds it (on a job
    that stays queued; through `GET /events` when `multi`): the gateway, her client, the job."""
    gateway = await start_keyed_gateway(start_gateway, redis, settings, max_streams_per_key=1)
    async with gateway.client(headers=bearer(ALICE_KEY)) as client:
        job_id = (await submit_as(client, ALICE_KEY))["job_id"]
        url, params = ("/events", {"job": job_id}) if multi else (f"/jobs/{job_id}/events", None)
        async with client.stream("GET", url, params=params) as held:
            assert held.status_code == 200
            yield gateway, client, job_id
