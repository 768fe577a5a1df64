"""`JobRegistry`: the named jobs a worker can run.

```python
jobs = JobRegistry()

@jobs.job("reports.build", timeout_s=600, retry_on=(ConnectionError,))
async def build_report(progress: Progress, month: str, region: str = "all") -> dict[str, int]:
    \"\"\"Builds the monthly report.\"\"\"
    ...
```
The decorator returns the function unchanged, so it can still be called directly in tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

from arq.worker import Function

from shared.catalog import JobSpec
from shared.settings import Settings
from worker.job import JobDefinition, JobFunction
from worker.lifecycle import arq_function

__all__ = ["JobRegistry"]

F = TypeVar("F", bound=JobFunction)


class JobRegistry:
    def __init__(self) -> None:
        self._definitions: dict[str, JobDefinition] = {}

    def job(
        self,
        name: str,
        *,
        max_tries: int | None = None,
        timeout_s: float | None = None,
        retry_on: tuple[type[Exception], ...] = (),
    ) -> Callable[[F], F]:
        """Registers a job under `name`, the name clients submit it by.

        `max_tries` (default: the `max_tries` setting) bounds the attempts a job gets when it
        raises `arq.Retry` or one of the `retry_on` errors; any other error fails it at once.
        `timeout_s` (default: the `job_timeout_s` setting) bounds each attempt.
        """

        def register(function: F) -> F:
            self.add(JobDefinition(name, function, max_tries, timeout_s, retry_on))
            return function

        return register

    def add(self, definition: JobDefinition) -> None:
        if definition.name in self._definitions:
            raise ValueError(f"a job named {definition.name!r} is already registered")
        self._definitions[definition.name] = definition

    def __iter__(self) -> Iterator[JobDefinition]:
        return iter(self._definitions.values())

    def __len__(self) -> int:
        return len(self._definitions)

    def __contains__(self, name: object) -> bool:
        return name in self._definitions

    def specs(self) -> list[JobSpec]:
        return [definition.spec() for definition in self]

    def functions(self, settings: Settings) -> list[Function]:
        """The arq functions running these jobs inside the lifecycle."""
        return [arq_function(definition, settings) for definition in self]
