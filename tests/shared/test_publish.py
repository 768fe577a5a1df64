"""The publish script against a real redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from shared.events import Event, EventType, decode_event, encode_event, make_event
from shared.keys import Keys
from shared.publish import Publisher, PublishResult, _lua_string
from shared.settings import Settings
from shared.state import TERMINAL_STATUSES, JobStatus, snapshot, status_after
from shared.streamid import StreamId
from tests.shard_listener import ShardListener

JOB = "job-1"


def _event(
    event_type: EventType, ts: int, data: dict[str, Any] | None = None, attempt: int = 1
) -> Event:
    return make_event(event_type, JOB, attempt, data or {}, ts=ts)


def _queued(ts: int = 1_000) -> Event:
    return _event(EventType.QUEUED, ts, {"name": "demo", "args": {"n": 3}})


async def _state(redis: Redis, keys: Keys) -> dict[str, Any]:
    fields: dict[bytes, bytes] = await redis.hgetall(keys.state(JOB))  # type: ignore[misc]
    return snapshot(JOB, fields)


async def _stream(redis: Redis, keys: Keys) -> list[tuple[StreamId, Event]]:
    entries = await redis.xrange(keys.events(JOB))
    return [(StreamId.parse(entry_id), decode_event(fields[b"e"])) for entry_id, fields in entries]


async def _next_message(live: ShardListener) -> dict[str, Any]:
    return await live.next()


@pytest.fixture
def keys(settings: Settings) -> Keys:
    return Keys(settings.key_prefix)


@pytest.fixture
def publisher(redis: Redis, settings: Settings) -> Publisher:
    return Publisher(redis, settings)


@pytest.fixture
async def live(redis: Redis, keys: Keys) -> AsyncIterator[ShardListener]:
    """A connection already subscribed (confirmed by the server) to the job's shard channel."""
    async with ShardListener.open(redis, keys.live(JOB)) as listener:
        yield listener


async def test_publish_appends_updates_state_and_announces(
    redis: Redis, keys: Keys, publisher: Publisher, live: ShardListener
) -> None:
    queued = _queued()

    result = await publisher.publish(queued, create=True)

    assert result.accepted
    assert result.status is None
    assert isinstance(result.id, StreamId)
    assert await redis.xrange(keys.events(JOB)) == [
        (str(result.id).encode(), {b"e": encode_event(queued)})
    ]
    message = await _next_message(live)
    assert message["channel"] == keys.live(JOB).encode()
    assert message["data"] == str(result.id).encode() + b" " + encode_event(queued)
    state = await _state(redis, keys)
    assert state["status"] == "queued"
    assert state["last_event_id"] == str(result.id)


async def test_each_event_gets_a_new_larger_id_in_stream_and_state(
    redis: Redis, keys: Keys, publisher: Publisher, live: ShardListener
) -> None:
    events = [_queued(1_000)] + [
        _event(EventType.DATA, 1_001 + n, {"token": f"t{n}\n"}) for n in range(5)
    ]

    ids = [(await publisher.publish(event)).id for event in events]

    assert all(isinstance(i, StreamId) for i in ids)
    assert ids == sorted(ids)  # type: ignore[type-var]
    assert len(set(ids)) == len(ids)
    assert await _stream(redis, keys) == list(zip(ids, events, strict=True))
    announced = [await _next_message(live) for _ in events]
    assert [m["data"] for m in announced] == [
        f"{i} ".encode() + encode_event(e) for i, e in zip(ids, events, strict=True)
    ]
    assert (await _state(redis, keys))["last_event_id"] == str(ids[-1])


async def test_create_refuses_an_existing_job_and_returns_its_status(
    redis: Redis, keys: Keys, publisher: Publisher, live: ShardListener
) -> None:
    first = await publisher.publish(_queued(1_000), create=True)

    again = await publisher.publish(_queued(2_000), create=True)

    assert again == PublishResult(None, "queued")
    assert not again.accepted
    assert [event["ts"] for _, event in await _stream(redis, keys)] == [1_000]
    assert (await _state(redis, keys))["created_at"] == 1_000
    started = await publisher.publish(_event(EventType.STARTED, 3_000, {"attempt": 1}))
    assert started.accepted
    assert await publisher.publish(_queued(4_000), create=True) == PublishResult(None, "running")
    # The refused events were never announced: the channel carries exactly the accepted ones.
    announced = [(await _next_message(live))["data"] for _ in range(2)]
    assert [data.split(b" ", 1)[0] for data in announced] == [
        str(first.id).encode(),
        str(started.id).encode(),
    ]
    await redis.spublish(keys.live(JOB), b"end")
    assert (await _next_message(live))["data"] == b"end"


