"""A job in two stages: download a text file over HTTP, then count its lines and words.

What a job of your own looks like: a `JobRegistry`, a typed async function, progress in bytes
while it downloads and in lines while it counts, partial results as `data` events as they
grow, and a summary as its result. Run it from the repository's root:

    jobwire up examples.wordcount.jobs:jobs
    jobwire submit wordcount.count url=https://www.gutenberg.org/cache/epub/84/pg84.txt --watch
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Annotated, Any

import httpx
from pydantic import Field

from jobwire import JobRegistry, Progress

__all__ = ["MAX_BYTES", "TooLarge", "jobs"]

jobs = JobRegistry()

MAX_BYTES = 50 * 1024 * 1024  # a larger file is refused rather than held in memory
LINES_PER_UPDATE = 2_000  # partial results every this many lines
_WORD = re.compile(r"\w+(?:'\w+)*")


class TooLarge(ValueError):
    """The file is larger than MAX_BYTES."""


# A dropped connection is worth another attempt; a 404 is not (it fails the job at once).
@jobs.job("wordcount.count", max_tries=3, retry_on=(httpx.TransportError,))
async def count_words(
    progress: Progress, url: str, top: Annotated[int, Field(ge=1, le=100)] = 10
) -> dict[str, Any]:
    """Counts the lines and words of the text at `url`; `top`: how many of the most frequent
    words to report (the gateway refuses a submit with `top` outside 1..100)."""
    body, charset = await download(progress, url)
    counts, lines = await count(progress, body.decode(charset, errors="replace"), top)
    return {
        "url": url,
        "bytes": len(body),
        "lines": lines,
        "words": counts.total(),
        "distinct": len(counts),
        "top": counts.most_common(top),
    }


async def download(progress: Progress, url: str) -> tuple[bytes, str]:
    """The body at `url` and its charset, with progress in bytes received."""
    async with (
        httpx.AsyncClient(follow_redirects=True, timeout=30) as client,
        client.stream("GET", url) as response,
    ):
        response.raise_for_status()
        size = int(response.headers.get("content-length", 0)) or None
        if size is not None and size > MAX_BYTES:
            raise TooLarge(f"{url} is {size} bytes, more than {MAX_BYTES}")
        await progress.update(current=0, total=size, stage="download", message=url)
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > MAX_BYTES:
                raise TooLarge(f"{url} is more than {MAX_BYTES} bytes")
            # Bytes on the wire, so it meets Content-Length even when the body is compressed.
            await progress.update(current=response.num_bytes_downloaded)
        return bytes(body), response.charset_encoding or "utf-8"


async def count(progress: Progress, text: str, top: int) -> tuple[Counter[str], int]:
    """Word counts of `text` and its number of lines, with progress in lines and the counts
    so far as `data` events."""
    lines = text.splitlines()
    counts: Counter[str] = Counter()
    await progress.update(current=0, total=len(lines), stage="count", message="counting words")
    for start in range(0, len(lines), LINES_PER_UPDATE):
        for line in lines[start : start + LINES_PER_UPDATE]:
            counts.update(_WORD.findall(line.lower()))
        done = min(start + LINES_PER_UPDATE, len(lines))
        await progress.update(current=done)
        await progress.data(lines=done, words=counts.total(), top=counts.most_common(top))
    return counts, len(lines)
