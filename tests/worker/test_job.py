"""`JobDefinition`: the options a job is registered with, their defaults from the settings,
and the functions and options that cannot make a job."""

from __future__ import annotations

from typing import Any

import pytest

from shared.settings import Settings
from worker.job import JobDefinition
from worker.progress import Progress


async def resize(progress: Progress, path: str, width: int = 100) -> None:
    pass


def test_job_options_default_to_the_settings(settings: Settings) -> None:
    default = JobDefinition("a", resize)
    own = JobDefinition("b", resize, max_tries=7, timeout_s=2.5)

    assert (default.tries(settings), default.timeout(settings)) == (
        settings.max_tries,
        settings.job_timeout_s,
    )
    assert (own.tries(settings), own.timeout(settings)) == (7, 2.5)


def not_async(progress: Progress) -> None:
    pass


async def no_progress() -> None:
    pass


async def takes_varargs(progress: Progress, *values: int) -> None:
    pass


async def positional_only(progress: Progress, value: int, /) -> None:
    pass


@pytest.mark.parametrize(
    ("function", "complaint"),
    [
        (not_async, "async def"),
        (no_progress, "first parameter"),
        (takes_varargs, "by keyword"),
        (positional_only, "by keyword"),
    ],
)
def test_functions_that_cannot_be_jobs_are_refused(function: Any, complaint: str) -> None:
    with pytest.raises(TypeError, match=complaint):
        JobDefinition("bad", function)


@pytest.mark.parametrize(
    "options",
    [
        {"name": ""},
        {"name": "has space"},
        {"max_tries": 0},
        {"timeout_s": 0},
        {"retry_on": (KeyboardInterrupt,)},
    ],
)
def test_bad_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises((ValueError, TypeError)):
        JobDefinition(**{"name": "ok", "function": resize, **options})
