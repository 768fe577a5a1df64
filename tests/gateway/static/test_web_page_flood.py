"""The web page under a token flood, in a real headless Chromium against a real gateway, worker
and Redis: one job writes 5,000 `data` events a second for 10 s while the page watches it and
11 other jobs. The page must stay responsive (no long task over 100 ms, unless the machine kept
its thread off the CPU for much of it: see ThreadClock), draw at most once a frame, show the
exact text, and keep its memory bounded (only the last VISIBLE_OUTPUT_CHARS of an output on
screen).

The figures measured are printed (run with `-s` to see them) and recorded as properties of the
test in a JUnit report; bench/README.md lists those of a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import orjson
import pytest
from playwright.async_api import Browser, BrowserContext
from pydantic import Field
from redis.asyncio import Redis

from shared.events import EventType, decode_event, encode_event, make_event
from shared.keys import Keys
from shared.publish import PUBLISH_SCRIPT
from shared.settings import Settings
from shared.state import state_changes
from tests.conftest import Gateway, StartGateway
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
_SAMPLE_S = 0.005
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
    const start = performance.timeOrigin + entry.startTime; // unix ms, as Python's clock
    window.flood.longTasks.push({ start, duration: entry.duration });
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


def longest(tasks: list[dict[str, float]], key: str = "duration") -> int:
    return round(max((task[key] for task in tasks if task[key] < math.inf), default=0.0))


class ThreadClock:
    """The CPU time a process's main thread used, sampled every few ms from /proc.

    A long task is measured in wall time. On a loaded machine the thread that runs it may be
    off the CPU for most of it: the CPU time it used over the task tells the page's own work
    from the machine's stretch.
    """

    def __init__(self, pid: int) -> None:
        self._stat = Path(f"/proc/{pid}/task/{pid}/stat")
        self._tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
        self.samples: list[tuple[float, float]] = []  # (unix ms, CPU ms so far)
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> ThreadClock:
        self._sampler.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._sampler.join()

    def _sample(self) -> None:
        while not self._stop.wait(_SAMPLE_S):
            try:
                fields = self._stat.read_text().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                return
            used = (int(fields[11]) + int(fields[12])) * self._tick_ms  # utime + stime
            self.samples.append((time.time() * 1000, used))

    @property
    def used_ms(self) -> float:
        return self.samples[-1][1] - self.samples[0][1] if self.samples else 0.0

    def used_during(self, start_ms: float, end_ms: float) -> float:
        """CPU ms used from the last sample before `start_ms` to the first after `end_ms`:
        never less than what the thread used in between (a tick more at most); infinite
        outside the samples (before the page's thread was measured: its load)."""
        before = [used for at, used in self.samples if at <= start_ms]
        after = [used for at, used in self.samples if at >= end_ms]
        if not before or not after:
            return math.inf
        return after[0] - before[-1]


async def renderer_pids(browser: Browser) -> list[int]:
    session = await browser.new_browser_cdp_session()
    try:
        processes = (await session.send("SystemInfo.getProcessInfo"))["processInfo"]
    finally:
        await session.detach()
    return [process["id"] for process in processes if process["type"] == "renderer"]


async def test_a_token_flood_keeps_the_page_responsive_exact_and_bounded(
    settings: Settings,
    start_gateway: StartGateway,
    browser: Browser,
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
        clocks = [ThreadClock(pid) for pid in await renderer_pids(browser)]
        with contextlib.ExitStack() as sampling:
            for clock in clocks:
                sampling.enter_context(clock)
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
        await page.screenshot("web-page-flood.png")
        await page.card(job).get_by_role("button", name="Show all").click()
        shown_all = await page.output(job)
        show_all_tasks = (await page.page.evaluate(_FIGURES))["longTasks"][
            len(after["longTasks"]) :
        ]
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await worker.close()

    # The page's renderer is the one that worked through the flood.
    page_thread = max(clocks, key=lambda clock: clock.used_ms)
    # The flood's: the page's load and the other jobs' submits came before its threads were
    # measured, and are no part of the flood.
    long_tasks = after["longTasks"][len(before["longTasks"]) :]
    for task in long_tasks:
        task["cpu"] = page_thread.used_during(task["start"], task["start"] + task["duration"])
    measured = {
        "data events received": shown_all.count(" "),
        "flood seconds": round(flood_seconds, 1),
        "long tasks": len(long_tasks),
        "longest task ms": longest(long_tasks),
        "long tasks over the limit": sum(
            task["duration"] > LONG_TASK_LIMIT_MS for task in long_tasks
        ),
        "most CPU ms in a long task": longest(long_tasks, "cpu"),
        "page thread CPU seconds": round(page_thread.used_ms / 1000, 1),
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
    # Responsive: no long task over the limit, or, on a machine so loaded that the page's thread
    # was off the CPU for much of one, none that used more CPU than the limit.
    assert page_thread.used_ms > 0, "the page's thread was not measured"
    too_long = [task for task in long_tasks if task["duration"] > LONG_TASK_LIMIT_MS]
    assert all(task["cpu"] <= LONG_TASK_LIMIT_MS for task in too_long), too_long
    # Drawn in batches: at most one write to the cards per frame, however many events.
    assert measured["card writes during the flood"] <= measured["frames during the flood"]
    # Bounded: the output box never held more than its cap, in a few text nodes.
    assert measured["peak visible chars"] == VISIBLE_OUTPUT_CHARS
    assert measured["peak output text nodes"] <= MAX_OUTPUT_NODES + 1


# What a hidden tab does: it runs no animation frames (until `releaseFrames()` here).
_HOLD_FRAMES = """
window.heldFrames = [];
const requestFrame = window.requestAnimationFrame.bind(window);
window.requestAnimationFrame = (callback) => window.heldFrames.push(callback);
window.releaseFrames = () => {
  window.requestAnimationFrame = requestFrame;
  for (const callback of window.heldFrames.splice(0)) requestFrame(callback);
};
"""
WORDS = " ".join(f"w{index:02d}" for index in range(40))


async def test_without_frames_the_page_keeps_up_and_then_draws_the_latest_state(
    stack: Gateway, context: BrowserContext
) -> None:
    await wait_for_catalog(stack)
    await context.add_init_script(script=_HOLD_FRAMES)
    page = JobPage(await context.new_page(), stack.url)
    await page.open()
    job = await page.submit("demo.tokens", text=WORDS, delay_ms=20)

    # The page closes a stream once its jobs ended: every event was applied, none drawn.
    await page.wait_connection("live")
    await page.wait_connection("idle")
    assert await page.card(job).get_attribute("data-status") == "queued"
    assert await page.output(job) == ""

    await page.page.evaluate("window.releaseFrames()")
    await page.wait_status(job, "completed")
    assert await page.output(job) == WORDS
    assert await page.text(job, "outcome") == f'Result: {{"text":"{WORDS}"}}'


async def test_the_page_keeps_the_tail_of_an_endless_output(
    start_gateway: StartGateway, context: BrowserContext
) -> None:
    page = await context.new_page()
    await page.goto((await start_gateway()).url)

    kept = await page.evaluate(
        """async () => {
        const { Output, KEPT_OUTPUT_CHARS } = await import("/static/js/output.js");
        const output = new Output();
        const tokens = [];
        for (let index = 0; tokens.length * 8 < 3 * KEPT_OUTPUT_CHARS; index += 1) {
            const token = `${index} `.padStart(8, "0");
            tokens.push(token);
            output.append(token);
        }
        const all = tokens.join("");
        return {
            limit: KEPT_OUTPUT_CHARS, appended: all.length, end: output.end,
            start: output.start, kept: output.length,
            tail: output.text() === all.slice(output.start),
            last: output.text(output.end - 100) === all.slice(-100),
        };
    }"""
    )

    assert kept["end"] == kept["appended"]
    assert kept["start"] + kept["kept"] == kept["end"]
    assert kept["limit"] <= kept["kept"] <= kept["limit"] + 16 * 1024 + 8
    assert kept["tail"]
    assert kept["last"]


async def test_the_output_box_shows_the_last_characters_never_half_of_one(
    start_gateway: StartGateway, context: BrowserContext
) -> None:
    page = await context.new_page()
    await page.goto((await start_gateway()).url)

    shown = await page.evaluate(
        """async () => {
        const { JobCard } = await import("/static/js/view.js");
        const { Job } = await import("/static/js/jobs.js");
        const job = new Job({ id: "j1", name: "demo.tokens", args: {} });
        const card = new JobCard(document.getElementById("job-template"), job,
                                 { onCancel() {} });
        const output = card.part("output");
        const draw = (...tokens) => {
            for (const token of tokens) job.output.append(token);
            card.render();
            const text = output.textContent;
            const whole = job.output.text().endsWith(text) && !/^[\udc00-\udfff]/.test(text);
            return [text.length, whole];
        };
        // Each emoji is two UTF-16 units: the last 16,384 would begin with half of one.
        const first = draw("😀".repeat(10_000), "a");
        // 2,001 units more to cut from the front (which begins with a whole emoji).
        const then = draw("😀".repeat(1_000), "bc");
        return [first, then, card.part("show-all").textContent];
    }"""
    )

    assert shown == [
        [VISIBLE_OUTPUT_CHARS - 1, True],
        [VISIBLE_OUTPUT_CHARS - 1, True],
        "Show all 21 KB",
    ]
