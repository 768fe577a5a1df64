"""A client that watches a job to its end the way a browser's EventSource does — reconnecting
after any failure with the id of the last event it got as `Last-Event-ID` — and the check that
what it got is exactly the job's stream: every stored event once, in order, none invented.

The client sends an API key (`Authorization: Bearer`), so it keeps working once the gateway
checks keys; `tests.processes` starts gateways that accept it.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import httpx
import orjson
from redis.asyncio import Redis

from jobwire.client.sse import ServerSentEvent, SSEParser
from shared.events import TERMINAL_TYPES, ConnectionEventType, EventType
from shared.keys import Keys
from shared.streamid import StreamId
from tests.support import scaled

__all__ = [
    "GATEWAY_EVENT_TYPES",
    "TEST_API_KEY",
    "Verdict",
    "Watch",
    "check_envelope",
    "shared_ssl_context",
    "submit_and_watch",
    "verify",
    "watch_client",
    "watch_job",
]

TEST_API_KEY = "jobwire-fault-tests-key"
# Events the gateway makes up for one connection; they carry no `id:`.
GATEWAY_EVENT_TYPES = frozenset(ConnectionEventType)
_STORED_TYPES = frozenset(EventType)
_FIRST_BACKOFF_S = 0.02
_MAX_BACKOFF_S = 0.5


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """One context for every test client: httpx builds one per client otherwise (about 45 ms
    each), which a test with a hundred clients pays in seconds. Tests speak plain HTTP."""
    return ssl.create_default_context()


def watch_client(base_url: str, *, read_timeout: float = 10.0) -> httpx.AsyncClient:
    """A client whose every request opens a fresh connection (a reconnect is a new TCP
    connection, as after a network loss). Its timeouts are `scaled`."""
    return httpx.AsyncClient(
        base_url=base_url,
        verify=shared_ssl_context(),
        timeout=httpx.Timeout(scaled(10.0), read=scaled(read_timeout)),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=0),
        headers={"Authorization": f"Bearer {TEST_API_KEY}"},
    )


@dataclass
class Watch:
    """What one watcher saw of one job, over all its connections."""

    job_id: str
    events: list[ServerSentEvent] = field(default_factory=list)  # stored: they have an id
    made_up: list[ServerSentEvent] = field(default_factory=list)  # gateway-only, no id
    arrivals: list[float] = field(default_factory=list)  # monotonic time of each stored event
    connections: int = 0
    broken: int = 0  # connections that failed before the terminal event
    ended_at: list[float] = field(default_factory=list)  # monotonic end of each connection
    statuses: Counter[int] = field(default_factory=Counter)
    finished: bool = False
    requests: list[dict[str, str]] = field(default_factory=list)  # headers sent, per connection

    @property
    def last_event_id(self) -> str | None:
        return self.events[-1].id if self.events else None

    @property
    def ids(self) -> list[str]:
        return [event.id for event in self.events if event.id is not None]


class UnexpectedAnswer(AssertionError):
    """The gateway answered a watch with something no retry can fix."""


async def watch_job(
    clients: Sequence[httpx.AsyncClient],
    job_id: str,
    *,
    timeout: float = 30.0,
    last_event_id: str | None = None,
    rotate: bool = True,
    into: Watch | None = None,
) -> Watch:
    """Watches `job_id` until its terminal event (or a 204 on resuming after it).

    Each connection goes to the next of `clients` when `rotate` (so a dead gateway is left for
    another), else always to the first. Transport failures, clean ends before the terminal
    event and 5xx answers are retried with a short backoff, resuming from the last id. Pass
    `into` to follow the watch while it runs. It fails after `timeout` seconds (`scaled`).
    """
    watch = into if into is not None else Watch(job_id)

    async def connect(client: httpx.AsyncClient, resume_from: str | None) -> bool:
        return await _connect_once(
            client, watch, "GET", f"/jobs/{watch.job_id}/events", resume_from
        )

    return await _follow(clients, watch, connect, timeout, last_event_id, rotate)


async def submit_and_watch(
    clients: Sequence[httpx.AsyncClient],
    job: dict[str, object],
    idempotency_key: str,
    *,
    timeout: float = 30.0,
    into: Watch | None = None,
) -> Watch:
    """Submits `job` and watches it in the same request (`POST /jobs` with
    `Accept: text/event-stream`), retried the way `@microsoft/fetch-event-source` retries it:
    the same POST, the same Idempotency-Key, and the id of the last event it got as
    `Last-Event-ID`, each time to the next of `clients`. The watch learns its job id from the
    first event. Retries as `watch_job` does; fails after `timeout` seconds (`scaled`)."""
    watch = into if into is not None else Watch("")
    headers = {"Accept": "text/event-stream", "Idempotency-Key": idempotency_key}

    async def connect(client: httpx.AsyncClient, resume_from: str | None) -> bool:
        return await _connect_once(client, watch, "POST", "/jobs", resume_from, job, headers)

    return await _follow(clients, watch, connect, timeout, None, rotate=True)


async def _follow(
    clients: Sequence[httpx.AsyncClient],
    watch: Watch,
    connect: Callable[[httpx.AsyncClient, str | None], Awaitable[bool]],
    timeout: float,
    resume_from: str | None,
    rotate: bool,
) -> Watch:
    backoff = _FIRST_BACKOFF_S
    turn = 0
    async with asyncio.timeout(scaled(timeout)):
        while True:
            client = clients[turn % len(clients)] if rotate else clients[0]
            turn += 1
            try:
                got_any = await connect(client, resume_from)
            finally:
                watch.ended_at.append(time.monotonic())
            if watch.finished:
                return watch
            resume_from = watch.last_event_id or resume_from
            if got_any:
                backoff = _FIRST_BACKOFF_S
            await asyncio.sleep(backoff)  # EventSource waits `retry:` before reconnecting
            backoff = min(backoff * 2, _MAX_BACKOFF_S)


async def _connect_once(
    client: httpx.AsyncClient,
    watch: Watch,
    method: str,
    path: str,
    last_event_id: str | None,
    body: dict[str, object] | None = None,
    headers: dict[str, str] | None = None,
) -> bool:
    """One connection; True if it delivered at least one stored event."""
    headers = dict(headers or {})
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    watch.connections += 1
    watch.requests.append(headers)
    before = len(watch.events)
    try:
        async with client.stream(method, path, json=body, headers=headers) as reply:
            watch.statuses[reply.status_code] += 1
            if reply.status_code == 204:
                watch.finished = True
                return False
            if reply.status_code >= 500 or reply.status_code == 429:
                watch.broken += 1
                return False
            if reply.status_code != 200:
                body_start = (await reply.aread())[:500]
                raise UnexpectedAnswer(
                    f"{reply.status_code} watching {watch.job_id}: {body_start!r}"
                )
            parser = SSEParser()
            async for chunk in reply.aiter_raw():
                for event in parser.feed(chunk):
                    _record(watch, event)
                    if watch.finished:
                        return True
    except httpx.TransportError:
        pass
    watch.broken += 1
    return len(watch.events) > before


def _record(watch: Watch, event: ServerSentEvent) -> None:
    if event.id is None:
        watch.made_up.append(event)
        return
    if not watch.job_id:
        watch.job_id = orjson.loads(event.data)["job"]
    watch.events.append(event)
    watch.arrivals.append(time.monotonic())
    if event.event in TERMINAL_TYPES:
        watch.finished = True


def check_envelope(event: ServerSentEvent, job_id: str) -> None:
    """A stored event is one envelope of a known type, named by its `event:` field."""
    envelope = orjson.loads(event.data)
    assert isinstance(envelope, dict), event
    assert envelope["v"] == 1, event
    assert envelope["type"] in _STORED_TYPES, event
    assert envelope["type"] == event.event, event
    assert envelope["job"] == job_id, event
    assert event.id is not None
    StreamId.parse(event.id)


@dataclass(frozen=True)
class Verdict:
    """A watcher's events against the stream: how many were checked, lost and duplicated."""

    checked: int
    lost: int
    duplicated: int
    exact: bool


async def verify(watch: Watch, redis: Redis, keys: Keys) -> Verdict:
    """Compares the ids the watcher got with XRANGE of the job's stream."""
    stored = [raw.decode() for raw, _ in await redis.xrange(keys.events(watch.job_id))]
    got = watch.ids
    for event in watch.events:
        check_envelope(event, watch.job_id)
    for event in watch.made_up:
        assert event.event in GATEWAY_EVENT_TYPES, event
    counts = Counter(got)
    return Verdict(
        checked=len(got),
        lost=len(set(stored) - set(got)),
        duplicated=sum(n - 1 for n in counts.values()),
        exact=got == stored,
    )
