"""A subscriber's cursor and frames (`gateway.engine.subscriber`): a replay of several events of
one job (`advance_through`) frames each exactly as advancing past them one by one does."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from gateway.engine.connection import Connection
from gateway.engine.entry import Entry
from gateway.engine.framing import SSE, WEBSOCKET, Framing
from gateway.engine.resume import Resume
from gateway.engine.subscriber import Subscriber
from shared.streamid import StreamId

JOBS = ["first", "second", "third"]


def _entries(job_id: str, count: int) -> list[Entry]:
    return [
        Entry.of(f"{1_000 + n}-{n % 2}", orjson.dumps({"type": "data", "job": job_id, "ts": n}))
        for n in range(count)
    ]


def _subscriber(composite: bool, framing: Framing) -> Subscriber:
    # One job resumes from a position, one from none yet, one from the start of its stream.
    resumes = [
        Resume("first", StreamId(900, 0), None, finished=False),
        Resume("second", None, None, finished=False),
        Resume("third", StreamId(950, 3), None, finished=False),
    ]
    connection: Connection = None  # type: ignore[assignment]  # nothing is written here
    return Subscriber(connection, resumes, composite, framing, asyncio.get_running_loop())


@pytest.mark.parametrize("framing", [SSE, WEBSOCKET], ids=["sse", "websocket"])
@pytest.mark.parametrize("composite", [True, False], ids=["multi-job", "single-job"])
@pytest.mark.parametrize("job_id", JOBS)
async def test_advancing_through_a_replay_frames_it_as_advancing_event_by_event(
    job_id: str, composite: bool, framing: Framing
) -> None:
    entries = _entries(job_id, 5)
    one_by_one = _subscriber(composite, framing)
    replayed = _subscriber(composite, framing)

    expected = [one_by_one.advance(job_id, entry) for entry in entries]
    frames = replayed.advance_through(job_id, entries)

    assert frames == expected
    assert replayed.cursor == one_by_one.cursor
    assert replayed.marks == one_by_one.marks
    # The next event of another job is framed with this job's new position.
    other_job = "first" if job_id == "third" else "third"
    [other] = _entries(other_job, 1)
    assert replayed.advance(other_job, other) == one_by_one.advance(other_job, other)
