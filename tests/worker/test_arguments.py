"""A job's arguments: the JSON Schema its annotations make (what the worker advertises), and
the submitted JSON converted to those types before the call, in a real worker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import annotated_types
import pytest
from pydantic import BaseModel, Field
from redis.asyncio import Redis
from typing_extensions import TypedDict

from shared.settings import Settings
from tests.worker_support import JobHarness, types
from worker.arguments import Arguments
from worker.progress import Progress
from worker.registry import JobRegistry


class Size(BaseModel):
    width: int
    height: int = 1


class Crop(TypedDict):
    top: int
    left: int


async def every_kind(  # type: ignore[no-untyped-def]
    progress: Progress,
    seconds: float,
    steps: int = 10,
    mode: Literal["fast", "best"] = "fast",
    tags: list[str] = [],  # noqa: B006 (pydantic copies a default for each call)
    crop: Crop | None = None,
    size: Size | None = None,
    tries: Annotated[int, Field(ge=1, le=5)] = 1,
    ratio: Annotated[float, annotated_types.Gt(0)] = 1.0,
    verbose: bool = False,
    anything=None,
    **labels: str,
) -> dict[str, Any]:
    """Uses every kind of annotation a job's argument may have."""
    return {
        "seconds": [type(seconds).__name__, seconds],
        "size": [type(size).__name__, size.width * size.height if size else None],
        "crop": crop,
        "tags": tags,
        "labels": labels,
        "anything": anything,
    }


def test_each_annotation_becomes_its_json_schema() -> None:
    schema = Arguments.of("test.every_kind", every_kind).schema

    assert schema == {
        "title": "test.every_kind",
        "type": "object",
        "properties": {
            "seconds": {"title": "Seconds", "type": "number"},
            "steps": {"title": "Steps", "type": "integer", "default": 10},
            "mode": {
                "title": "Mode",
                "enum": ["fast", "best"],
                "type": "string",
                "default": "fast",
            },
            "tags": {"title": "Tags", "type": "array", "items": {"type": "string"}, "default": []},
            "crop": {"anyOf": [{"$ref": "#/$defs/Crop"}, {"type": "null"}], "default": None},
            "size": {"anyOf": [{"$ref": "#/$defs/Size"}, {"type": "null"}], "default": None},
            "tries": {
                "title": "Tries",
                "type": "integer",
                "minimum": 1,
                "maximum": 5,
                "default": 1,
            },
            "ratio": {"title": "Ratio", "type": "number", "exclusiveMinimum": 0, "default": 1.0},
            "verbose": {"title": "Verbose", "type": "boolean", "default": False},
            "anything": {"title": "Anything", "default": None},
        },
        "required": ["seconds"],
        "additionalProperties": {"type": "string"},
        "$defs": {
            "Crop": {
                "title": "Crop",
                "type": "object",
                "properties": {
                    "top": {"title": "Top", "type": "integer"},
                    "left": {"title": "Left", "type": "integer"},
                },
                "required": ["top", "left"],
                "additionalProperties": True,
            },
            "Size": {
                "title": "Size",
                "type": "object",
                "properties": {
                    "width": {"title": "Width", "type": "integer"},
                    "height": {"title": "Height", "type": "integer", "default": 1},
                },
                "required": ["width"],
            },
        },
    }


async def untyped(progress: Progress, a, b=2, **rest):  # type: ignore[no-untyped-def]
    pass


def test_unannotated_parameters_accept_anything_and_kwargs_allow_more() -> None:
    schema = Arguments.of("test.untyped", untyped).schema

    assert schema == {
        "title": "test.untyped",
        "type": "object",
        "properties": {"a": {"title": "A"}, "b": {"title": "B", "default": 2}},
        "required": ["a"],
        "additionalProperties": True,
    }


async def named_like_model_attributes(
    progress: Progress, json: int, copy: bool = False, model_config: str = ""
) -> None:
    pass


def test_parameters_may_be_named_like_model_attributes() -> None:
    arguments = Arguments.of("test.names", named_like_model_attributes)

    assert list(arguments.schema["properties"]) == ["json", "copy", "model_config"]
    assert arguments.convert({"json": 3}) == {"json": 3, "copy": False, "model_config": ""}


class Opaque:
    pass


async def takes_opaque(progress: Progress, thing: Opaque) -> None:
    pass


async def names_the_unknown(progress: Progress, thing: NotDefinedAnywhere) -> None:  # type: ignore[name-defined]  # noqa: F821
    pass


@pytest.mark.parametrize(
    ("function", "complaint"),
    [
        (takes_opaque, "test.bad: its parameters have no JSON Schema"),
        (names_the_unknown, "test.bad: cannot read its annotations"),
    ],
)
def test_annotations_without_a_json_schema_are_refused_at_registration(
    function: Any, complaint: str
) -> None:
    with pytest.raises(TypeError, match=complaint):
        JobRegistry().job("test.bad")(function)


jobs = JobRegistry()
jobs.job("test.every_kind")(every_kind)


@pytest.fixture
async def harness(settings: Settings, redis: Redis) -> AsyncIterator[JobHarness]:
    async with JobHarness.open(settings, redis) as harness:
        await harness.start_worker(jobs)
        yield harness


async def test_the_job_receives_its_annotated_types(harness: JobHarness) -> None:
    job_id = await harness.submit(
        "test.every_kind",
        seconds=10,
        size={"width": 3, "height": 2},
        crop={"top": 1, "left": 2},
        tags=["a"],
        anything={"x": [1]},
        owner="me",
    )

    events = await harness.wait_until_ended(job_id)

    assert types(events) == ["queued", "started", "completed"]
    assert events[-1]["data"]["result"] == {
        "seconds": ["float", 10.0],
        "size": ["Size", 6],
        "crop": {"top": 1, "left": 2},
        "tags": ["a"],
        "labels": {"owner": "me"},
        "anything": {"x": [1]},
    }


async def test_args_that_reached_the_queue_unchecked_fail_the_job(harness: JobHarness) -> None:
    job_id = await harness.submit("test.every_kind", seconds="soon", tries=9)

    events = await harness.wait_until_ended(job_id)

    assert types(events) == ["queued", "started", "failed"]
    assert events[-1]["data"] == {
        "type": "InvalidArguments",
        "message": "seconds: Input should be a valid number, unable to parse string as a number; "
        "tries: Input should be less than or equal to 5",
    }
