"""`/docs`: Swagger UI for `/openapi.json`, from files the gateway serves itself, under the web
page's strict Content-Security-Policy, in a real headless Chromium with no network."""

from __future__ import annotations

import pytest
from playwright.async_api import Route, async_playwright

from gateway.endpoints.openapi import DOCUMENT
from shared.settings import Settings
from tests.auth_support import with_auth
from tests.conftest import StartGateway
from tests.support import wait_until
from tests.web_support import ARTIFACTS, CHROMIUM, launch_chromium

OPERATIONS = sorted(
    (method.upper(), path)
    for path, item in DOCUMENT["paths"].items()
    for method in item
    if method != "parameters"
)


@pytest.mark.timeout(60)
async def test_docs_lists_every_operation_with_no_network_and_a_strict_csp(
    start_gateway: StartGateway, settings: Settings
) -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing (.ci/run installs Debian's chromium)")
    gateway = await start_gateway(with_auth(settings))  # the page needs no key
    elsewhere: list[str] = []

    async def only_the_gateway(route: Route) -> None:
        if route.request.url.startswith(f"{gateway.url}/"):
            await route.continue_()
        else:
            elsewhere.append(route.request.url)
            await route.abort()

    async with async_playwright() as playwright:
        browser = await launch_chromium(playwright)
        try:
            # No bypass_csp: the page must work under the policy it is served with.
            context = await browser.new_context(
                viewport={"width": 1200, "height": 800}, reduced_motion="reduce"
            )
            await context.route("**/*", only_the_gateway)
            page = await context.new_page()
            console: list[str] = []
            thrown: list[str] = []
            page.on("console", lambda message: console.append(message.text))
            page.on("pageerror", lambda error: thrown.append(str(error)))
            await page.goto(f"{gateway.url}/docs")
            paths = page.locator(".opblock-summary-path")
            await wait_until(
                lambda: paths.count(), message="Swagger UI lists the operations", timeout=20
            )
            methods = await page.locator(".opblock-summary-method").all_inner_texts()
            shown = [text.replace("\u200b", "") for text in await paths.all_inner_texts()]
            title = await page.locator(".info .title").inner_text()
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "api-docs.png"), full_page=True)
        finally:
            await browser.close()

    assert sorted(zip(methods, shown, strict=True)) == OPERATIONS
    assert title.startswith("Jobwire")
    assert elsewhere == [], "the page tried to load something from elsewhere"
    assert thrown == []
    assert [text for text in console if "Content Security Policy" in text] == []


async def test_docs_serves_only_its_own_files_under_the_page_policy(
    start_gateway: StartGateway, settings: Settings
) -> None:
    gateway = await start_gateway(settings)
    async with gateway.client() as client:
        docs = await client.get("/docs")
        index = await client.get("/")
        script = await client.get("/docs/assets/swagger-ui-bundle.js")
        init = await client.get("/static/docs.js")
        demo = await client.get("/docs/assets/index.html")  # the package's own, inline script
        outside = await client.get("/docs/assets/..%2F__init__.py")

    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert docs.headers["content-security-policy"] == index.headers["content-security-policy"]
    assert "script-src" not in docs.headers["content-security-policy"]  # default-src 'self'
    assert "<script>" not in docs.text
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert init.status_code == 200
    assert "validatorUrl: null" in init.text
    for refused in (demo, outside):
        assert refused.status_code == 404
        assert refused.json()["error"] == "not_found"
