"""A submitted job: its events, its outcome, cancelling it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from jobwire.client.errors import GatewayError, JobCancelled, JobFailed
from jobwire.client.events import JobEvent
from jobwire.client.position import JobPosition
from jobwire.client.stream import ConnectionListener, StreamOptions, StreamRequest, stream_events
from shared.events import TERMINAL_TYPES, EventType

__all__ = ["Job", "JobClient"]


class JobClient(Protocol):
    """What a job needs of the `Client` that made it (described here, so that this module does
    not import client.py, which imports it)."""

    http: httpx.AsyncClient
    api_key: str | None
    stream_options: StreamOptions

    async def request(
        self,
        method: str,
        path: str,
        *,
        expected: tuple[int, ...],
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any: ...


class Job:
    """Made by `Client.submit` or `Client.job`; holds no connection of its own."""

    def __init__(
        self,
        client: JobClient,
        job_id: str,
        *,
        watch_token: str | None = None,
        urls: Mapping[str, str] | None = None,
    ) -> None:
        self._client = client
        self.job_id = job_id
        self.watch_token = watch_token
        self.urls: dict[str, str] = dict(urls or {})
        self.last_event_id: str | None = None
        self.terminal_event: JobEvent | None = None

    def __repr__(self) -> str:
        return f"Job({self.job_id!r})"

    @property
    def _path(self) -> str:
        return f"/jobs/{quote(self.job_id, safe='')}"

    async def events(
        self, *, after: str | None = None, on_connection: ConnectionListener | None = None
    ) -> AsyncIterator[JobEvent]:
        """Every event from the job's first (or after the stream id `after`) to its terminal
        event, each exactly once, however often the connection is lost on the way.

        A `reset` event (no id) means the gateway could not vouch for the position: its
        `data["state"]` is the job's snapshot, and the events that follow are what the stream
        still holds.
        """
        stream = stream_events(
            self._client.http,
            StreamRequest(f"{self._path}/events", what=f"job {self.job_id}"),
            JobPosition(self.job_id, after),
            # The key never expires mid-watch the way a watch token may; the token is for
            # watchers that hold no key.
            credential=self._client.api_key or self.watch_token,
            options=self._client.stream_options,
            on_connection=on_connection,
        )
        async with aclosing(stream) as events:
            async for event in events:
                self.record(event)
                yield event

    def record(self, event: JobEvent) -> None:
        """Notes an event of this job delivered (here, or on a stream of several jobs), so
        that `wait()` continues after it."""
        if event.id is not None:
            self.last_event_id = event.id
        if event.is_terminal:
            self.terminal_event = event

    async def wait(self) -> Any:
        """The job's result; raises `JobFailed` or `JobCancelled` if it did not complete.

        Bound it with `asyncio.timeout(...)`: the job keeps running if the wait is abandoned.
        """
        if self.terminal_event is None:
            async for _ in self.events(after=self.last_event_id):
                pass
        if self.terminal_event is None:
            # The gateway answered 204: the terminal event was already delivered before.
            self.terminal_event = await self._terminal_from_state()
        return outcome(self.terminal_event)

    async def status(self) -> dict[str, Any]:
        """The job's state snapshot (`GET /jobs/{id}`)."""
        state: dict[str, Any] = await self._client.request("GET", self._path, expected=(200,))
        return state

    async def cancel(self) -> str:
        """Asks for the job to be cancelled: `cancelled` (it had not started) or `cancelling`
        (its worker stops it shortly; its stream ends with `cancelled`). A finished job raises
        `RequestRejected` (409, `job_finished`)."""
        answer = await self._client.request("DELETE", self._path, expected=(202,))
        return str(answer["status"])

    async def _terminal_from_state(self) -> JobEvent:
        state = await self.status()
        # An ended job's status is named after the terminal event that ended it.
        event_type = state.get("status", "")
        if event_type not in TERMINAL_TYPES:
            raise GatewayError(204, f"the stream of job {self.job_id} ended while {event_type}")
        if event_type == EventType.COMPLETED:
            data: dict[str, Any] = {"result": state.get("result")}
        else:
            error = state.get("error")
            data = error if isinstance(error, dict) else {}
        return JobEvent(
            type=event_type,
            id=state.get("last_event_id"),
            job=self.job_id,
            attempt=int(state.get("attempt", 0)),
            data=data,
            ts=state.get("finished_at"),
        )


def outcome(terminal: JobEvent) -> Any:
    """The result a `completed` event carries; raises for `failed` and `cancelled`."""
    if terminal.type == EventType.FAILED:
        raise JobFailed(terminal)
    if terminal.type == EventType.CANCELLED:
        raise JobCancelled(terminal)
    return terminal.data.get("result")
