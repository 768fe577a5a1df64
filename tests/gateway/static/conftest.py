"""The browser the web page tests drive: one headless Chromium per session, a fresh context
(storage, cookies) per test, and a test fails when the page's scripts threw. `context` lets
Playwright's waits past the page's Content-Security-Policy; `strict_context` keeps it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

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
    async with _checked_context(browser, bypass_csp=True, reduced_motion="reduce") as context:
        yield context


@pytest.fixture
async def strict_context(browser: Browser) -> AsyncIterator[BrowserContext]:
    """A context that keeps the page's CSP: a WebSocket it forbade would never open."""
    async with _checked_context(browser) as context:
        yield context


@asynccontextmanager
async def _checked_context(browser: Browser, **options: Any) -> AsyncIterator[BrowserContext]:
    """A 1200x800 context with `options`, closed at the end; fails if the page's scripts threw."""
    context = await browser.new_context(viewport={"width": 1200, "height": 800}, **options)
    uncaught: list[str] = []
    context.on("weberror", lambda error: uncaught.append(str(error.error)))
    try:
        yield context
    finally:
        await context.close()
    assert uncaught == [], "the page's scripts threw"
