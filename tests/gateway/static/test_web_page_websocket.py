"""The web page over WebSocket (`?transport=ws`) in a real headless Chromium, under the page's
own Content-Security-Policy: jobs watched to the end with exactly their stored events, the
choice remembered across a reload, a gateway SIGKILLed and started again on its port with the
page resuming from its cursor; and a bare browser `WebSocket` reading one job's stream."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
from playwright.async_api import Browser, BrowserContext, WebSocket
from redis.asyncio import Redis

from shared.keys import Keys
from shared.publish import Publisher
from shared.settings import Settings
from tests.auth_support import ALICE_KEY, bearer, with_auth
from tests.conftest import Gateway
from tests.feeds import advertise_feed, play_job, submit_feed
from tests.processes import GatewayProcess, ProcessGroup
from tests.support import scaled, stream_ids, wait_until
from tests.web_support import JobPage

pytestmark = pytest.mark.timeout(90)

WORDS = " ".join(f"w{index:02d}" for index in range(30))


@dataclass
class Sockets:
    """Every WebSocket the page opens, with the messages it received."""

    urls: list[str] = field(default_factory=list)
    received: list[list[dict[str, Any]]] = field(default_factory=list)
    event_sources: list[str] = field(default_factory=list)

    def ids_of(self, job_id: str) -> list[str]:
        """The stream ids of `job_id`'s events, over every socket in turn."""
        ids: list[str] = []
        for messages in self.received:
            for message in messages:
                if message.get("data", {}).get("job") == job_id and "id" in message:
                    cursor = dict(entry.rsplit(":", 1) for entry in message["id"].split(","))
                    ids.append(cursor[job_id])
        return ids


def record_sockets(context: BrowserContext) -> Sockets:
    sockets = Sockets()

    def opened(socket: WebSocket) -> None:
        sockets.urls.append(socket.url)
        messages: list[dict[str, Any]] = []
        sockets.received.append(messages)
        socket.on("framereceived", lambda payload: messages.append(orjson.loads(payload)))

    def requested(request: Any) -> None:
        if "/events?" in request.url:
            sockets.event_sources.append(request.url)

    context.on("page", lambda page: page.on("websocket", opened))
    context.on("request", requested)
    return sockets


async def open_page(context: BrowserContext, url: str, address: str) -> JobPage:
    page = JobPage(await context.new_page(), url)
    await page.open(address)
    return page


async def test_jobs_submitted_on_the_page_stream_over_a_websocket_exactly(
    stack: Gateway, strict_context: BrowserContext, redis: Redis, settings: Settings
) -> None:
    sockets = record_sockets(strict_context)
    page = await open_page(strict_context, stack.url, "?transport=ws")
    countdown = await page.submit("demo.countdown", seconds=1, steps=10)
    tokens = await page.submit("demo.tokens", text=WORDS, delay_ms=20)

    await page.wait_status(countdown, "completed")
    await page.wait_status(tokens, "completed")
    assert await page.output(tokens) == WORDS
    assert await page.text(countdown, "outcome") == 'Result: {"counted":10}'
    await page.wait_connection("idle")
    assert sockets.event_sources == []
    assert sockets.urls
    socket_route = stack.url.replace("http", "ws", 1) + "/events/ws?job="
    assert all(url.startswith(socket_route) for url in sockets.urls)

    # Without the parameter the choice holds; the reload replays both jobs on one socket.
    before = len(sockets.urls)
    await page.page.goto(stack.url + "/")
    await page.wait_status(tokens, "completed")
    await page.wait_status(countdown, "completed")
    assert await page.output(tokens) == WORDS
    replay = Sockets(sockets.urls[before:], sockets.received[before:])
    assert len(replay.urls) == 1
    for job_id in (countdown, tokens):
        assert replay.ids_of(job_id) == await stream_ids(redis, settings, job_id)
    assert sockets.event_sources == []


async def test_page_resumes_exactly_over_websocket_when_its_gateway_is_killed_and_restarted(
    settings: Settings, redis: Redis, browser: Browser
) -> None:
    settings = with_auth(settings)
    keys = Keys(settings.key_prefix)
    await advertise_feed(redis, keys)
    async with ProcessGroup.open() as processes:
        doomed = await processes.gateway(settings)
        async with httpx.AsyncClient(base_url=doomed.url, headers=bearer(ALICE_KEY)) as api:
            job_ids = [await submit_feed(api) for _ in range(2)]
            saved = []
            for job_id in job_ids:
                state = (await api.get(f"/jobs/{job_id}")).json()
                saved.append({"id": job_id, "name": "test.feed", "args": {}, "createdAt": 1,
                              "watchToken": state["watch_token"]})  # fmt: skip
        context = await browser.new_context()
        try:
            # The page starts with both jobs remembered: one socket carries them from the start.
            remembered = orjson.dumps(orjson.dumps(saved).decode()).decode()
            await context.add_init_script(
                f"try {{ localStorage.setItem('jobwire.jobs', {remembered}); }} catch {{}}"
            )
            sockets = record_sockets(context)
            page = await open_page(context, doomed.url, f"?transport=ws#key={ALICE_KEY}")
            publisher = Publisher(redis, settings)
            feeds = asyncio.gather(
                *(play_job(publisher, job_id, events=120, interval_s=0.02) for job_id in job_ids)
            )
            await wait_until(
                lambda: all(len(sockets.ids_of(job_id)) >= 20 for job_id in job_ids),
                message="both jobs streaming",
            )

            await doomed.kill()
            await page.wait_connection("reconnecting…")
            restarted = GatewayProcess(
                doomed.module, doomed.env, processes.directory / "restarted.log", port=doomed.port
            )
            processes.children.append(restarted)
            await restarted.start()
            await restarted.wait_ready()
            await asyncio.wait_for(feeds, scaled(30))

            for job_id in job_ids:
                await page.wait_status(job_id, "completed")
                assert sockets.ids_of(job_id) == await stream_ids(redis, settings, job_id)
            await page.wait_connection("idle")
        finally:
            await context.close()
    resumed = sockets.urls[1:]
    assert resumed
    assert all("last_event_id=" in url and "token=" in url for url in resumed)
    assert sockets.event_sources == []


async def test_a_browser_websocket_gets_the_jobs_stream_then_end_and_close_1000(
    stack: Gateway, strict_context: BrowserContext, redis: Redis, settings: Settings
) -> None:
    async with stack.client() as client:
        reply = await client.post(
            "/jobs", json={"name": "demo.tokens", "args": {"text": "a b c", "delay_ms": 10}}
        )
    job_id = reply.json()["job_id"]
    page = await strict_context.new_page()
    await page.goto(stack.url + "/")

    read = await page.evaluate(
        """(path) => new Promise((resolve) => {
            const url = new URL(path, location.href);
            url.protocol = "ws:";
            const socket = new WebSocket(url);
            const messages = [];
            socket.onmessage = (message) => messages.push(JSON.parse(message.data));
            socket.onclose = (close) =>
                resolve({ messages, code: close.code, clean: close.wasClean });
        })""",
        f"/jobs/{job_id}/ws",
    )

    messages = read["messages"]
    assert [m["id"] for m in messages[:-1]] == await stream_ids(redis, settings, job_id)
    assert [m["type"] for m in messages[-2:]] == ["completed", "end"]
    assert messages[-1] == {"type": "end"}
    assert all(m["data"]["job"] == job_id for m in messages[:-1])
    assert (read["code"], read["clean"]) == (1000, True)
