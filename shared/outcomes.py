"""How many attempts of each job ended, and how, counted in Redis by every worker.

A worker's own `/metrics` listener knows only its own attempts, and `jobwire up` runs none; this
count is what any gateway's `/metrics` shows for the whole deployment (`jobwire_jobs_ended_total`).
One hash of a few fields per job name: one `HINCRBY` per attempt, one `HGETALL` per scrape.
"""

from __future__ import annotations

from shared.clients import EventsRedis
from shared.keys import Keys

__all__ = ["count_outcome", "load_outcomes"]


async def count_outcome(redis: EventsRedis, keys: Keys, job_name: str, outcome: str) -> None:
    await redis.hincrby(keys.outcomes(), f"{outcome}:{job_name}", 1)  # type: ignore[misc]


async def load_outcomes(redis: EventsRedis, keys: Keys) -> dict[tuple[str, str], int]:
    """(job name, outcome) -> attempts ended so."""
    raw: dict[bytes, bytes] = await redis.hgetall(keys.outcomes())  # type: ignore[misc]
    counts: dict[tuple[str, str], int] = {}
    for field, value in raw.items():
        outcome, _, job_name = field.decode().partition(":")
        counts[job_name, outcome] = int(value)
    return counts
