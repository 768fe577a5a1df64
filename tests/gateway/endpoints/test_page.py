"""What the gateway serves for the web page: `/`, its static files and `GET /catalog`."""

from __future__ import annotations

import re

from redis.asyncio import Redis

from gateway.endpoints.page import STATIC_DIR
from shared.catalog import JobSpec, advertise
from shared.keys import Keys
from shared.settings import Settings
from tests.conftest import Gateway, StartGateway
from tests.web_support import wait_for_catalog


async def test_index_is_the_page_with_a_strict_content_policy(stack: Gateway) -> None:
    async with stack.client() as client:
        response = await client.get("/")

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "<title>Jobwire</title>" in response.text
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_every_file_the_page_loads_is_served_from_the_gateway(stack: Gateway) -> None:
    async with stack.client() as client:
        page = (await client.get("/")).text
        linked = re.findall(r'(?:src|href)="(/[^"]+)"', page)
        modules = [
            f"/static/js/{name}"
            for path in STATIC_DIR.joinpath("js").glob("*.js")
            for name in re.findall(r'from "\./([\w.]+)"', path.read_text())
        ]
        answers = {path: await client.get(path) for path in {*linked, *modules}}

    assert "/static/app.css" in answers
    assert "/static/js/main.js" in answers
    for path, response in answers.items():
        assert response.status_code == 200, path
        expected = "text/css" if path.endswith(".css") else "text/javascript"
        assert response.headers["content-type"].startswith(expected), path


async def test_page_names_no_other_origin() -> None:
    for path in STATIC_DIR.rglob("*"):
        if path.is_file():
            assert not re.search(r"https?://", path.read_text()), path


async def test_static_files_stay_inside_their_folder(stack: Gateway) -> None:
    async with stack.client() as client:
        outside = await client.get("/static/..%2Fpage.py")
        missing = await client.get("/static/nothing.js")

    assert outside.status_code == 404
    assert missing.status_code == 404


async def test_catalog_lists_the_advertised_jobs_by_name(stack: Gateway) -> None:
    await wait_for_catalog(stack)
    async with stack.client() as client:
        response = await client.get("/catalog")

    assert response.status_code == 200
    jobs = response.json()["jobs"]
    names = [job["name"] for job in jobs]
    assert names == sorted(names)
    assert "demo.tokens" in names
    quiet = next(job for job in jobs if job["name"] == "demo.quiet")
    assert quiet == {
        "name": "demo.quiet",
        "params": ["seconds"],
        "required": ["seconds"],
        "accepts_any": False,
        "doc": quiet["doc"],
        "args_schema": {
            "title": "demo.quiet",
            "type": "object",
            "properties": {
                "seconds": {"title": "Seconds", "type": "number", "minimum": 0, "maximum": 86400}
            },
            "required": ["seconds"],
            "additionalProperties": False,
        },
    }
    assert quiet["doc"].startswith("Works for `seconds`")


async def test_a_spec_without_a_schema_is_served_with_the_one_its_names_make(
    start_gateway: StartGateway, redis: Redis, settings: Settings
) -> None:
    """A worker of an earlier release advertises names only; the page and the CLI still get a
    schema, and the gateway checks by it."""
    old = JobSpec(name="old.job", params=["a", "b"], required=["a"], accepts_any=False, doc="")
    await advertise(redis, Keys(settings.key_prefix), [old])
    gateway = await start_gateway()
    async with gateway.client() as client:
        response = await client.get("/catalog")

    assert response.json() == {
        "jobs": [
            {
                **old,
                "args_schema": {
                    "type": "object",
                    "properties": {"a": {}, "b": {}},
                    "required": ["a"],
                    "additionalProperties": False,
                },
            }
        ]
    }


async def test_catalog_is_empty_before_any_worker_started(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    async with gateway.client() as client:
        response = await client.get("/catalog")

    assert response.status_code == 200
    assert response.json() == {"jobs": []}
