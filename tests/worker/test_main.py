"""Running workers: presence in the catalog, arq's own entry point, and a worker process
stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from arq.worker import get_kwargs
from redis.asyncio import Redis

import worker.main
from shared.catalog import count_alive, load_catalog
from shared.settings import Settings
from tests.support import wait_until
from tests.worker_support import JobHarness, types
from worker import demo
from worker.main import create_worker
from worker.progress import Progress
from worker.registry import JobRegistry

pytestmark = pytest.mark.timeout(30)

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def harness(settings: Settings, redis: Redis) -> AsyncIterator[JobHarness]:
    async with JobHarness.open(settings, redis) as harness:
        yield harness


async def test_running_worker_advertises_its_jobs_and_is_counted_alive(
    harness: JobHarness, redis: Redis
) -> None:
    first = await harness.start_worker()

    await wait_until(lambda: count_alive(redis, harness.keys, 15), message="a live worker")
    catalog = await load_catalog(redis, harness.keys)
    assert sorted(catalog) == sorted(spec["name"] for spec in demo.jobs.specs())
    assert catalog["demo.countdown"]["params"] == ["seconds", "steps"]

    await harness.stop_worker(first)
    assert await count_alive(redis, harness.keys, 15) == 0
    assert sorted(await load_catalog(redis, harness.keys)) == sorted(catalog)


async def test_a_worker_stopped_while_starting_up_finishes_and_retires(
    harness: JobHarness, redis: Redis
) -> None:
    worker = await harness.start_worker()
    await wait_until(lambda: worker.main_task is not None, message="the worker starting up")

    await harness.stop_worker(worker)

    assert await load_catalog(redis, harness.keys)
    assert await count_alive(redis, harness.keys, 15) == 0


def test_a_job_name_may_be_registered_by_one_registry_only(settings: Settings) -> None:
    other = JobRegistry()

    @other.job("demo.countdown")
    async def countdown(progress: Progress) -> None:
        pass

    with pytest.raises(ValueError, match=r"registered twice: demo\.countdown"):
        create_worker(settings, [demo.jobs, other])


@pytest.fixture
def environment_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("JOBWIRE_QUEUE_NAME", "from-the-environment")
    worker.main._worker_settings_from_env.cache_clear()
    yield
    worker.main._worker_settings_from_env.cache_clear()


@pytest.mark.usefixtures("environment_settings")
def test_worker_settings_for_arqs_cli_come_from_the_environment() -> None:
    options: dict[str, Any] = get_kwargs(worker.main.WorkerSettings)

    assert options["queue_name"] == "from-the-environment"
    assert options["allow_abort_jobs"] is True
    assert options["handle_signals"] is True
    assert [function.name for function in options["functions"]] == [
        spec["name"] for spec in demo.jobs.specs()
    ]


async def test_worker_process_hands_its_job_back_on_sigterm(
    harness: JobHarness, settings: Settings, redis: Redis
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker",
        cwd=PROJECT_ROOT,
        env={**os.environ, **settings.to_env()},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        job_id = await harness.submit("demo.countdown", seconds=30, steps=30)
        await harness.wait_for(job_id, "progress")
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=10)
    finally:
        if process.returncode is None:
            process.kill()
            await process.communicate()

    events = await harness.events(job_id)
    assert process.returncode == 0, stderr.decode()
    assert types(events) == ["queued", "started", "progress", "retrying"]
    assert events[-1]["data"]["reason"] == "worker shutting down"
    assert await count_alive(redis, harness.keys, 15) == 0
