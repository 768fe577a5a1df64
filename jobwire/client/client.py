"""`Client`: submit jobs to a Jobwire gateway and follow them."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncGenerator, Iterable, Mapping
from contextlib import aclosing
from types import TracebackType
from typing import Any

import httpx

from jobwire.client.backoff import Backoff
from jobwire.client.errors import GatewayError, GatewayUnreachable
from jobwire.client.events import JobEvent
from jobwire.client.http import authorization, check_answer, describe
from jobwire.client.job import Job
from jobwire.client.position import Cursor, JobPosition, Position
from jobwire.client.stream import (
    DEFAULT_READ_TIMEOUT_S,
    ConnectionListener,
    StreamOptions,
    StreamRequest,
    Transport,
    stream_events,
)
from jobwire.client.target import DEFAULT_URL, Target

__all__ = ["DEFAULT_URL", "Client"]

DEFAULT_BACKOFF = Backoff()


class Client:
    """An async client of one gateway. Use it as `async with Client(url) as client:` or call
    `aclose()` when done.

    Like the `jobwire` command, it takes the gateway from `JOBWIRE_URL` and the key from
    `JOBWIRE_API_KEY` when they are not given (else `DEFAULT_URL`, and no key); a URL that is
    not http(s) raises `InvalidGatewayURL` here.

    `api_key` is sent as `Authorization: Bearer` on every request. Without one, a job's
    `watch_token` (given by the gateway at submit, or to `job()`) is sent to watch that job.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout_s: float = 10.0,
        backoff: Backoff = DEFAULT_BACKOFF,
        read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
        give_up_after_s: float | None = None,
        transport: Transport = "sse",
    ) -> None:
        target = Target.resolve(base_url, api_key, os.environ)
        self.base_url = target.url
        self.api_key = target.api_key
        self.stream_options = StreamOptions(
            backoff=backoff,
            read_timeout_s=read_timeout_s,
            give_up_after_s=give_up_after_s,
            transport=transport,
        )
        self.http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout_s,
            headers={"User-Agent": "jobwire-client"},
        )

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def submit(self, name: str, /, **args: Any) -> Job:
        """Submits the job `name` with keyword arguments `args`."""
        return await self.submit_job(name, args)

    async def submit_job(
        self,
        name: str,
        args: Mapping[str, Any] | None = None,
        *,
        job_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """`submit` with every option: your own `job_id`, or an `idempotency_key` that makes a
        retried submit return the same job instead of starting another."""
        body: dict[str, Any] = {"name": name, "args": dict(args or {})}
        if job_id is not None:
            body["job_id"] = job_id
        headers = {} if idempotency_key is None else {"Idempotency-Key": idempotency_key}
        answer = await self.request(
            "POST", "/jobs", json=body, headers=headers, expected=(200, 202)
        )
        if not isinstance(answer, dict) or not isinstance(answer.get("job_id"), str):
            raise GatewayError(200, "the submit answer names no job_id")
        urls = {
            key.removesuffix("_url"): value
            for key, value in answer.items()
            if key.endswith("_url") and isinstance(value, str)
        }
        return Job(self, answer["job_id"], watch_token=answer.get("watch_token"), urls=urls)

    def job(self, job_id: str, watch_token: str | None = None) -> Job:
        """A job submitted before (by anyone): watch it, wait for it, cancel it."""
        return Job(self, job_id, watch_token=watch_token)

    def run(self, name: str, /, **args: Any) -> AsyncGenerator[JobEvent, None]:
        """Submits the job `name` with keyword arguments `args` and yields its events from
        the same request (`POST /jobs` with `Accept: text/event-stream`), to its terminal
        event. Each event names its job (`event.job`)."""
        return self.run_job(name, args)

    async def run_job(
        self,
        name: str,
        args: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        on_connection: ConnectionListener | None = None,
    ) -> AsyncGenerator[JobEvent, None]:
        """`run` with every option. A lost connection is retried as `fetch-event-source`
        retries it: the same POST with the same `Idempotency-Key` (one is made up when none
        is given), so the job is submitted once, and the last event's id as `Last-Event-ID`,
        so it continues after it."""
        request = StreamRequest(
            "/jobs",
            what=f"a run of {name}",
            method="POST",
            json={"name": name, "args": dict(args or {})},
            headers={"Idempotency-Key": idempotency_key or uuid.uuid4().hex},
        )
        stream = self._stream(request, JobPosition(""), self.api_key, on_connection)
        async with aclosing(stream) as events:
            async for event in events:
                yield event

    async def follow(
        self, jobs: Iterable[Job | str], *, on_connection: ConnectionListener | None = None
    ) -> AsyncGenerator[JobEvent, None]:
        """The events of several jobs (at most 50) on one connection (`GET /events`), each
        job's once and in order however often the connection is lost, until every job ended.

        A `Job` continues after the last event it delivered and records what comes, so its
        `wait()` returns at once afterwards; a job id starts from the job's first event.
        Without an API key, the jobs' watch tokens are sent."""
        watched = {job.job_id: job for job in map(self._as_job, jobs)}
        pending = [job for job in watched.values() if job.terminal_event is None]
        if not pending:
            return
        params = [("job", job.job_id) for job in pending]
        if not self.api_key:
            params += [("token", job.watch_token) for job in pending if job.watch_token]
        request = StreamRequest(
            "/events",
            what="jobs " + ", ".join(job.job_id for job in pending),
            params=tuple(params),
        )
        cursor = Cursor({job.job_id: job.last_event_id for job in pending})
        stream = self._stream(request, cursor, self.api_key, on_connection)
        async with aclosing(stream) as events:
            async for event in events:
                watched[event.job].record(event)
                yield event

    def _as_job(self, job: Job | str) -> Job:
        return job if isinstance(job, Job) else self.job(job)

    def _stream(
        self,
        request: StreamRequest,
        position: Position,
        credential: str | None,
        on_connection: ConnectionListener | None,
    ) -> AsyncGenerator[JobEvent, None]:
        return stream_events(
            self.http,
            request,
            position,
            credential=credential,
            options=self.stream_options,
            on_connection=on_connection,
        )

    async def request(
        self,
        method: str,
        path: str,
        *,
        expected: tuple[int, ...],
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """One REST call; returns the JSON body of an `expected` answer, raises otherwise."""
        try:
            response = await self.http.request(
                method,
                path,
                json=json,
                headers={**authorization(self.api_key), **(headers or {})},
            )
        except httpx.UnsupportedProtocol:
            raise
        except httpx.TransportError as exc:
            raise GatewayUnreachable(f"{self.base_url}: {describe(exc)}") from exc
        return check_answer(response, expected)
