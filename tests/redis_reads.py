"""Counting what Redis is asked about jobs: how a test shows a request was refused before it
read anything."""

from __future__ import annotations

from redis.asyncio import Redis

__all__ = ["state_reads"]

# What the gateway sends to learn whether jobs exist and where a stream stands; the hub's own
# reads (XRANGE backfill and catch-up) are left out, so a stream held open adds nothing.
_STATE_READS = ("hgetall", "hget", "hmget", "xinfo|stream")


async def state_reads(redis: Redis) -> int:
    """Calls so far, by every client of the redis-server, of the commands that read a job's
    state."""
    stats = await redis.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in _STATE_READS)
