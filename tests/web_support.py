"""Driving the web page in a real headless Chromium, and watching the gateway from outside.

Chromium is Debian's (`/usr/bin/chromium`, installed by .ci/run): Playwright's own browser
download is never used.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from playwright.async_api import Browser, Locator, Page, Playwright, Response

from gateway.processes.server import build_server
from shared.settings import Settings
from tests.conftest import Gateway
from tests.support import scaled, wait_until

__all__ = [
    "ARTIFACTS",
    "CHROMIUM",
    "JobPage",
    "established_connections",
    "launch_chromium",
    "serve_on_port",
    "wait_for_catalog",
]

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
_CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# /proc/net/tcp state code of an established connection.
_ESTABLISHED = "01"


async def launch_chromium(playwright: Playwright) -> Browser:
    return await playwright.chromium.launch(executable_path=str(CHROMIUM), args=_CHROMIUM_ARGS)


@asynccontextmanager
async def serve_on_port(settings: Settings, port: int, **config: Any) -> AsyncIterator[Gateway]:
    """A gateway on a given port (one that just stopped there, say); stopped on exit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    server = build_server(settings, **config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await wait_until(lambda: server.started or task.done(), timeout=10)
        if task.done():
            task.result()  # startup failed: raise its error
        yield Gateway(f"http://127.0.0.1:{port}", server, task)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=scaled(10))
        sock.close()


def established_connections(port: int) -> int:
    """TCP connections established to `port` on this machine, counted at the server's end."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == _ESTABLISHED:
                count += 1
    return count


async def wait_for_catalog(gateway: Gateway) -> None:
    """The worker advertises its jobs as it starts; the page's form lists them once there."""

    async def advertised() -> bool:
        async with gateway.client() as client:
            response = await client.get("/catalog")
        return bool(response.json()["jobs"])

    await wait_until(advertised, timeout=10, message="worker advertised its jobs")


class JobPage:
    """The page as a person uses it: pick a job, fill its arguments, submit, read the cards."""

    def __init__(self, page: Page, url: str) -> None:
        self.page = page
        self.url = url

    async def open(self, fragment: str = "") -> None:
        await self.page.goto(self.url + "/" + fragment)
        await self.page.locator("#job-name:not([disabled])").wait_for()

    async def submit(self, name: str, **args: object) -> str:
        """Submits through the form; returns the new job's id."""
        await self.page.select_option("#job-name", name)
        for field in await self.page.locator("#job-args input").all():
            await field.fill("")
        for param, value in args.items():
            text = value if isinstance(value, str) else orjson.dumps(value).decode()
            await self.page.fill(f"#arg-{param}", text)
        return await self.submit_again()

    async def submit_again(self) -> str:
        """Submits the form as it stands (the same job and arguments again)."""
        async with self.page.expect_response(_is_submit) as answer:
            await self.page.click("#submit-button")
        response = await answer.value
        body: dict[str, Any] = await response.json()
        job_id: str = body["job_id"]
        await self.card(job_id).wait_for()
        return job_id

    def card(self, job_id: str) -> Locator:
        return self.page.locator(f'.job[data-job-id="{job_id}"]')

    async def wait_status(self, job_id: str, status: str, timeout: float = 15) -> None:
        selector = f'.job[data-job-id="{job_id}"][data-status="{status}"]'
        await self.page.locator(selector).wait_for(timeout=timeout * 1000)

    async def output(self, job_id: str) -> str:
        text: str = await self.card(job_id).locator(".output").text_content() or ""
        return text

    async def text(self, job_id: str, part: str) -> str:
        value: str = await self.card(job_id).locator(f".{part}").inner_text()
        return value

    async def percent(self, job_id: str) -> int | None:
        value = await self.card(job_id).locator(".bar").get_attribute("aria-valuenow")
        return None if value is None else int(value)

    async def connection(self) -> str:
        value: str = await self.page.locator("#connection").inner_text()
        return value

    async def wait_connection(self, text: str, timeout: float = 10) -> None:
        await self.page.locator("#connection", has_text=text).wait_for(timeout=timeout * 1000)

    async def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / name
        await self.page.screenshot(path=str(path), full_page=True)
        return path


def _is_submit(response: Response) -> bool:
    return response.request.method == "POST" and response.url.endswith("/jobs")
