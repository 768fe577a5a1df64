"""The web page in a real headless Chromium against a real gateway, worker and Redis.

Each test drives the page as a person would (pick a job, fill its arguments, submit, read the
cards) and checks what they would see: progress, partial output token by token, errors and
retries, the final result, and the page carrying on by itself after the network or the gateway
went away.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Annotated, Literal

import pytest
from playwright.async_api import BrowserContext, Request, Route
from pydantic import BaseModel, Field
from redis.asyncio import Redis

from shared.catalog import advertise
from shared.keys import Keys
from shared.settings import Settings
from tests.conftest import Gateway, RunWorker, StartGateway
from tests.support import free_port, wait_until
from tests.web_support import (
    JobPage,
    established_connections,
    serve_on_port,
    wait_for_catalog,
)
from worker.progress import Progress
from worker.registry import JobRegistry

# Words that make any lost, repeated or reordered token visible in the page's output.
WORDS = [f"w{index:02d}" for index in range(40)]
TEXT = " ".join(WORDS)


async def open_page(context: BrowserContext, gateway: Gateway, fragment: str = "") -> JobPage:
    await wait_for_catalog(gateway)
    page = JobPage(await context.new_page(), gateway.url)
    await page.open(fragment)
    return page


def stream_requests(context: BrowserContext) -> list[str]:
    """URLs of the event streams the page opens from now on."""
    urls: list[str] = []

    def record(request: Request) -> None:
        if "/events?" in request.url:
            urls.append(request.url)

    context.on("request", record)
    return urls


async def test_submit_and_watch_to_completion(stack: Gateway, context: BrowserContext) -> None:
    page = await open_page(context, stack)
    countdown = await page.submit("demo.countdown", seconds=1.5, steps=15)
    tokens = await page.submit("demo.tokens", text=TEXT, delay_ms=20)

    await wait_until(lambda: page.text(countdown, "eta"), message="an ETA is shown")
    assert (await page.text(countdown, "rate")).endswith("/s")
    assert 0 < (await page.percent(countdown) or 0) < 100
    await wait_until(lambda: _has_some_words(page, tokens), message="tokens appear one by one")

    await page.wait_status(countdown, "completed")
    await page.wait_status(tokens, "completed")
    assert await page.percent(countdown) == 100
    assert await page.text(countdown, "outcome") == 'Result: {"counted":15}'
    assert await page.output(tokens) == TEXT
    assert await page.percent(tokens) == 100
    assert not await page.card(tokens).locator(".cancel").is_visible()
    await page.wait_connection("idle")
    await page.screenshot("web-page.png")


async def _has_some_words(page: JobPage, job_id: str) -> bool:
    text = await page.output(job_id)
    return 0 < len(text.split()) < len(WORDS)


async def test_a_reload_shows_the_jobs_again(
    stack: Gateway, context: BrowserContext, redis: Redis, settings: Settings
) -> None:
    page = await open_page(context, stack)
    finished = await page.submit("demo.tokens", text="all of it", delay_ms=1)
    await page.wait_status(finished, "completed")
    expired = await page.submit("demo.tokens", text="soon gone", delay_ms=1)
    await page.wait_status(expired, "completed")
    keys = Keys(settings.key_prefix)
    await redis.delete(keys.events(expired), keys.state(expired))
    running = await page.submit("demo.countdown", seconds=1, steps=10)

    await page.page.reload()

    await page.wait_status(running, "completed")
    await page.wait_status(finished, "completed")
    assert await page.output(finished) == "all of it"
    await page.wait_status(expired, "gone")
    assert "no longer knows this job" in await page.text(expired, "notes")
    assert await page.page.locator(".job").count() == 3

    await page.page.get_by_role("button", name="Clear finished").click()
    await page.page.reload()
    await page.page.locator("#no-jobs").wait_for()
    assert await page.page.locator(".job").count() == 0


async def test_errors_retries_and_failures_are_shown(
    stack: Gateway, context: BrowserContext
) -> None:
    page = await open_page(context, stack)
    flaky = await page.submit("demo.flaky", fail_times=1)
    failing = await page.submit("demo.fail", message="disk on fire")

    await page.wait_status(flaky, "completed")
    notes = await page.text(flaky, "notes")
    assert "retrying: attempt 2" in notes
    assert "TransientError: attempt 1 of 1 planned failures" in notes
    assert await page.text(flaky, "status") == "completed · attempt 2"
    assert await page.text(flaky, "outcome") == 'Result: {"attempts":2}'

    await page.wait_status(failing, "failed")
    assert await page.text(failing, "outcome") == "Failed: RuntimeError: disk on fire"
    await page.screenshot("web-page-errors.png")


async def test_cancel_button_cancels_the_job(stack: Gateway, context: BrowserContext) -> None:
    page = await open_page(context, stack)
    job = await page.submit("demo.countdown", seconds=20, steps=200)
    await wait_until(lambda: page.percent(job), message="the job reports progress")

    await page.card(job).get_by_role("button", name="Cancel").click()

    await page.wait_status(job, "cancelled")
    assert await page.text(job, "outcome") == "Cancelled: cancelled by request"


async def test_arguments_are_checked_by_the_gateway(
    stack: Gateway, context: BrowserContext
) -> None:
    page = await open_page(context, stack)
    await page.page.select_option("#job-name", "demo.quiet")
    assert await page.page.locator("#arg-seconds").get_attribute("required") is not None

    await page.page.click("#submit-button")

    await page.page.locator("#arg-seconds-problem", has_text="required, but missing").wait_for()
    assert await page.page.get_attribute("#arg-seconds", "aria-invalid") == "true"
    assert await page.page.inner_text("#submit-error") == "Not submitted: see the fields marked"
    assert await page.page.locator(".job").count() == 0

    await page.page.select_option("#job-name", "demo.countdown")
    await page.page.fill("#arg-seconds", "-5")
    await page.page.fill("#arg-steps", "0")
    await page.page.click("#submit-button")

    await page.page.locator("#arg-steps-problem", has_text="0 is less than").wait_for()
    assert await page.page.inner_text("#arg-seconds-problem") == "-5 is less than the minimum of 0"
    assert await page.page.inner_text("#arg-steps-problem") == "0 is less than the minimum of 1"
    assert await page.page.locator(".job").count() == 0


async def render(
    progress: Progress,
    size: Size,
    mode: Literal["fast", "best"] = "best",
    tags: list[str] = [],  # noqa: B006 (never called: the test has no worker)
    counts: list[int] | None = None,
    verbose: bool = True,
    ratio: Annotated[float, Field(gt=0, le=4)] = 1.5,
    **labels: str,
) -> None:
    pass


class Size(BaseModel):
    width: int
    height: int


async def test_the_form_is_built_from_the_jobs_schema(
    start_gateway: StartGateway, redis: Redis, settings: Settings, context: BrowserContext
) -> None:
    jobs = JobRegistry()
    jobs.job("test.render")(render)
    await advertise(redis, Keys(settings.key_prefix), jobs.specs())
    page = await open_page(context, await start_gateway())
    form = page.page.locator("#job-args")

    fields = await form.evaluate(
        """(fieldset) => [...fieldset.querySelectorAll("[data-kind]")].map((input) => [
            input.name, input.tagName, input.type, input.placeholder ?? "",
            input.min ?? "", input.max ?? "", input.step ?? "", !!input.checked,
            input.tagName === "SELECT" ? [...input.options].map((o) => o.text) : [],
        ])"""
    )
    assert fields == [
        ["size", "INPUT", "text", "", "", "", "", False, []],
        ["mode", "SELECT", "select-one", "", "", "", "", False, ["default: best", "fast", "best"]],
        ["tags", "INPUT", "text", "", "", "", "", False, []],
        ["counts", "INPUT", "text", "", "", "", "", False, []],
        ["verbose", "INPUT", "checkbox", "", "", "", "", True, []],
        ["ratio", "INPUT", "number", "1.5", "0", "4", "any", False, []],
        ["*", "TEXTAREA", "textarea", '{"name": "value"}', "", "", "", False, []],
    ]
    assert await page.page.inner_text("label[for=arg-ratio]") == (
        "ratio number > 0 ≤ 4 · default 1.5"
    )

    await page.page.fill("#arg-size", '{"width": 2, "height": "tall"}')
    await page.page.select_option("#arg-mode", label="fast")
    await page.page.fill("#arg-tags", "a, b")
    await page.page.fill("#arg-counts", "1,x")
    await page.page.uncheck("#arg-verbose")
    await page.page.fill("#arg-ratio", "5")
    await page.page.fill("#arg-extra", '{"owner": 7}')
    async with page.page.expect_request(lambda r: r.method == "POST") as sent:
        await page.page.click("#submit-button")

    body = (await sent.value).post_data_json
    assert body is not None
    assert body["args"] == {
        "size": {"width": 2, "height": "tall"},
        "mode": "fast",
        "tags": ["a", "b"],
        "counts": [1, "x"],
        "verbose": False,
        "ratio": 5,
        "owner": 7,
    }
    await page.page.locator("#arg-ratio-problem", has_text="5 is greater").wait_for()
    problems = {
        name: await page.page.inner_text(f"#arg-{name}-problem")
        for name in ("size", "mode", "tags", "counts", "verbose", "ratio")
    }
    assert problems == {
        "size": "height: 'tall' is not of type 'integer'",
        "mode": "",
        "tags": "",
        "counts": "1: 'x' is not of type 'integer'",
        "verbose": "",
        "ratio": "5 is greater than the maximum of 4",
    }
    assert await page.page.inner_text("#submit-error") == (
        "Not submitted: owner: 7 is not of type 'string'"
    )


async def test_offline_mid_job_every_token_exactly_once(
    stack: Gateway, context: BrowserContext, redis: Redis, settings: Settings
) -> None:
    page = await open_page(context, stack)
    streams = stream_requests(context)
    job = await page.submit("demo.tokens", text=TEXT, delay_ms=40)
    await wait_until(lambda: _has_some_words(page, job), message="first tokens shown")

    await context.set_offline(True)
    await page.wait_connection("reconnecting…")
    seen = len((await page.output(job)).split())
    stored = Keys(settings.key_prefix).events(job)
    # The job goes on writing while the page cannot hear it.
    await wait_until(
        lambda: _written_more(redis, stored, seen + 10), message="tokens written meanwhile"
    )
    assert len((await page.output(job)).split()) == seen
    opened_before = len(streams)
    await context.set_offline(False)

    await page.wait_status(job, "completed")
    assert await page.output(job) == TEXT
    assert await page.percent(job) == 100
    resumed = streams[opened_before:]
    assert resumed, "the page opened no stream after the network came back"
    assert f"last_event_id={job}%3A" in resumed[0]
    await page.wait_connection("idle")


async def _written_more(redis: Redis, stream_key: str, floor: int) -> bool:
    written: int = await redis.xlen(stream_key)
    return written > floor


async def test_page_recovers_when_the_gateway_restarts_behind_a_failing_proxy(
    settings: Settings,
    start_worker: RunWorker,
    start_gateway: StartGateway,
    context: BrowserContext,
    redis: Redis,
) -> None:
    await start_worker()
    gateway = await start_gateway()
    port = int(gateway.url.rsplit(":", 1)[1])
    page = await open_page(context, gateway)
    down = False
    bad_gateway_answers = 0

    # What a reverse proxy answers while the gateway behind it is being replaced.
    async def proxy(route: Route) -> None:
        nonlocal bad_gateway_answers
        if down:
            bad_gateway_answers += 1
            await route.fulfill(status=502, body="bad gateway")
        else:
            await route.continue_()

    await context.route("**/events?*", proxy)
    job = await page.submit("demo.tokens", text=TEXT, delay_ms=40)
    await wait_until(lambda: _has_some_words(page, job), message="first tokens shown")

    down = True
    gateway.server.should_exit = True
    await gateway.task
    await page.wait_connection("reconnecting…")
    stored = Keys(settings.key_prefix).events(job)
    seen = len((await page.output(job)).split())
    await wait_until(
        lambda: _written_more(redis, stored, seen + 10), message="tokens written meanwhile"
    )
    # EventSource gives up for good on a 502: the page itself must try again, and again.
    await wait_until(lambda: bad_gateway_answers >= 2, message="the page retried after a 502")

    async with serve_on_port(settings, port):
        down = False
        await page.wait_status(job, "completed")
        assert await page.output(job) == TEXT
        assert await page.percent(job) == 100
        await page.wait_connection("idle")


async def test_twelve_jobs_at_once_are_all_live(
    settings: Settings,
    start_worker: RunWorker,
    start_gateway: StartGateway,
    context: BrowserContext,
) -> None:
    await start_worker(dataclasses.replace(settings, worker_concurrency=12))
    gateway = await start_gateway()
    page = await open_page(context, gateway)
    jobs = [await page.submit("demo.countdown", seconds=3, steps=30)]
    jobs += [await page.submit_again() for _ in range(11)]

    # With one connection per job, a browser's six-per-origin limit would hold the later jobs'
    # streams back until earlier ones finished: every job must show progress before any ends.
    moving: set[str] = set()

    async def all_moving() -> bool:
        for job in jobs:
            percent = await page.percent(job)
            if percent is not None and 0 < percent < 100:
                moving.add(job)
        return len(moving) == len(jobs)

    await wait_until(all_moving, timeout=10, message="every job shows live progress")
    assert await page.page.locator('.job[data-status="completed"]').count() == 0

    for job in jobs:
        await page.wait_status(job, "completed")
        assert await page.text(job, "outcome") == 'Result: {"counted":30}'
    await page.wait_connection("idle")
    await page.screenshot("web-page-twelve-jobs.png")


@pytest.mark.timeout(120)  # about 12 s on an idle machine; room for a busy one
async def test_fifty_jobs_in_a_row_without_slowdown_or_leaked_connections(
    settings: Settings, start_worker: RunWorker, context: BrowserContext
) -> None:
    await start_worker()
    port = free_port()
    # Idle keep-alive connections close after a second, so only open streams stay counted.
    async with serve_on_port(settings, port, timeout_keep_alive=1) as gateway:
        page = await open_page(context, gateway)
        durations: list[float] = []
        peak = 0
        await page.submit("demo.tokens", text="one two three", delay_ms=1)
        for _ in range(50):
            started = time.monotonic()
            job = await page.submit_again()
            await page.wait_status(job, "completed")
            durations.append(time.monotonic() - started)
            assert await page.output(job) == "one two three"
            peak = max(peak, established_connections(port))

        first, last = statistics.median(durations[:10]), statistics.median(durations[-10:])
        assert last < 2.5 * first + 0.25, (first, last)
        assert peak <= 6
        await wait_until(
            lambda: established_connections(port) == 0,
            timeout=5,
            message="every connection closed once no job is watched",
        )
        assert await page.page.locator('.job[data-status="completed"]').count() == 51


async def test_api_key_from_the_fragment_is_sent_and_watch_tokens_are_used(
    stack: Gateway, context: BrowserContext
) -> None:
    submits: list[dict[str, str]] = []

    # Stands in for a gateway with auth on: its submit answer carries a watch token.
    async def with_watch_token(route: Route) -> None:
        submits.append(await route.request.all_headers())
        response = await route.fetch()
        body = await response.json()
        await route.fulfill(response=response, json={**body, "watch_token": "tok-1"})

    await context.route("**/jobs", with_watch_token)
    streams = stream_requests(context)
    page = await open_page(context, stack, "#key=k-123")

    assert page.page.url == stack.url + "/"
    stored = await page.page.evaluate("localStorage.getItem('jobwire.apiKey')")
    assert stored == "k-123"
    job = await page.submit("demo.tokens", text="a b", delay_ms=1)
    await page.wait_status(job, "completed")
    assert submits[0]["authorization"] == "Bearer k-123"
    assert "token=tok-1" in streams[0]

    await page.page.reload()
    assert await page.page.locator("#api-key").input_value() == "k-123"


def catalog_keys(context: BrowserContext) -> list[str | None]:
    """The Authorization header of each job-list request the page makes from now on."""
    sent: list[str | None] = []

    def record(request: Request) -> None:
        if request.url.endswith("/catalog"):
            sent.append(request.headers.get("authorization"))

    context.on("request", record)
    return sent


async def saved_key(page: JobPage) -> object:
    return await page.page.evaluate("localStorage.getItem('jobwire.apiKey')")


async def test_a_link_with_another_key_never_replaces_the_saved_key_unasked(
    stack: Gateway, context: BrowserContext
) -> None:
    mine = await open_page(context, stack, "#key=my-own-key")
    assert await saved_key(mine) == "my-own-key"  # none was saved: taken without a question
    await mine.page.close()
    sent = catalog_keys(context)

    lured = await open_page(context, stack, "#key=ATTACKER")
    question = lured.page.get_by_role("group", name="The link you opened carries an API key")

    assert await saved_key(lured) == "my-own-key"
    assert sent == ["Bearer my-own-key"]
    assert lured.page.url == stack.url + "/"  # the key is out of the address either way
    await question.wait_for()
    assert await lured.page.get_by_label("API key", exact=True).input_value() == "my-own-key"
    await question.get_by_role("button", name="Keep the saved key").click()
    await question.wait_for(state="detached")
    assert await saved_key(lured) == "my-own-key"
    await lured.page.locator("#settings-note", has_text="Kept the saved key").wait_for()

    # Asked again by the same link, and this time told yes: the link's key is used from then on.
    again = await open_page(context, stack, "#key=ATTACKER")
    question = again.page.get_by_role("group", name="The link you opened carries an API key")
    async with again.page.expect_request(lambda request: request.url.endswith("/catalog")):
        await question.get_by_role("button", name="Use the link's key").click()
    assert await saved_key(again) == "ATTACKER"
    assert sent[-1] == "Bearer ATTACKER"
    assert await again.page.get_by_label("API key", exact=True).input_value() == "ATTACKER"


async def test_a_link_with_the_saved_key_asks_nothing(
    stack: Gateway, context: BrowserContext
) -> None:
    await (await open_page(context, stack, "#key=my-own-key")).page.close()
    page = await open_page(context, stack, "#key=my-own-key")

    assert await page.page.locator(".key-question").count() == 0
    assert await page.page.locator("#settings").get_attribute("open") is None
    assert await saved_key(page) == "my-own-key"


async def test_the_page_applies_each_event_once_by_its_position(
    stack: Gateway, context: BrowserContext
) -> None:
    page = await open_page(context, stack)

    applied = await page.page.evaluate(
        """async () => {
        const { Watcher } = await import("/static/js/stream.js");
        const { Job } = await import("/static/js/jobs.js");
        const watcher = new Watcher({ onJobChanged() {}, onConnectionChanged() {} });
        const job = new Job({ id: "j1", name: "demo.tokens", args: {} });
        watcher.jobs.set(job.id, job);
        const deliver = (type, cursor, data) => watcher.deliver(new MessageEvent(type, {
            data: JSON.stringify({ v: 1, type, job: "j1", ts: 1, attempt: 1, data }),
            lastEventId: cursor,
        }));
        deliver("data", "j1:9-0", { token: "a" });
        deliver("data", "j1:10-0", { token: "b" });
        deliver("data", "j1:9-0", { token: "a" });  // replayed after a reconnect
        deliver("data", "j1:10-0", { token: "b" });
        deliver("data", "j0:99-0,j1:10-1", { token: "c" });
        deliver("data", "xj1:99-0,j1:10-2", { token: "d" });  // another job's id ends in j1
        deliver("data", "xj1:99-1", { token: "x" });  // no position of j1's: not applied
        const before = job.output.text();
        watcher.deliver(new MessageEvent("reset", {
            data: JSON.stringify({ job: "j1", reason: "history_trimmed",
                                   state: { status: "completed", attempt: 1 } }),
            lastEventId: "j1:10-1",
        }));
        // The replay that follows a reset still has to arrive: the job is not over yet.
        const afterReset = [job.output.text(), job.cursor, job.terminal];
        deliver("data", "j1:9-0", { token: "a" });
        return [before, afterReset, job.output.text()];
    }"""
    )

    assert applied == ["abcd", ["", None, False], "a"]


async def test_a_refused_key_opens_the_settings_to_enter_another(
    stack: Gateway, context: BrowserContext
) -> None:
    # Stands in for a gateway with auth on, which accepts only the key "good".
    async def auth(route: Route) -> None:
        if route.request.headers.get("authorization") == "Bearer good":
            await route.continue_()
            return
        await route.fulfill(
            status=401,
            json={"error": "unauthorized", "detail": "a valid API key is needed"},
            headers={"WWW-Authenticate": "Bearer"},
        )

    await context.route("**/jobs", auth)
    page = await open_page(context, stack, "#key=stale")
    await page.page.select_option("#job-name", "demo.tokens")
    await page.page.click("#submit-button")

    problem = page.page.locator("#submit-error")
    await problem.filter(has_text="unauthorized (401): a valid API key is needed").wait_for()
    assert await page.page.locator("#settings").get_attribute("open") is not None
    key = page.page.get_by_label("API key")
    assert await key.evaluate("element => element === document.activeElement")

    await key.fill("good")
    await page.page.get_by_role("button", name="Save key").click()
    job = await page.submit("demo.tokens", text="let in", delay_ms=1)
    await page.wait_status(job, "completed")
    assert await page.output(job) == "let in"


async def test_what_was_typed_survives_a_reload_of_the_job_list(
    stack: Gateway, context: BrowserContext
) -> None:
    page = await open_page(context, stack)
    await page.page.select_option("#job-name", "demo.tokens")
    await page.page.fill("#arg-text", "kept")
    # Saving a key reloads the job list, and with it the form's argument fields.
    await page.page.locator("#settings summary").click()
    async with page.page.expect_response(lambda response: "/catalog" in response.url):
        await page.page.get_by_label("API key").fill("another")
        await page.page.get_by_role("button", name="Save key").click()
    await page.page.locator("#arg-text").wait_for()

    assert await page.page.input_value("#arg-text") == "kept"
