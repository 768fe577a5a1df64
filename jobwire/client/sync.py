"""A blocking facade for scripts: the async client runs on an event loop in its own thread.

A private loop (rather than `asyncio.run` per call) keeps one connection pool for the whole
client and works the same when the caller already runs an event loop (a notebook, say).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from types import TracebackType
from typing import Any, TypeVar

from jobwire.client.client import Client
from jobwire.client.events import JobEvent
from jobwire.client.job import Job
from jobwire.client.stream import ConnectionListener
from jobwire.client.target import Target

__all__ = ["SyncClient", "SyncJob"]

T = TypeVar("T")


class _LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="jobwire-client", daemon=True
        )
        self._thread.start()

    @property
    def closed(self) -> bool:
        return self.loop.is_closed()

    def run(self, awaitable: Awaitable[T]) -> T:
        if self.closed:
            raise RuntimeError("the client is closed")
        future: Future[T] = asyncio.run_coroutine_threadsafe(_await(awaitable), self.loop)
        try:
            return future.result()
        except BaseException:
            # Ctrl-C (or any error) in the caller: stop the work in the loop too.
            future.cancel()
            raise

    def iterate(self, events: AsyncIterator[T]) -> Iterator[T]:
        """`events`, run on the loop, one item at a time; closed there when left early."""
        try:
            while True:
                try:
                    yield self.run(events.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None and not self.closed:
                self.run(aclose())

    def stop(self) -> None:
        if self.closed:
            return
        self.run(self.loop.shutdown_asyncgens())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


class SyncClient:
    """`Client` for code without an event loop. Close it (or use `with`) when done.

    The gateway and the key come from `JOBWIRE_URL` and `JOBWIRE_API_KEY` when not given, as
    for `Client`.
    """

    def __init__(
        self, base_url: str | None = None, api_key: str | None = None, **options: Any
    ) -> None:
        # Resolved here, so that a bad URL raises before a thread is started.
        target = Target.resolve(base_url, api_key, os.environ)
        self._runner = _LoopThread()
        self._client: Client = self._runner.run(_make_client(target.url, target.api_key, options))

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if not self._runner.closed:
            self._runner.run(self._client.aclose())
            self._runner.stop()

    def submit(self, name: str, /, **args: Any) -> SyncJob:
        return SyncJob(self._runner, self._runner.run(self._client.submit(name, **args)))

    def job(self, job_id: str, watch_token: str | None = None) -> SyncJob:
        return SyncJob(self._runner, self._client.job(job_id, watch_token))

    def run(self, name: str, /, **args: Any) -> Iterator[JobEvent]:
        """As `Client.run`: submits the job and yields its events from the same request."""
        return self._runner.iterate(self._client.run(name, **args))

    def run_job(
        self,
        name: str,
        args: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        on_connection: ConnectionListener | None = None,
    ) -> Iterator[JobEvent]:
        """As `Client.run_job`; `on_connection` is called on the client's thread."""
        events = self._client.run_job(
            name, args, idempotency_key=idempotency_key, on_connection=on_connection
        )
        return self._runner.iterate(events)

    def follow(
        self,
        jobs: Iterable[SyncJob | str],
        *,
        on_connection: ConnectionListener | None = None,
    ) -> Iterator[JobEvent]:
        """As `Client.follow`: the events of several jobs on one connection."""
        unwrapped = [job.job if isinstance(job, SyncJob) else job for job in jobs]
        return self._runner.iterate(self._client.follow(unwrapped, on_connection=on_connection))


async def _make_client(base_url: str, api_key: str | None, options: dict[str, Any]) -> Client:
    # httpx binds nothing to a loop at construction, but making it on the loop that will use it
    # keeps that true whatever httpx does later.
    return Client(base_url, api_key, **options)


class SyncJob:
    def __init__(self, runner: _LoopThread, job: Job) -> None:
        self._runner = runner
        self.job = job

    @property
    def job_id(self) -> str:
        return self.job.job_id

    @property
    def watch_token(self) -> str | None:
        return self.job.watch_token

    def events(
        self, *, after: str | None = None, on_connection: ConnectionListener | None = None
    ) -> Iterator[JobEvent]:
        """As `Job.events`; `on_connection` is called on the client's thread."""
        return self._runner.iterate(self.job.events(after=after, on_connection=on_connection))

    def wait(self, timeout_s: float | None = None) -> Any:
        return self._runner.run(_bounded(self.job.wait(), timeout_s))

    def cancel(self) -> str:
        return self._runner.run(self.job.cancel())

    def status(self) -> dict[str, Any]:
        return self._runner.run(self.job.status())


async def _bounded(awaitable: Awaitable[T], timeout_s: float | None) -> T:
    async with asyncio.timeout(timeout_s):
        return await awaitable
