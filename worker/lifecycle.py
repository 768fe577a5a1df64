"""The wrapper arq runs for every job: it announces the attempt, runs the job under its timeout
and turns the outcome into exactly one closing event.

| outcome                                    | closing event       | what arq is told        |
|--------------------------------------------|---------------------|-------------------------|
| the job returns                            | completed           | the result: finished    |
| it runs past its timeout                   | failed TimeoutError | JobTimeout: finished    |
| `Retry` or a `retry_on` error, tries left  | retrying            | `Retry(defer)`: rerun   |
| the same, no tries left                    | failed              | RetriesExhausted        |
| any other exception                        | failed              | the exception           |
| cancelled, `cancel_requested_at` is set    | cancelled           | CancelledError: aborted |
| cancelled otherwise (its worker stopping)  | retrying, delay 0   | CancelledError: rerun   |
| handed to a worker that is stopping        | none, not started   | RetryJob: rerun         |
| the stream had already ended               | none                | None: finished          |

arq's own limits stay out of the way: its timeout is ours plus a margin, so ours fires first and
the `failed` event is written; its `max_tries` is high, so arq never drops a job without
calling this wrapper (ours, per job, governs retryable errors). Events carry an exception's
type and message, never a traceback; arq logs the traceback in the worker's log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

import orjson
from arq import Retry
from arq.worker import Function, RetryJob, func

from shared.events import EventType
from shared.settings import Settings
from shared.state import CANCEL_REQUESTED
from worker.job import JobDefinition
from worker.progress import Progress
from worker.runtime import WorkerRuntime
from worker.writer import EventWriter, JobEnded

__all__ = [
    "ARQ_MAX_TRIES",
    "ARQ_TIMEOUT_MARGIN_S",
    "JobTimeout",
    "ResultNotSerializable",
    "RetriesExhausted",
    "arq_function",
    "result_for_event",
]

logger = logging.getLogger(__name__)

# arq drops a job past its own max_tries without calling this wrapper, so no event would say
# why; this high bound only ends a job rerun forever by workers that keep stopping.
ARQ_MAX_TRIES = 100
# arq's timeout for a job is ours plus this, so ours fires first and `failed` gets written.
ARQ_TIMEOUT_MARGIN_S = 10.0
# Writing the closing event of a cancelled job must end, or the worker could never stop.
CLOSING_WRITE_TIMEOUT_S = 5.0
MAX_MESSAGE_CHARS = 2_000


class JobTimeout(TimeoutError):
    """The job ran longer than its timeout: a failure, never retried."""


class ResultNotSerializable(TypeError):
    """The job returned something JSON cannot hold."""


class RetriesExhausted(RuntimeError):
    """A retryable error on the job's last allowed attempt."""


def arq_function(definition: JobDefinition, settings: Settings) -> Function:
    """The arq function that runs `definition`; arq knows it by the job's name."""

    async def run_attempt(ctx: dict[Any, Any], *args: Any, **kwargs: Any) -> Any:
        runtime = WorkerRuntime.of(ctx)
        if runtime.stopping.is_set():
            raise RetryJob  # back to the queue, untouched, for a worker that is not stopping
        attempt = Attempt(definition, runtime, ctx["job_id"], ctx["job_try"])
        return await attempt.run(args, kwargs)

    run_attempt.__qualname__ = f"run_attempt[{definition.name}]"
    return func(
        run_attempt,
        name=definition.name,
        timeout=definition.timeout(settings) + ARQ_TIMEOUT_MARGIN_S,
        max_tries=ARQ_MAX_TRIES,
    )


def result_for_event(value: Any, max_bytes: int) -> Any:
    """The job's return value as the `completed` event carries it (plain JSON values).

    A result whose encoding is larger than `max_bytes` becomes `{"truncated": true, "bytes": n}`:
    a JSON value cut short would be a different value, while this marker cannot be mistaken
    for the result. Jobs with large outputs should store them elsewhere and return a reference.
    """
    try:
        encoded = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except TypeError as exc:
        raise ResultNotSerializable(f"the job's result is not JSON-able: {exc}") from None
    if len(encoded) > max_bytes:
        return {"truncated": True, "bytes": len(encoded)}
    return orjson.loads(encoded)


