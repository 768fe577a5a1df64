"""A job: an async function taking a `Progress` and the submitted JSON arguments as keywords,
and the options it was registered with."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Protocol

from shared.catalog import JobSpec
from shared.settings import Settings
from worker.arguments import Arguments
from worker.progress import Progress

__all__ = ["JobDefinition", "JobFunction"]

_KEYWORD_KINDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


class JobFunction(Protocol):
    async def __call__(self, progress: Progress, /, *args: Any, **kwargs: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class JobDefinition:
    """`max_tries` and `timeout_s` of None mean the settings' `max_tries` and `job_timeout_s`."""

    name: str
    function: JobFunction
    max_tries: int | None = None
    timeout_s: float | None = None
    retry_on: tuple[type[Exception], ...] = ()
    # What its parameters accept, read from their annotations once, at registration.
    arguments: Arguments = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.name or self.name != self.name.strip() or " " in self.name:
            raise ValueError(f"job name {self.name!r} must be non-empty, without spaces")
        if self.max_tries is not None and self.max_tries < 1:
            raise ValueError(f"{self.name}: max_tries must be >= 1")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ValueError(f"{self.name}: timeout_s must be > 0")
        if not all(isinstance(cls, type) and issubclass(cls, Exception) for cls in self.retry_on):
            raise TypeError(f"{self.name}: retry_on must hold Exception subclasses")
        _check_signature(self.name, self.function)
        object.__setattr__(self, "arguments", Arguments.of(self.name, self.function))

    def tries(self, settings: Settings) -> int:
        return settings.max_tries if self.max_tries is None else self.max_tries

    def timeout(self, settings: Settings) -> float:
        return settings.job_timeout_s if self.timeout_s is None else self.timeout_s

    def spec(self) -> JobSpec:
        """What the gateway checks submissions against."""
        parameters = _arguments(self.function)
        return JobSpec(
            name=self.name,
            params=[p.name for p in parameters if p.kind in _KEYWORD_KINDS],
            required=[
                p.name for p in parameters if p.kind in _KEYWORD_KINDS and p.default is p.empty
            ],
            accepts_any=any(p.kind is p.VAR_KEYWORD for p in parameters),
            doc=(inspect.getdoc(self.function) or "").partition("\n")[0],
            args_schema=self.arguments.schema,
        )


def _arguments(function: JobFunction) -> list[inspect.Parameter]:
    """The parameters after `progress`."""
    return list(inspect.signature(function).parameters.values())[1:]


def _check_signature(name: str, function: JobFunction) -> None:
    if not inspect.iscoroutinefunction(function):
        raise TypeError(f"{name}: a job must be an `async def` function")
    parameters = list(inspect.signature(function).parameters.values())
    if not parameters or parameters[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        raise TypeError(f"{name}: a job's first parameter receives its Progress")
    for parameter in parameters[1:]:
        if parameter.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.VAR_POSITIONAL):
            raise TypeError(f"{name}: arguments arrive by keyword; {parameter} cannot take them")
