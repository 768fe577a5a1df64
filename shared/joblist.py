"""Every API key's jobs, newest first: a sorted set per key (job id -> submit unix ms).

The gateway adds a job to its key's set when it is submitted, just before the job is created,
so no created job is ever missing from it; an entry whose job was never created (the create
was refused, or failed) or whose state has expired is skipped when read, and removed
(`prune`). The set has its own hash tag, the key's (`Keys.jobs_of`), not the job's: on a
Redis Cluster it cannot share a script with the job's keys, so it is a command of its own,
and states are read with a non-transactional pipeline of one command per job.

Nothing stays forever: the set keeps at most `JOBWIRE_JOBS_LISTED_PER_KEY` entries (the
oldest go) and expires with the longest a job's state may live, renewed by each submit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from shared.clients import EventsRedis
from shared.keys import Keys

__all__ = ["Entry", "JobRecord", "add", "page", "prune", "read_jobs"]


class Entry(NamedTuple):
    """One job in a key's set: when it was submitted (unix ms), and its id."""

    submitted_ms: int
    job_id: str


class JobRecord(NamedTuple):
    """A job's raw state hash ({} when it has none) and how long it has left (ms; -1: no
    expiry, -2: gone)."""

    fields: dict[bytes, bytes]
    ttl_ms: int


async def add(
    redis: EventsRedis, keys: Keys, key_id: str, entry: Entry, *, bound: int, ttl_s: int
) -> None:
    """Lists `entry` under `key_id`; a job already listed keeps its place."""
    index = keys.jobs_of(key_id)
    # No MULTI (a cluster client has none): each command stands alone, and the next submit
    # trims and renews the list again should one of them be lost.
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zadd(index, {entry.job_id: entry.submitted_ms}, nx=True)
        pipe.zremrangebyrank(index, 0, -bound - 1)
        pipe.expire(index, ttl_s)
        await pipe.execute()


async def page(
    redis: EventsRedis, keys: Keys, key_id: str, after: Entry | None, count: int
) -> list[Entry]:
    """Up to `count` entries, newest first, after `after` (None: from the newest).

    Entries are ordered by time, then by id, both descending (Redis's reverse order), so a
    position is exact even among jobs submitted in the same millisecond.
    """
    index = keys.jobs_of(key_id)
    top = "+inf" if after is None else after.submitted_ms
    found: list[Entry] = []
    offset = 0
    while len(found) < count:
        raw: list[tuple[bytes, float]] = await redis.zrevrangebyscore(
            index, top, "-inf", start=offset, num=count, withscores=True
        )
        for member, score in raw:
            entry = Entry(int(score), member.decode())
            if after is None or _comes_after(entry, after):
                found.append(entry)
        if len(raw) < count:
            break
        offset += len(raw)
    return found[:count]


def _comes_after(entry: Entry, position: Entry) -> bool:
    if entry.submitted_ms != position.submitted_ms:
        return entry.submitted_ms < position.submitted_ms
    return entry.job_id < position.job_id


async def read_jobs(redis: EventsRedis, keys: Keys, job_ids: Sequence[str]) -> list[JobRecord]:
    """Each job's state hash and its time to live, in one round trip of per-job commands."""
    if not job_ids:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hgetall(keys.state(job_id))
            pipe.pttl(keys.state(job_id))
        replies = await pipe.execute()
    return [JobRecord(replies[i], int(replies[i + 1])) for i in range(0, len(replies), 2)]


async def prune(redis: EventsRedis, keys: Keys, key_id: str, job_ids: Sequence[str]) -> None:
    """Takes `job_ids` off `key_id`'s list."""
    if job_ids:
        await redis.zrem(keys.jobs_of(key_id), *job_ids)
