"""`key=value` read by the job's JSON Schema: numbers, booleans, lists and text where the schema
says so (without a schema: tests/jobwire/client/test_commands.py)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, Field

from jobwire.client.assignments import UsageError, read_arguments, split_assignments
from worker.arguments import Arguments
from worker.progress import Progress


class Size(BaseModel):
    width: int


async def typed(  # type: ignore[no-untyped-def]
    progress: Progress,
    seconds: float = 1,
    steps: Annotated[int, Field(ge=1)] = 1,
    text: str = "",
    flag: bool = False,
    tags: list[str] | None = None,
    counts: tuple[int, ...] = (),
    mode: Literal["fast", "best"] = "fast",
    either: int | str = 0,
    maybe: str | None = None,
    size: Size | None = None,
    anything=None,
    **extra: Any,
) -> None:
    pass


SCHEMA = Arguments.of("test.typed", typed).schema


@pytest.mark.parametrize(
    ("item", "value"),
    [
        ("seconds=10", 10),
        ("seconds=0.5", 0.5),
        ("seconds=ten", "ten"),  # sent as written: the gateway's 422 names it
        ("steps=3", 3),
        ("text=10", "10"),
        ("text=true", "true"),
        ('text="quoted"', '"quoted"'),
        ("text=a,b", "a,b"),
        ("text=", ""),
        ("flag=true", True),
        ("flag=false", False),
        ("tags=a,b", ["a", "b"]),
        ("tags=a, b ,c", ["a", "b", "c"]),
        ("tags=1,2", ["1", "2"]),
        ('tags=["x,y"]', ["x,y"]),
        ("tags=", []),
        ("tags=null", None),
        ("counts=1,2", [1, 2]),
        ("mode=best", "best"),
        ("either=10", 10),
        ("either=ten", "ten"),
        ("maybe=null", None),
        ("maybe=hi", "hi"),
        ('size={"width": 2}', {"width": 2}),
        ("anything=[1]", [1]),
        ("anything=hello", "hello"),
        ("unknown=5", 5),
        ("unknown=NaN", "NaN"),
    ],
)
def test_each_value_is_read_as_its_schema_says(item: str, value: Any) -> None:
    assert read_arguments(split_assignments([item]), SCHEMA) == {item.partition("=")[0]: value}


@pytest.mark.parametrize(
    ("items", "complaint"),
    [(["seconds"], "arguments are key=value"), (["a=1", "a=2"], "given twice")],
)
def test_malformed_assignments_are_usage_errors(items: list[str], complaint: str) -> None:
    with pytest.raises(UsageError, match=complaint):
        split_assignments(items)
