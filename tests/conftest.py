"""Real parts for every test: one redis-server per session on a free port, a real arq worker
and a real uvicorn on a free port per test that asks for them.

Each test gets its own key prefix and queue name, so tests never see each other's jobs and
nothing needs flushing.

On a loaded machine every bound on waiting stretches by one factor, `tests.support.TIMEOUT_SCALE`
(its docstring says how it is chosen; `TEST_TIMEOUT_SCALE=3` sets it), and so does each test's
pytest-timeout limit: the `timeout` of pyproject.toml or of the test's own marker.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from arq.worker import Worker
from redis.asyncio import Redis
from starlette.applications import Starlette

from gateway.engine.hub import Hub
from gateway.processes.server import GatewayServer, build_server
from shared.catalog import count_alive, load_catalog
from shared.clients import create_redis
from shared.keys import Keys
from shared.settings import Settings
from tests.support import TIMEOUT_SCALE, RedisServer, free_port, scaled, wait_until
from worker.main import create_worker


def pytest_report_header() -> str:
    return f"timeouts scaled by {TIMEOUT_SCALE:.2f} (TEST_TIMEOUT_SCALE, else from the load)"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Gives each test a timeout marker of its limit times `TIMEOUT_SCALE`; a test's own
    marker is the one pytest-timeout reads first, so this replaces the configured limit too."""
    if TIMEOUT_SCALE == 1:
        return
    configured = _configured_timeout(config)
    for item in items:
        marker = item.get_closest_marker("timeout")
        args, kwargs = (marker.args, dict(marker.kwargs)) if marker else ((), {})
        limit = kwargs.pop("timeout", args[0] if args else configured)
        if limit:
            marked = pytest.mark.timeout(scaled(float(limit)), *args[1:], **kwargs)
            item.add_marker(marked, append=False)


def _configured_timeout(config: pytest.Config) -> float | None:
    """pytest-timeout's limit for a test without a marker: --timeout, else PYTEST_TIMEOUT, else
    the ini file's `timeout`."""
    for value in (
        config.getoption("timeout", None),
        os.environ.get("PYTEST_TIMEOUT"),
        config.getini("timeout"),
    ):
        if value not in (None, ""):
            return float(value)
    return None


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (.ci/run installs it)")
    with tempfile.TemporaryDirectory(prefix="jobwire-redis-") as data_dir:
        server = RedisServer(binary, free_port(), Path(data_dir))
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def settings(redis_server: RedisServer, request: pytest.FixtureRequest) -> Settings:
    """Settings of this test: its own key prefix and queue, short intervals."""
    tag = f"t{uuid.uuid4().hex[:10]}"
    return Settings.from_env(
        {
            "JOBWIRE_REDIS_URL": redis_server.url,
            "JOBWIRE_KEY_PREFIX": tag,
            "JOBWIRE_QUEUE_NAME": f"{tag}:queue",
            "JOBWIRE_HEARTBEAT_S": "5",
            "JOBWIRE_PING_S": "5",
            "JOBWIRE_WORKER_POLL_S": "0.05",
            "JOBWIRE_RETRY_DELAY_S": "0.05",
            # A stopped worker hands its running jobs back at once; tests of the grace set it.
            "JOBWIRE_SHUTDOWN_GRACE_S": "0",
            # Access control has its own tests (test_auth.py), with settings that turn it on.
            "JOBWIRE_AUTH_DISABLED": "true",
        }
    )


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = create_redis(settings.events_redis_url)
    try:
        yield client
    finally:
        await client.aclose()


RunWorker = Callable[..., Awaitable[Worker]]


@pytest.fixture
async def start_worker(settings: Settings, redis: Redis) -> AsyncIterator[RunWorker]:
    """Starts real arq workers in this event loop, each ready (its jobs advertised, itself
    marked alive) when returned; all are closed when the test ends."""
    running: list[tuple[Worker, asyncio.Task[None]]] = []
    keys = Keys(settings.key_prefix)

    async def ready() -> bool:
        return bool(await load_catalog(redis, keys)) and await count_alive(redis, keys, 60) > 0

    async def start(worker_settings: Settings | None = None) -> Worker:
        worker = create_worker(worker_settings or settings)
        task = asyncio.create_task(worker.async_run())
        running.append((worker, task))
        await wait_until(ready, timeout=10, message="worker ready")
        return worker

    try:
        yield start
    finally:
        for worker, task in running:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await worker.close()


@dataclass
class Gateway:
    url: str
    server: GatewayServer
    task: asyncio.Task[None]

    @property
    def hub(self) -> Hub:
        """The gateway's fan-out hub (the app runs in this test's event loop)."""
        app = self.server.config.app
        assert isinstance(app, Starlette)
        hub: Hub = app.state.services.hub
        return hub

    @property
    def port(self) -> int:
        port = urlsplit(self.url).port
        assert port is not None
        return port

    def client(self, **kwargs: object) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=scaled(10), **kwargs)  # type: ignore[arg-type]


StartGateway = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def start_gateway(settings: Settings) -> AsyncIterator[StartGateway]:
    """Serves the app with a real uvicorn on a free port; stopped when the test ends."""
    gateways: list[Gateway] = []

    async def start(gateway_settings: Settings | None = None) -> Gateway:
        # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets that say they are TCP,
        # and without it every answer waits ~40 ms on Nagle and delayed ACKs.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = build_server(gateway_settings or settings)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        await wait_until(lambda: server.started or task.done(), timeout=10)
        if not server.started:
            sock.close()
            await task  # raises why start-up failed
            raise RuntimeError("the gateway exited during start-up")
        gateway = Gateway(f"http://127.0.0.1:{port}", server, task)
        gateways.append(gateway)
        return gateway

    try:
        yield start
    finally:
        for gateway in gateways:
            gateway.server.should_exit = True
        for gateway in gateways:
            await asyncio.wait_for(gateway.task, timeout=scaled(10))


@pytest.fixture
async def stack(start_worker: RunWorker, start_gateway: StartGateway) -> Gateway:
    """A worker and a gateway on this test's settings."""
    await start_worker()
    return await start_gateway()
