"""Reads one job's stream from Redis for one subscriber and frames it as SSE bytes.

Each subscriber reads on its own here: a blocking XREAD on the job's one stream key, bounded by
the ping interval so an idle stream still gets a keepalive comment.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import orjson

from gateway.services import Services
from shared import sse
from shared.events import TERMINAL_TYPES
from shared.streamid import StreamId

__all__ = ["BATCH", "read_frames"]

# Entries fetched per XREAD: a reconnecting client far behind catches up in few round trips,
# and all frames of one batch go out in a single write.
BATCH = 200


async def read_frames(
    svc: Services, job_id: str, after: StreamId | None, reset: dict[str, Any] | None
) -> AsyncGenerator[bytes, None]:
    """`retry:`, the `reset` event if any, then every event after `after` until the terminal one."""
    head = sse.retry(svc.settings.sse_retry_ms)
    if reset is not None:
        head += sse.frame(orjson.dumps(reset), event="reset")
    yield head
    stream_key = svc.keys.events(job_id)
    cursor = str(after) if after is not None else "0-0"
    block_ms = int(svc.settings.ping_s * 1000)
    while True:
        reply = await svc.redis.xread({stream_key: cursor}, count=BATCH, block=block_ms)
        if not reply:
            if not await svc.redis.exists(svc.keys.state(job_id)):
                return  # expired while idle: nothing more will come
            yield sse.comment("ping")
            continue
        frames, cursor, finished = _frame_entries(reply[0][1])
        yield frames
        if finished:
            return


def _frame_entries(entries: list[tuple[bytes, dict[bytes, bytes]]]) -> tuple[bytes, str, bool]:
    parts: list[bytes] = []
    cursor = ""
    for raw_id, fields in entries:
        payload = fields[b"e"]
        event_type = orjson.loads(payload)["type"]
        cursor = raw_id.decode()
        parts.append(sse.frame(payload, event=event_type, id=cursor))
        if event_type in TERMINAL_TYPES:
            return b"".join(parts), cursor, True
    return b"".join(parts), cursor, False
