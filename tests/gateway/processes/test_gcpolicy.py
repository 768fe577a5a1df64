"""The gateway's GC policy: what it freezes, what a full collection still reclaims, and the
property that makes freezing safe — a stream, however it ends, leaves no reference cycle."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator
from types import CoroutineType, FrameType
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis

from gateway.processes.gcpolicy import GcPolicy
from shared.events import EventType, make_event
from shared.publish import Publisher
from shared.settings import Settings
from shared.streamid import StreamId
from tests.conftest import Gateway, StartGateway
from tests.support import close_with_reset, open_unread_stream, raw_get, wait_until

pytestmark = pytest.mark.timeout(60)

# Code of these packages runs for every stream; none of their objects may end in a cycle.
_STREAM_PACKAGES = ("gateway", "uvicorn", "starlette", "uvloop", "shared")


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


@pytest.fixture
def policy() -> Iterator[GcPolicy]:
    policy = GcPolicy(full_collect_s=3600, freeze_every_s=0.05)
    yield policy
    # stop() restores the host's GC; a test that failed before stop() must not leave it off.
    gc.enable()
    gc.unfreeze()


async def test_the_policy_freezes_what_survives_and_restores_the_host_gc(
    policy: GcPolicy,
) -> None:
    policy.start()
    assert not gc.isenabled(), "no automatic collection walks the held streams"
    frozen_at_start = gc.get_freeze_count()
    assert frozen_at_start > 0
    count = 10_000
    held = [[n] for n in range(count)]  # stands for the objects a crowd of streams holds
    await wait_until(lambda: gc.get_freeze_count() >= frozen_at_start + count, timeout=5)
    assert gc.get_count()[0] < count

    await policy.stop()
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0
    assert len(held) == count


async def test_a_full_collection_reclaims_a_cycle_among_frozen_objects(policy: GcPolicy) -> None:
    policy.start()
    first, second = _Node(), _Node()
    first.other, second.other = second, first
    gone = weakref.ref(first)
    policy.freeze()
    del first, second
    policy.freeze()
    assert gone() is not None, "a frozen cycle waits for the full collection"

    assert GcPolicy.collect_everything() >= 2
    assert gone() is None
    assert gc.get_freeze_count() > 0, "what is still alive is frozen again"
    await policy.stop()


async def test_the_full_collection_runs_on_its_schedule(policy: GcPolicy) -> None:
    scheduled = GcPolicy(full_collect_s=0.1, freeze_every_s=0.05)
    scheduled.start()
    try:
        first, second = _Node(), _Node()
        first.other, second.other = second, first
        gone = weakref.ref(first)
        scheduled.freeze()
        del first, second
        await wait_until(lambda: gone() is None, timeout=5)
    finally:
        await scheduled.stop()


async def test_streams_leave_no_reference_cycle_however_they_end(
    start_gateway: StartGateway, redis: Redis, settings: Settings
) -> None:
    gateway = await start_gateway(settings.replace(hub_linger_s=0.05, max_buffer_bytes=16_384))
    port = urlsplit(gateway.url).port
    assert port is not None
    publisher = Publisher(redis, settings)
    job_id = "cycle-free"
    queued = make_event(EventType.QUEUED, job_id, 0, {"name": "bench", "args": {}})
    await publisher.publish(queued, create=True)
    first_id = (await publisher.publish(make_event(EventType.STARTED, job_id, 1, {}))).id
    # Warm every code path once, so lazily built module state is not counted as garbage.
    await _one_of_each_ending(gateway, port, publisher, f"{job_id}-warm", redis, settings)
    gc.collect()
    # What an earlier test left may only now become unreachable (on a loaded machine its last
    # callbacks run late): only what is made from here on counts.
    existing = {id(item) for item in gc.get_objects()}

    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        await _one_of_each_ending(gateway, port, publisher, job_id, redis, settings, first_id)
        gc.collect()
        garbage = [
            _describe(item)
            for item in gc.garbage
            if id(item) not in existing and _is_stream_object(item)
        ]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()

    assert garbage == []


async def _one_of_each_ending(
    gateway: Gateway,
    port: int,
    publisher: Publisher,
    job_id: str,
    redis: Redis,
    settings: Settings,
    first_id: StreamId | None = None,
) -> None:
    """Streams that end by the job finishing, the client leaving, a reset, being cut off as
    too slow, a refused request, and a resume served from the hub's ring."""
    if first_id is None:
        queued = make_event(EventType.QUEUED, job_id, 0, {"name": "bench", "args": {}})
        await publisher.publish(queued, create=True)
        first_id = (await publisher.publish(make_event(EventType.STARTED, job_id, 1, {}))).id
    path = f"/jobs/{job_id}/events"
    finishing = [asyncio.create_task(raw_get(port, path)) for _ in range(5)]
    resuming = [
        asyncio.create_task(raw_get(port, path, {"Last-Event-ID": str(first_id)})) for _ in range(5)
    ]
    leaving = [asyncio.create_task(raw_get(port, path)) for _ in range(5)]
    reset = [await open_unread_stream(port, path, receive_buffer=None) for _ in range(5)]
    stalled = [await open_unread_stream(port, path) for _ in range(5)]
    await wait_until(lambda: gateway.hub.counts()["subscribers"] == 25)

    for task in leaving:
        task.cancel()
    for sock in reset:
        close_with_reset(sock)
    for n in range(100):  # more than the kernel's buffers take (4 MiB): never-readers are cut
        data = {"current": n, "pad": "x" * 65_536}
        await publisher.publish(make_event(EventType.PROGRESS, job_id, 1, data))
    await wait_until(lambda: gateway.hub.counts()["subscribers"] == 10, timeout=20)
    await publisher.publish(make_event(EventType.COMPLETED, job_id, 1, {"result": None}))
    await asyncio.gather(*finishing, *resuming)
    await asyncio.gather(*leaving, return_exceptions=True)
    for sock in stalled:
        sock.close()
    assert (await raw_get(port, "/jobs/no-such-job/events")).status == 404
    assert (await raw_get(port, path, {"Last-Event-ID": "garbage"})).status == 400
    await wait_until(
        lambda: (
            gateway.hub.counts()
            == {"subscribers": 0, "feeds": 0, "ring_entries": 0, "ring_bytes": 0}
        )
    )


def _is_stream_object(item: object) -> bool:
    if isinstance(item, CoroutineType):
        return _is_stream_code(item.cr_code.co_filename)
    if isinstance(item, FrameType):
        return _is_stream_code(item.f_code.co_filename)
    module = type(item).__module__ or ""
    return module.split(".")[0] in _STREAM_PACKAGES


def _is_stream_code(filename: str) -> bool:
    return any(f"/{package}/" in filename for package in _STREAM_PACKAGES)


def _describe(item: object) -> str:
    if isinstance(item, CoroutineType):
        return f"coroutine {item.cr_code.co_qualname} ({item.cr_code.co_filename})"
    if isinstance(item, FrameType):
        return f"frame {item.f_code.co_qualname} ({item.f_code.co_filename})"
    return f"{type(item).__module__}.{type(item).__qualname__}"
