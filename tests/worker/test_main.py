"""Building and running workers: one registry per job name, arq's own entry point, and a worker
process stopped by SIGTERM, once or twice."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from arq.worker import get_kwargs
from redis.asyncio import Redis

import worker.main
from shared.catalog import count_alive
from shared.settings import Settings
from tests.processes import PROJECT_ROOT, ProcessGroup
from tests.support import scaled, wait_until
from tests.worker_support import JobHarness, types
from worker import demo
from worker.main import create_worker
from worker.progress import Progress
from worker.registry import JobRegistry

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def harness(settings: Settings, redis: Redis) -> AsyncIterator[JobHarness]:
    async with JobHarness.open(settings, redis) as harness:
        yield harness


@pytest.fixture
async def processes() -> AsyncIterator[ProcessGroup]:
    async with ProcessGroup.open() as group:
        yield group


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
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=scaled(10))
    finally:
        if process.returncode is None:
            process.kill()
            await process.communicate()

    events = await harness.events(job_id)
    assert process.returncode == 0, stderr.decode()
    assert types(events) == ["queued", "started", "progress", "retrying"]
    assert events[-1]["data"]["reason"] == "worker shutting down"
    assert await count_alive(redis, harness.keys, 15) == 0


async def test_a_second_sigterm_cuts_the_grace_short(
    processes: ProcessGroup, settings: Settings, redis: Redis
) -> None:
    settings = settings.replace(shutdown_grace_s=30)
    async with JobHarness.open(settings, redis) as harness:
        stopping = await processes.worker(settings)
        job_id = await harness.submit("demo.countdown", seconds=30, steps=30)
        await harness.wait_for(job_id, "progress")

        stopping.signal(signal.SIGTERM)
        signalled = time.monotonic()
        await wait_until(lambda: "get 30 s to finish" in stopping.log(), message="the grace begun")
        stopping.signal(signal.SIGTERM)
        exit_status = await stopping.wait(timeout=10)
        stopped_after = time.monotonic() - signalled
        events = await harness.events(job_id)

    assert exit_status == 0, processes.logs()
    assert stopped_after < 5, stopped_after
    assert types(events)[-1] == "retrying"
    assert events[-1]["data"]["reason"] == "worker shutting down"


async def test_a_stop_on_sigterm_is_logged_as_sigterm(
    processes: ProcessGroup, settings: Settings
) -> None:
    stopping = await processes.worker(settings)

    stopping.signal(signal.SIGTERM)
    exit_status = await stopping.wait(timeout=10)

    assert exit_status == 0, processes.logs()
    assert "stopping on SIGTERM: 0 running jobs" in stopping.log()
    assert "SIGUSR1" not in stopping.log()
