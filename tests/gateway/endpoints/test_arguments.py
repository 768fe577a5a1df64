"""`POST /jobs` checks `args` against the JSON Schema the job advertises, before anything is
written: one `{"loc", "msg"}` per bad field, every bad field at once, nothing left in Redis."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, Field
from redis.asyncio import Redis

from gateway.endpoints.arguments import check_args
from shared.catalog import JobSpec, advertise
from shared.keys import Keys
from shared.settings import Settings
from tests.conftest import Gateway, StartGateway
from worker import demo
from worker.progress import Progress
from worker.registry import JobRegistry

pytestmark = pytest.mark.timeout(60)


class Size(BaseModel):
    width: Annotated[int, Field(gt=0)]
    height: Annotated[int, Field(gt=0)]


async def render(
    progress: Progress,
    size: Size,
    mode: Literal["fast", "best"] = "fast",
    tags: tuple[str, ...] = (),
) -> None:
    pass


typed = JobRegistry()
typed.job("test.render")(render)


@pytest.fixture
async def gateway(start_gateway: StartGateway, settings: Settings, redis: Redis) -> Gateway:
    """A gateway whose catalog holds the demo jobs and `test.render`, and no worker."""
    await advertise(redis, Keys(settings.key_prefix), [*demo.jobs.specs(), *typed.specs()])
    return await start_gateway()


REFUSALS: list[tuple[str, dict[str, Any], list[dict[str, Any]]]] = [
    (
        "demo.countdown",
        {"seconds": "ten"},
        [{"loc": ["args", "seconds"], "msg": "'ten' is not of type 'number'"}],
    ),
    (
        "demo.countdown",
        {"seconds": -5},
        [{"loc": ["args", "seconds"], "msg": "-5 is less than the minimum of 0"}],
    ),
    (
        "demo.countdown",
        {"steps": 2.5},
        [{"loc": ["args", "steps"], "msg": "2.5 is not of type 'integer'"}],
    ),
    (
        "demo.countdown",
        {"second": 1},
        [
            {
                "loc": ["args", "second"],
                "msg": "unknown argument: this job takes seconds, steps",
            }
        ],
    ),
    (
        "demo.quiet",
        {},
        [{"loc": ["args", "seconds"], "msg": "required, but missing"}],
    ),
    (
        "test.render",
        {"size": {"width": 0, "height": "x"}, "mode": "slow", "tags": ["a", 2]},
        [
            {"loc": ["args", "mode"], "msg": "'slow' is not one of ['fast', 'best']"},
            {"loc": ["args", "size", "height"], "msg": "'x' is not of type 'integer'"},
            {
                "loc": ["args", "size", "width"],
                "msg": "0 is less than or equal to the minimum of 0",
            },
            {"loc": ["args", "tags", 1], "msg": "2 is not of type 'string'"},
        ],
    ),
]


@pytest.mark.parametrize(("name", "args", "detail"), REFUSALS)
async def test_bad_args_are_refused_field_by_field_and_nothing_is_written(
    gateway: Gateway,
    redis: Redis,
    settings: Settings,
    name: str,
    args: dict[str, Any],
    detail: list[dict[str, Any]],
) -> None:
    job_id = f"job-{uuid.uuid4().hex}"
    before = set(await redis.keys("*"))
    async with gateway.client() as client:
        response = await client.post("/jobs", json={"name": name, "args": args, "job_id": job_id})

    assert response.status_code == 422
    assert response.json() == {"error": "invalid_args", "detail": detail}
    assert set(await redis.keys("*")) <= before  # no state hash, no stream, no arq job
    assert await redis.zcard(settings.queue_name) == 0


async def test_every_bad_field_is_listed_at_once_reserved_names_too(gateway: Gateway) -> None:
    args = {"seconds": "soon", "steps": 0, "extra": True, "_defer_by": 5}
    async with gateway.client() as client:
        response = await client.post("/jobs", json={"name": "demo.countdown", "args": args})

    assert response.status_code == 422
    assert response.json()["detail"] == [
        {
            "loc": ["args", "_defer_by"],
            "msg": "names starting with '_' are reserved for the job queue's options",
        },
        {"loc": ["args", "extra"], "msg": "unknown argument: this job takes seconds, steps"},
        {"loc": ["args", "seconds"], "msg": "'soon' is not of type 'number'"},
        {"loc": ["args", "steps"], "msg": "0 is less than the minimum of 1"},
    ]


async def test_args_the_schema_takes_are_queued_as_sent(gateway: Gateway) -> None:
    args = {"size": {"width": 3, "height": 2}, "mode": "best", "tags": []}
    async with gateway.client() as client:
        response = await client.post("/jobs", json={"name": "test.render", "args": args})
        state = await client.get(response.json()["status_url"])

    assert response.status_code == 202, response.text
    assert state.json()["args"] == args


def test_a_schema_no_validator_can_use_falls_back_to_the_names() -> None:
    spec = JobSpec(
        name="broken",
        params=["a"],
        required=["a"],
        accepts_any=False,
        doc="",
        args_schema={"type": "object", "properties": {"a": {"type": "no-such-type"}}},
    )

    assert check_args(spec, {"a": "anything"}) == []
    assert check_args(spec, {"b": 1}) == [
        {"loc": ["args", "a"], "msg": "required, but missing"},
        {"loc": ["args", "b"], "msg": "unknown argument: this job takes a"},
    ]