class Attempt:
    """One run of one job: `started`, the job itself, and one closing event."""

    def __init__(
        self, definition: JobDefinition, runtime: WorkerRuntime, job_id: str, number: int
    ) -> None:
        self._definition = definition
        self._runtime = runtime
        self._settings = runtime.settings
        self._job_id = job_id
        self._number = number
        self._writer = EventWriter(
            runtime.publisher,
            job_id,
            number,
            progress_interval_s=runtime.settings.progress_interval_s,
            heartbeat_s=runtime.settings.heartbeat_s,
        )

    async def run(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            await self._writer.write(
                EventType.STARTED, {"attempt": self._number, "worker": self._runtime.worker_id}
            )
            self._writer.start_heartbeats()
            return await self._run_job(args, kwargs)
        except JobEnded as ended:
            await self._writer.stop()
            logger.info("%s: stopped, %s", self._definition.name, ended)
            return None

    async def _run_job(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            value = await self._call(args, kwargs)
        except asyncio.CancelledError:
            await _despite_cancellation(self._close_cancelled())
            raise
        except JobEnded:
            raise
        except JobTimeout as exc:
            await self._writer.finish(EventType.FAILED, _failure(exc))
            raise
        except Exception as exc:
            if self._is_retryable(exc):
                raise await self._retry_or_give_up(exc) from exc
            await self._writer.finish(EventType.FAILED, _failure(exc))
            raise
        return await self._complete(value)

    async def _call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        timeout_s = self._definition.timeout(self._settings)
        progress = Progress(self._writer)
        try:
            async with asyncio.timeout(timeout_s) as scope:
                return await self._definition.function(progress, *args, **kwargs)
        except TimeoutError:
            if scope.expired():
                raise JobTimeout(f"job exceeded {timeout_s:g} s") from None
            raise

    def _is_retryable(self, exc: Exception) -> bool:
        return isinstance(exc, (Retry, *self._definition.retry_on))

    async def _retry_or_give_up(self, exc: Exception) -> Exception:
        """Writes `retrying` and returns the Retry for arq, or writes `failed` when none is left."""
        failure = _failure(exc)
        tries = self._definition.tries(self._settings)
        if self._number >= tries:
            plural = "" if self._number == 1 else "s"
            failure["message"] += f" (gave up after {self._number} attempt{plural})"
            await self._writer.finish(EventType.FAILED, failure)
            return RetriesExhausted(f"{self._definition.name}: {tries} attempts failed")
        delay_s = _requested_delay_s(exc, self._settings.retry_delay_s)
        await self._writer.finish(
            EventType.RETRYING,
            {"attempt": self._number + 1, "delay_s": delay_s, "reason": _reason(failure)},
        )
        return Retry(defer=delay_s)

    async def _complete(self, value: Any) -> Any:
        try:
            result = result_for_event(value, self._settings.max_result_bytes)
        except ResultNotSerializable as exc:
            await self._writer.finish(EventType.FAILED, _failure(exc))
            raise
        await self._writer.finish(EventType.COMPLETED, {"result": result})
        return result

    async def _close_cancelled(self) -> None:
        """A cancel request ends the job; anything else cancelling it is its worker stopping."""
        data: dict[str, Any]
        if await self._cancel_requested():
            event_type, data = EventType.CANCELLED, {"reason": "cancelled by request"}
        elif self._number >= ARQ_MAX_TRIES:
            # arq will not call this job again, so this attempt has to end it.
            event_type = EventType.FAILED
            data = {"type": "WorkerShutdown", "message": f"interrupted on attempt {self._number}"}
        else:
            event_type = EventType.RETRYING
            data = {"attempt": self._number + 1, "delay_s": 0, "reason": "worker shutting down"}
        with contextlib.suppress(JobEnded):
            await self._writer.finish(event_type, data)

    async def _cancel_requested(self) -> bool:
        state_key = self._runtime.keys.state(self._job_id)
        requested = await self._runtime.redis.hexists(state_key, CANCEL_REQUESTED)  # type: ignore[misc]
        return bool(requested)


async def _despite_cancellation(closing: Coroutine[Any, Any, None]) -> None:
    """Runs `closing` to its end, within a bound, although the calling task is being cancelled.

    A fresh task does not inherit the pending cancellation; if the caller is cancelled again,
    the task still finishes and its failure, if any, is logged.
    """
    task = asyncio.create_task(asyncio.wait_for(closing, CLOSING_WRITE_TIMEOUT_S))
    task.add_done_callback(_log_closing_failure)
    with contextlib.suppress(Exception):
        await asyncio.shield(task)


def _log_closing_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        logger.warning("writing the closing event of a cancelled job failed: %r", exc)


def _failure(exc: BaseException) -> dict[str, Any]:
    """The `failed` event's data: what went wrong, in words a client may see."""
    if isinstance(exc, Retry):
        cause = exc.__cause__
        if cause is None:
            return {"type": "Retry", "message": "the job asked to be retried"}
        exc = cause
    error_type = "TimeoutError" if isinstance(exc, JobTimeout) else type(exc).__name__
    return {"type": error_type, "message": str(exc)[:MAX_MESSAGE_CHARS]}


def _reason(failure: dict[str, Any]) -> str:
    return f"{failure['type']}: {failure['message']}" if failure["message"] else failure["type"]


def _requested_delay_s(exc: Exception, default_s: float) -> float:
    if isinstance(exc, Retry) and exc.defer_score is not None:
        return exc.defer_score / 1000
    return default_s
