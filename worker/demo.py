"""Demo jobs: one for each kind of event a job can produce."""

from __future__ import annotations

import asyncio
import re
from typing import Annotated

from pydantic import Field

from worker.progress import Progress
from worker.registry import JobRegistry

__all__ = ["TransientError", "jobs"]

jobs = JobRegistry()

_TOKEN = re.compile(r"\S+\s*|\s+")
_SENTENCE = (
    "Jobwire streams every token as it is produced, and a client that drops off resumes "
    "exactly where it left off."
)


class TransientError(Exception):
    """A failure worth another attempt."""


# The bounds the gateway checks each submission against (from the annotations).
Seconds = Annotated[float, Field(ge=0, le=86_400)]
Count = Annotated[int, Field(ge=0, le=1_000_000)]


@jobs.job("demo.countdown")
async def countdown(
    progress: Progress, seconds: Seconds = 10, steps: Annotated[int, Field(ge=1, le=100_000)] = 10
) -> dict[str, int]:
    """Counts from 0 to `steps` over `seconds`, reporting progress at every step."""
    await progress.update(current=0, total=steps)
    for step in range(1, steps + 1):
        await asyncio.sleep(seconds / steps)
        await progress.update(current=step)
    return {"counted": steps}


@jobs.job("demo.tokens")
async def tokens(
    progress: Progress, text: str = _SENTENCE, delay_ms: Annotated[int, Field(ge=0, le=10_000)] = 50
) -> dict[str, str]:
    """Streams `text` one word at a time, like a language model writing an answer."""
    for index, token in enumerate(_TOKEN.findall(text)):
        await asyncio.sleep(delay_ms / 1000)
        await progress.data(token=token, index=index)
    return {"text": text}


@jobs.job("demo.flaky", max_tries=10, retry_on=(TransientError,))
async def flaky(progress: Progress, fail_times: Annotated[int, Field(ge=0)] = 2) -> dict[str, int]:
    """Fails with a retryable error on its first `fail_times` attempts, then succeeds."""
    if progress.attempt <= fail_times:
        raise TransientError(f"attempt {progress.attempt} of {fail_times} planned failures")
    return {"attempts": progress.attempt}


@jobs.job("demo.fail")
async def fail(progress: Progress, message: str = "this job always fails") -> None:
    """Fails at once with `message`."""
    raise RuntimeError(message)


@jobs.job("demo.quiet")
async def quiet(progress: Progress, seconds: Seconds) -> dict[str, float]:
    """Works for `seconds` without reporting anything: only heartbeats show it is alive."""
    await asyncio.sleep(seconds)
    return {"slept_s": seconds}


@jobs.job("demo.burst")
async def burst(progress: Progress, count: Count = 10_000) -> dict[str, int]:
    """Reports `count` progress steps as fast as it can; coalescing keeps the stream small."""
    await progress.update(current=0, total=count)
    for _ in range(count):
        await progress.advance(1)
    return {"count": count}
