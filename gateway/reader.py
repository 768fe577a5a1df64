"""Reads the streams of one subscriber's jobs from Redis and frames them as SSE bytes.

Each subscriber reads on its own here: one blocking XREAD over its jobs' stream keys (one key
for `/jobs/{id}/events`, a few for `/events?job=…`), bounded by the ping interval so an idle
stream still gets a keepalive comment.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import orjson
from redis.typing import KeyT, StreamIdT

from gateway.position import Resume, format_cursor
from gateway.services import Services
from shared import sse
from shared.events import TERMINAL_TYPES
from shared.streamid import StreamId

__all__ = ["BATCH", "read_frames"]

# Entries fetched per XREAD: a reconnecting client far behind catches up in few round trips,
# and all frames of one batch go out in a single write.
BATCH = 200


async def read_frames(
    svc: Services, resumes: list[Resume], *, composite: bool = False
) -> AsyncGenerator[bytes, None]:
    """`retry:`, any `reset` events, then every event after each position until each job's
    terminal event. With `composite`, an event's `id:` is the cursor of every job."""
    head = sse.retry(svc.settings.sse_retry_ms)
    for resume in resumes:
        if resume.reset is not None:
            head += sse.frame(orjson.dumps(resume.reset), event="reset")
    yield head
    cursor = {r.job_id: r.after for r in resumes}
    open_jobs = {r.job_id for r in resumes if not r.finished}
    block_ms = int(svc.settings.ping_s * 1000)
    while open_jobs:
        job_of = {svc.keys.events(job): job for job in open_jobs}
        streams: dict[KeyT, StreamIdT] = {
            key: str(cursor[job] or "0-0") for key, job in job_of.items()
        }
        reply = await svc.redis.xread(streams, count=BATCH, block=block_ms)
        if not reply:
            open_jobs -= await _expired(svc, open_jobs)
            if open_jobs:
                yield sse.comment("ping")
            continue
        parts: list[bytes] = []
        for raw_key, entries in reply:
            job_id = job_of[raw_key.decode()]
            for raw_id, fields in entries:
                payload = fields[b"e"]
                event_type = orjson.loads(payload)["type"]
                cursor[job_id] = StreamId.parse(raw_id)
                frame_id = _cursor_text(cursor) if composite else raw_id.decode()
                parts.append(sse.frame(payload, event=event_type, id=frame_id))
                if event_type in TERMINAL_TYPES:
                    open_jobs.discard(job_id)
                    break
        yield b"".join(parts)


def _cursor_text(cursor: dict[str, StreamId | None]) -> str:
    return format_cursor({job: pos for job, pos in cursor.items() if pos is not None})


async def _expired(svc: Services, job_ids: set[str]) -> set[str]:
    """Jobs whose state expired while idle: nothing more will come for them."""
    async with svc.redis.pipeline(transaction=False) as pipe:
        ordered = sorted(job_ids)
        for job_id in ordered:
            pipe.exists(svc.keys.state(job_id))
        found = await pipe.execute()
    return {job_id for job_id, exists in zip(ordered, found, strict=True) if not exists}