@pytest.mark.parametrize(
    ("terminal", "data"),
    [
        (EventType.COMPLETED, {"result": {"answer": 42}}),
        (EventType.FAILED, {"type": "ValueError", "message": "bad input"}),
        (EventType.CANCELLED, {"reason": "user"}),
    ],
)
async def test_nothing_is_appended_after_a_terminal_event(
    redis: Redis,
    keys: Keys,
    publisher: Publisher,
    live: ShardListener,
    terminal: EventType,
    data: dict[str, Any],
) -> None:
    await publisher.publish(_queued(1_000), create=True)
    await publisher.publish(_event(EventType.STARTED, 2_000, {"attempt": 1}))
    end = await publisher.publish(_event(terminal, 3_000, data))
    assert end.accepted
    stream_before = await _stream(redis, keys)
    state_before = await _state(redis, keys)
    for _ in range(3):
        await _next_message(live)

    late = [
        await publisher.publish(_event(EventType.PROGRESS, 4_000, {"current": 1})),
        await publisher.publish(_event(EventType.COMPLETED, 4_001, {"result": 1})),
        await publisher.publish(_event(EventType.FAILED, 4_002, {"message": "late"})),
        await publisher.publish(_event(EventType.STARTED, 4_003, {"attempt": 2}, attempt=2)),
        await publisher.publish(_queued(4_004), create=True),
    ]

    assert late == [PublishResult(None, terminal.value)] * 5
    assert await _stream(redis, keys) == stream_before
    assert stream_before[-1] == (end.id, _event(terminal, 3_000, data))
    assert await _state(redis, keys) == state_before
    await redis.spublish(keys.live(JOB), b"end")
    assert (await _next_message(live))["data"] == b"end"


async def test_racing_terminal_events_leave_exactly_one(
    redis: Redis, keys: Keys, publisher: Publisher
) -> None:
    await publisher.publish(_queued(), create=True)

    results = await asyncio.gather(
        publisher.publish(_event(EventType.COMPLETED, 2_000, {"result": None})),
        publisher.publish(_event(EventType.CANCELLED, 2_000, {"reason": "user"})),
    )

    winners = [r for r in results if r.accepted]
    losers = [r for r in results if not r.accepted]
    assert len(winners) == 1
    assert len(losers) == 1
    stream = await _stream(redis, keys)
    assert len(stream) == 2
    assert stream[0][1]["type"] == "queued"
    assert stream[-1][0] == winners[0].id
    assert losers[0].status == stream[-1][1]["type"]
    assert (await _state(redis, keys))["status"] == stream[-1][1]["type"]


async def test_terminal_event_sets_the_retention_ttl_on_both_keys(
    redis: Redis, keys: Keys, settings: Settings
) -> None:
    retention = 100
    publisher = Publisher(redis, settings.replace(retention_s=retention))
    job_keys = [keys.events(JOB), keys.state(JOB)]

    await publisher.publish(_queued(), create=True)
    active = [await redis.ttl(key) for key in job_keys]
    for key in job_keys:
        await redis.expire(key, 5)
    await publisher.publish(_event(EventType.PROGRESS, 2_000, {"current": 1}))
    refreshed = [await redis.ttl(key) for key in job_keys]
    await publisher.publish(_event(EventType.COMPLETED, 3_000, {"result": 1}))
    finished = [await redis.ttl(key) for key in job_keys]

    assert all(ttl > retention for ttl in active), active
    assert all(ttl > retention for ttl in refreshed), refreshed
    assert all(retention - 2 <= ttl <= retention for ttl in finished), finished


async def test_stream_is_trimmed_to_about_maxlen(
    redis: Redis, keys: Keys, settings: Settings
) -> None:
    maxlen = 20
    publisher = Publisher(redis, settings.replace(stream_maxlen=maxlen))
    config = await redis.config_get("stream-node-max-entries")
    node_entries = int(next(iter(config.values())))

    ids = [
        (await publisher.publish(_event(EventType.DATA, 1_000 + n, {"n": n}))).id
        for n in range(600)
    ]

    length = await redis.xlen(keys.events(JOB))
    # MAXLEN ~ drops whole stream nodes only: never below maxlen, less than a node above it.
    assert maxlen <= length < maxlen + node_entries
    stream = await _stream(redis, keys)
    assert [entry_id for entry_id, _ in stream] == ids[-length:]
    assert [event["data"]["n"] for _, event in stream] == list(range(600 - length, 600))


