"""Registering jobs: the spec the gateway checks submissions against, one job per name, and the
arq functions that run them (what a job definition accepts: tests/worker/test_job.py)."""

from __future__ import annotations

from typing import Any

import pytest

from shared.settings import Settings
from worker.lifecycle import ARQ_MAX_TRIES, ARQ_TIMEOUT_MARGIN_S
from worker.progress import Progress
from worker.registry import JobRegistry


async def resize(
    progress: Progress, path: str, width: int = 100, *, height: int, quality: float = 0.8
) -> None:
    """Resizes one image.

    More detail that the catalog leaves out.
    """


async def anything(progress: Progress, name: str, **options: Any) -> None:
    pass


def test_spec_lists_keyword_params_after_progress() -> None:
    jobs = JobRegistry()
    jobs.job("images.resize")(resize)
    jobs.job("anything")(anything)

    assert jobs.specs() == [
        {
            "name": "images.resize",
            "params": ["path", "width", "height", "quality"],
            "required": ["path", "height"],
            "accepts_any": False,
            "doc": "Resizes one image.",
            "args_schema": {
                "title": "images.resize",
                "type": "object",
                "properties": {
                    "path": {"title": "Path", "type": "string"},
                    "width": {"title": "Width", "type": "integer", "default": 100},
                    "height": {"title": "Height", "type": "integer"},
                    "quality": {"title": "Quality", "type": "number", "default": 0.8},
                },
                "required": ["path", "height"],
                "additionalProperties": False,
            },
        },
        {
            "name": "anything",
            "params": ["name"],
            "required": ["name"],
            "accepts_any": True,
            "doc": "",
            "args_schema": {
                "title": "anything",
                "type": "object",
                "properties": {"name": {"title": "Name", "type": "string"}},
                "required": ["name"],
                "additionalProperties": True,
            },
        },
    ]


def test_decorator_returns_the_function_itself() -> None:
    jobs = JobRegistry()

    assert jobs.job("images.resize")(resize) is resize
    assert "images.resize" in jobs
    assert len(jobs) == 1


def test_a_name_is_registered_once() -> None:
    jobs = JobRegistry()
    jobs.job("images.resize")(resize)

    with pytest.raises(ValueError, match="already registered"):
        jobs.job("images.resize")(anything)


def test_arq_functions_are_named_after_the_jobs(settings: Settings) -> None:
    jobs = JobRegistry()
    jobs.job("images.resize", timeout_s=30)(resize)
    jobs.job("anything")(anything)

    functions = jobs.functions(settings)

    assert [function.name for function in functions] == ["images.resize", "anything"]
    assert [function.timeout_s for function in functions] == [
        30 + 2 * settings.publish_retry_s + ARQ_TIMEOUT_MARGIN_S,
        settings.job_timeout_s + 2 * settings.publish_retry_s + ARQ_TIMEOUT_MARGIN_S,
    ]
    assert {function.max_tries for function in functions} == {ARQ_MAX_TRIES}
