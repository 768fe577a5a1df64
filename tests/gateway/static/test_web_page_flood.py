"""The web page under a token flood, in a real headless Chromium against a real gateway, worker
and Redis: one job writes 5,000 `data` events a second for 10 s while the page watches it and
11 other jobs. The page must stay responsive (no long task over 100 ms), show the exact text,
and keep its memory bounded (only the last VISIBLE_OUTPUT_CHARS of an output on screen).

The figures measured are printed (run with `-s` to see them) and recorded as properties of the
test in a JUnit report; bench/README.md lists those of a run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Annotated, Any

import orjson
import pytest
from playwright.async_api import BrowserContext
from pydantic import Field
from redis.asyncio import Redis

from shared.events import EventType, decode_event, encode_event, make_event
from shared.keys import Keys
from shared.publish import PUBLISH_SCRIPT
from shared.settings import Settings
from shared.state import state_changes
from tests.conftest import StartGateway
from tests.support import scaled
from tests.web_support import JobPage, wait_for_catalog
from worker.main import create_worker
from worker.progress import Progress
from worker.registry import JobRegistry

pytestmark = pytest.mark.timeout(120)

FLOOD_RATE = 5_000
FLOOD_SECONDS = 10.0
OTHER_JOBS = 11
OTHER_RATE = 20
LONG_TASK_LIMIT_MS = 100
_TICK_S = 0.01
# view.js's bounds: the characters an output box holds at most before "Show all", and the
# text nodes it holds before they are merged.
VISIBLE_OUTPUT_CHARS = 16 * 1024
MAX_OUTPUT_NODES = 64


def flood_registry(settings: Settings, redis: Redis) -> JobRegistry:
    """A job that writes `rate` data events a second for `seconds`, each token its own index.

    One round trip per event (what `progress.data` costs) would take all of a core at this
    rate, in the process that also runs the gateway. So each tick's due events go in one
    pipeline, through the same publish script and onto the same stream and live channel.
    """
    jobs = JobRegistry()
    keys = Keys(settings.key_prefix)
    script = redis.register_script(PUBLISH_SCRIPT)

    async def write(progress: Progress, first: int, end: int) -> None:
        job_id = progress.job_id
        async with redis.pipeline(transaction=False) as pipe:
            for index in range(first, end):
                event = make_event(EventType.DATA, job_id, progress.attempt, {"token": f"{index} "})
                # The arguments Publisher.publish gives the script for an event it appends.
                args: list[str | bytes | int] = [
                    "append", settings.stream_maxlen, encode_event(event), settings.retention_s,
                    keys.live(job_id), event["type"], event["ts"],
                ]  # fmt: skip
                for field, value in state_changes(event).items():
                    args += [field, value]
                stream = [keys.events(job_id), keys.state(job_id)]
                await script(keys=stream, args=args, client=pipe)
            replies = await pipe.execute()
        assert all(reply[0] == 1 for reply in replies), replies

    @jobs.job("test.flood")
    async def flood(
        progress: Progress,
        rate: Annotated[int, Field(gt=0)],
        seconds: Annotated[float, Field(gt=0)],
    ) -> dict[str, int]:
        total = round(rate * seconds)
        started = time.monotonic()
        written = 0
        while written < total:
            due = min(total, int((time.monotonic() - started) * rate) + 1)
            if due > written:
                await write(progress, written, due)
                written = due
            await asyncio.sleep(_TICK_S)
        return {"tokens": total}

    return jobs


# Installed before the page's own scripts: every long task from the page's first moment, every
# frame, and every batch of changes to the job cards (one per task that touched them).
_WATCH_PAGE = """
window.flood = { longTasks: [], frames: 0, writes: 0, peakChars: 0, peakNodes: 0 };
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) {
    window.flood.longTasks.push({ start: entry.startTime, duration: entry.duration });
  }
}).observe({ type: "longtask", buffered: true });
const countFrame = () => { window.flood.frames += 1; requestAnimationFrame(countFrame); };
requestAnimationFrame(countFrame);
// The largest output box, every 100 ms.
setInterval(() => {
  for (const output of document.querySelectorAll(".output")) {
    window.flood.peakChars = Math.max(window.flood.peakChars, output.textContent.length);
    window.flood.peakNodes = Math.max(window.flood.peakNodes, output.childNodes.length);
  }
}, 100);
document.addEventListener("DOMContentLoaded", () => {
  new MutationObserver(() => { window.flood.writes += 1; })
    .observe(document.getElementById("jobs"), { subtree: true, childList: true,
                                                 characterData: true, attributes: true });
});
"""


_FIGURES = """() => ({
  ...window.flood,
  longTasks: [...window.flood.longTasks],
  heap: performance.memory.usedJSHeapSize,
  elements: document.getElementsByTagName("*").length,
})"""


async def data_tokens(redis: Redis, settings: Settings, job_id: str) -> str:
    entries = await redis.xrange(Keys(settings.key_prefix).events(job_id))
    events = [decode_event(fields[b"e"]) for _, fields in entries]
    return "".join(event["data"]["token"] for event in events if event["type"] == "data")


def longest(tasks: list[dict[str, float]]) -> int:
    return round(max((task["duration"] for task in tasks), default=0.0))


async def test_a_token_flood_keeps_the_page_responsive_exact_and_bounded(
    settings: Settings,
    start_gateway: StartGateway,
    context: BrowserContext,
    redis: Redis,
    record_property: Any,
) -> None:
    settings = dataclasses.replace(
        settings, stream_maxlen=2 * round(FLOOD_RATE * FLOOD_SECONDS), worker_concurrency=16
    )
    worker = create_worker(settings, [flood_registry(settings, redis)])
    running = asyncio.create_task(worker.async_run())
    try:
        gateway = await start_gateway(settings)
        await wait_for_catalog(gateway)
        await context.add_init_script(script=_WATCH_PAGE)
        page = JobPage(await context.new_page(), gateway.url)
        await page.open()
        others = [await page.submit("test.flood", rate=OTHER_RATE, seconds=FLOOD_SECONDS)]
        others += [await page.submit_again() for _ in range(OTHER_JOBS - 1)]

        before = await page.page.evaluate(_FIGURES)
        started = time.monotonic()
        job = await page.submit("test.flood", rate=FLOOD_RATE, seconds=FLOOD_SECONDS)
        await page.wait_status(job, "completed", timeout=scaled(60))
        flood_seconds = time.monotonic() - started
        after = await page.page.evaluate(_FIGURES)
        for other in others:
            await page.wait_status(other, "completed")

        expected = await data_tokens(redis, settings, job)
        shown = await page.output(job)
        await page.card(job).get_by_role("button", name="Show all").click()
        shown_all = await page.output(job)
        show_all_tasks = (await page.page.evaluate(_FIGURES))["longTasks"][
            len(after["longTasks"]) :
        ]
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await worker.close()

    measured = {
        "data events": expected.count(" "),
        "flood seconds": round(flood_seconds, 1),
        "long tasks": len(after["longTasks"]),
        "longest task ms": longest(after["longTasks"]),
        "frames during the flood": after["frames"] - before["frames"],
        "card writes during the flood": after["writes"] - before["writes"],
        "peak visible chars": after["peakChars"],
        "peak output text nodes": after["peakNodes"],
        "JS heap MB": round(after["heap"] / 1e6, 1),
        "elements": after["elements"],
        "show all longest task ms": longest(show_all_tasks),
    }
    for name, value in measured.items():
        record_property(name, value)
    print(f"\nflood figures: {orjson.dumps(measured).decode()}")

    # Every event reached the page, in order: its full text is the stream's.
    assert expected.count(" ") == round(FLOOD_RATE * FLOOD_SECONDS)
    assert shown_all == expected
    assert shown == expected[-VISIBLE_OUTPUT_CHARS:]
    # Responsive: no long task in the page's whole life, flood included.
    assert measured["longest task ms"] <= LONG_TASK_LIMIT_MS, after["longTasks"]
    # Drawn in batches: at most one write to the cards per frame, however many events.
    assert measured["card writes during the flood"] <= measured["frames during the flood"]
    # Bounded: the output box never held more than its cap, in a few text nodes.
    assert measured["peak visible chars"] == VISIBLE_OUTPUT_CHARS
    assert measured["peak output text nodes"] <= MAX_OUTPUT_NODES + 1