async def test_snapshot_follows_a_job_with_a_retry_to_completion(
    redis: Redis, keys: Keys, publisher: Publisher
) -> None:
    progress = {"current": 5, "total": 10, "percent": 50.0, "stage": "fetch", "message": "half"}

    await publisher.publish(_queued(1_000), create=True)
    await publisher.publish(_event(EventType.STARTED, 2_000, {"attempt": 1, "worker": "w-1"}))
    await publisher.publish(_event(EventType.PROGRESS, 3_000, progress))
    await publisher.publish(_event(EventType.HEARTBEAT, 3_500, {"interval_s": 5}))
    await publisher.publish(_event(EventType.ERROR, 3_600, {"type": "Timeout", "retryable": True}))
    await publisher.publish(
        _event(EventType.RETRYING, 4_000, {"attempt": 2, "delay_s": 0.05, "reason": "Timeout"})
    )
    retrying = await _state(redis, keys)
    await publisher.publish(
        _event(EventType.STARTED, 5_000, {"attempt": 2, "worker": "w-2"}, attempt=2)
    )
    done = await publisher.publish(
        _event(EventType.COMPLETED, 6_000, {"result": {"answer": 42}}, attempt=2)
    )

    assert retrying["status"] == "retrying"
    assert retrying["attempt"] == 1
    assert "finished_at" not in retrying
    assert await _state(redis, keys) == {
        "job_id": JOB,
        "name": "demo",
        "args": {"n": 3},
        "status": "completed",
        "attempt": 2,
        "created_at": 1_000,
        "started_at": 5_000,
        "progress": progress,
        "heartbeat_at": 3_500,
        "result": {"answer": 42},
        "finished_at": 6_000,
        "last_event_id": str(done.id),
        "last_event_type": "completed",
        "updated_at": 6_000,
    }


@pytest.mark.parametrize(
    ("terminal", "data"),
    [
        (EventType.FAILED, {"type": "ValueError", "message": "bad input"}),
        (EventType.CANCELLED, {"reason": "user"}),
    ],
)
async def test_snapshot_of_a_failed_or_cancelled_job_holds_the_error(
    redis: Redis, keys: Keys, publisher: Publisher, terminal: EventType, data: dict[str, Any]
) -> None:
    await publisher.publish(_queued(1_000), create=True)
    await publisher.publish(_event(EventType.STARTED, 2_000, {"attempt": 1, "worker": "w-1"}))
    end = await publisher.publish(_event(terminal, 3_000, data))

    assert await _state(redis, keys) == {
        "job_id": JOB,
        "name": "demo",
        "args": {"n": 3},
        "status": terminal.value,
        "attempt": 1,
        "created_at": 1_000,
        "started_at": 2_000,
        "error": data,
        "finished_at": 3_000,
        "last_event_id": str(end.id),
        "last_event_type": terminal.value,
        "updated_at": 3_000,
    }


# The event that leaves a job in each status.
_SETS_STATUS = {status_after(t): t for t in EventType if status_after(t) is not None}


def test_every_status_is_left_by_some_event() -> None:
    assert set(_SETS_STATUS) == set(JobStatus)


@pytest.mark.parametrize("status", list(JobStatus))
async def test_the_script_ends_a_job_at_exactly_the_terminal_statuses(
    redis: Redis, keys: Keys, publisher: Publisher, status: JobStatus
) -> None:
    """The script's ending statuses are built from Python's: none missing, none extra."""
    await publisher.publish(_queued(1_000), create=True)
    if status is not JobStatus.QUEUED:
        await publisher.publish(_event(_SETS_STATUS[status], 2_000, {}))

    late = await publisher.publish(_event(EventType.PROGRESS, 3_000, {"current": 1}))

    ended = status in TERMINAL_STATUSES
    assert (await _state(redis, keys))["status"] == status
    assert late.accepted is not ended
    assert late.status == (status.value if ended else None)


@pytest.mark.parametrize(
    "text", ["completed", "", "it's", 'say "x"', "back\\slash", "a\nb\r", "]]", "\x00", "é中😀"]
)
async def test_a_value_written_into_the_script_reads_back_exactly(redis: Redis, text: str) -> None:
    literal = _lua_string(text)

    assert await redis.eval(f"return {literal}", 0) == text.encode()  # type: ignore[misc]
    assert "\n" not in literal
