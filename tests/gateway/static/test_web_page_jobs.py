"""The web page shows the key's jobs whoever submitted them, keeps watching a job past its watch
token's expiry, and shows the system figures: a real Chromium against a real gateway with access
control on, a real worker and Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from playwright.async_api import BrowserContext, Request, Response

from shared.settings import Settings
from tests.auth_support import ALICE_KEY, BOB_KEY, bearer, submit_as, with_auth
from tests.conftest import Gateway, RunWorker, StartGateway
from tests.support import wait_until
from tests.web_support import JobPage

pytestmark = pytest.mark.timeout(90)


async def open_page(context: BrowserContext, gateway: Gateway) -> JobPage:
    """The page with Alice's key, once the worker's jobs are in its form."""

    async def advertised() -> bool:
        async with gateway.client(headers=bearer(ALICE_KEY)) as client:
            return bool((await client.get("/catalog")).json()["jobs"])

    await wait_until(advertised, timeout=10, message="worker advertised its jobs")
    page = JobPage(await context.new_page(), gateway.url)
    await page.open(f"#key={ALICE_KEY}")
    return page


async def curl_submit(gateway: Gateway, name: str, **args: Any) -> str:
    """Submits with the real curl, as the README shows; returns the job id."""
    body = orjson.dumps({"name": name, "args": args}).decode()
    process = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--fail-with-body", "-X", "POST", f"{gateway.url}/jobs",
        "-H", f"Authorization: Bearer {ALICE_KEY}", "-H", "Content-Type: application/json",
        "-d", body,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await process.communicate()
    assert process.returncode == 0, out
    job_id: str = orjson.loads(out)["job_id"]
    return job_id


async def card_order(page: JobPage) -> list[str]:
    ids: list[str] = await page.page.locator(".job").evaluate_all(
        "cards => cards.map(card => card.dataset.jobId)"
    )
    return ids


async def test_jobs_submitted_elsewhere_are_listed_newest_first_and_watched(
    start_worker: RunWorker,
    start_gateway: StartGateway,
    settings: Settings,
    context: BrowserContext,
) -> None:
    await start_worker()
    gateway = await start_gateway(with_auth(settings))
    by_curl = await curl_submit(gateway, "demo.tokens", text="from curl", delay_ms=1)
    async with gateway.client() as client:
        by_httpx = (await submit_as(client, ALICE_KEY, "demo.tokens", text="from httpx"))["job_id"]
        await submit_as(client, BOB_KEY, "demo.tokens", text="not alice's")

    page = await open_page(context, gateway)

    await page.wait_status(by_curl, "completed")
    await page.wait_status(by_httpx, "completed")
    assert await page.output(by_curl) == "from curl"
    assert await page.output(by_httpx) == "from httpx"
    assert await card_order(page) == [by_httpx, by_curl]
    await page.page.locator("#system", has_text="workers alive: 1 ·").wait_for()

    # Submitted elsewhere while the page is open (another tab, the CLI): it joins the list.
    later = await curl_submit(gateway, "demo.tokens", text="while open", delay_ms=1)
    await page.wait_status(later, "completed")
    assert await page.output(later) == "while open"
    assert await card_order(page) == [later, by_httpx, by_curl]


async def test_a_job_outliving_its_watch_token_is_watched_to_the_end(
    start_worker: RunWorker,
    start_gateway: StartGateway,
    settings: Settings,
    context: BrowserContext,
) -> None:
    await start_worker()
    gateway = await start_gateway(with_auth(settings, token_ttl_s=2))
    # The list brings fresh tokens too: kept empty here, the page has to ask for one itself.
    await context.route("**/jobs?*", lambda route: route.fulfill(json={"jobs": [], "next": None}))
    page = await open_page(context, gateway)
    refused: list[str] = []
    renewals: list[str] = []
    job = ""

    def on_response(response: Response) -> None:
        if "/events?" in response.url and response.status == 401:
            refused.append(response.url)

    def on_request(request: Request) -> None:
        if request.method == "GET" and f"/jobs/{job}" in request.url:
            renewals.append(request.headers.get("authorization", ""))

    context.on("response", on_response)
    context.on("request", on_request)
    async with page.page.expect_response(lambda r: r.url.endswith("/jobs")) as answer:
        job = await page.submit("demo.countdown", seconds=8, steps=80)
    first_token = (await (await answer.value).json())["watch_token"]
    await wait_until(lambda: page.percent(job), message="the job reports progress")

    async with gateway.client() as client:

        async def expired() -> bool:
            response = await client.get(f"/jobs/{job}", params={"token": first_token})
            return response.status_code == 401

        await wait_until(expired, timeout=5, message="the submit's watch token expired")
    streams: list[str] = []
    context.on("request", lambda r: streams.append(r.url) if "/events?" in r.url else None)
    await context.set_offline(True)
    await page.wait_connection("reconnecting…")
    await context.set_offline(False)

    await page.wait_status(job, "completed", timeout=30)
    assert await page.text(job, "outcome") == 'Result: {"counted":80}'
    assert streams, "the page opened no stream after the network came back"
    assert all(first_token not in url for url in streams)
    assert refused == []
    assert renewals
    assert set(renewals) == {f"Bearer {ALICE_KEY}"}
