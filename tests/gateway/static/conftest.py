"""The browser the web page tests drive: one headless Chromium per session, a fresh context
(storage, cookies) per test, and a test fails when the page's scripts threw."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, BrowserContext, async_playwright

from tests.web_support import CHROMIUM, launch_chromium


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing (.ci/run installs Debian's chromium)")
    async with async_playwright() as playwright:
        browser = await launch_chromium(playwright)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    # The page's CSP forbids eval, which some Playwright waits use; no motion: stable pictures.
    context = await browser.new_context(
        viewport={"width": 1200, "height": 800}, bypass_csp=True, reduced_motion="reduce"
    )
    uncaught: list[str] = []
    context.on("weberror", lambda error: uncaught.append(str(error.error)))
    try:
        yield context
    finally:
        await context.close()
    assert uncaught == [], "the page's scripts threw"
