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

arq's own limits stay out of the way: its timeout is ours plus the publish retry budget of
`started` and of the closing event plus a margin (`arq_timeout_s`), so ours fires first and the
`failed` event is written; its `max_tries` is high, so arq never drops a job without calling
this wrapper (ours, per job, governs retryable errors). Events carry an exception's type and
message, never a traceback; arq logs the traceback in the worker's log.

A worker killed outright (SIGKILL, OOM, lost host) writes nothing: arq runs the job again, as
the next attempt, once the job's in-progress key expires — `arq_timeout_s` of the worker's
longest job plus arq's own 10 s after the attempt began, so `JOBWIRE_JOB_TIMEOUT_S` (or a job's
`timeout_s`) is what controls how soon.

A closing event Redis does not take within `JOBWIRE_PUBLISH_RETRY_S` is logged as an error by
the writer, and arq is told the job's own outcome all the same: a completed job is not rerun
for it (unless arq cannot record that outcome either, as when one Redis holds both).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from typing import Any

import orjson
from arq import Retry
from arq.worker import Function, RetryJob, func
from redis.exceptions import RedisError

from shared.events import EventType, truncation_marker
from shared.outcomes import count_outcome
from shared.settings import Settings
from shared.state import CANCEL_REQUESTED
from worker.job import JobDefinition
from worker.metrics import OUTCOMES
from worker.progress import Progress
from worker.runtime import WorkerRuntime
from worker.writer import EventNotStored, EventWriter, JobEnded

__all__ = [
    "ARQ_MAX_TRIES",
    "ARQ_TIMEOUT_MARGIN_S",
    "CLOSING_WRITE_TIMEOUT_S",
    "JobTimeout",
    "ResultNotSerializable",
    "RetriesExhausted",
    "arq_function",
    "arq_timeout_s",
    "result_for_event",
]

logger = logging.getLogger(__name__)

# arq drops a job past its own max_tries without calling this wrapper, so no event would say
# why; this high bound only ends a job rerun forever by workers that keep stopping.
ARQ_MAX_TRIES = 100
# On top of our timeout and the retry budgets, arq's timeout leaves this much, so ours fires
# first and `failed` gets written: it covers a background write holding the writer's lock and
# a last try overrunning its deadline (each bounded by writer.ATTEMPT_FLOOR_S).
ARQ_TIMEOUT_MARGIN_S = 5.0
# Writing the closing event of a job cancelled because its worker stops must end, or the worker
# could never stop; a job cancelled by request gets the publish retry budget on top.
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
        with runtime.workload.job():
            return await attempt.run(args, kwargs)

    run_attempt.__qualname__ = f"run_attempt[{definition.name}]"
    return func(
        run_attempt,
        name=definition.name,
        timeout=arq_timeout_s(definition.timeout(settings), settings),
        max_tries=ARQ_MAX_TRIES,
    )


def arq_timeout_s(job_timeout_s: float, settings: Settings) -> float:
    """arq's timeout for a job whose own is `job_timeout_s`: room for `started` and the closing
    event to be retried for their whole budget after ours fires."""
    return job_timeout_s + 2 * settings.publish_retry_s + ARQ_TIMEOUT_MARGIN_S


def result_for_event(value: Any, max_bytes: int) -> Any:
    """The job's return value as the `completed` event carries it (plain JSON values).

    A result whose encoding is larger than `max_bytes` becomes `{"truncated": true, "bytes": n}`
    (`shared.events.truncation_marker`, which also stands for any event's data over
    JOBWIRE_MAX_EVENT_BYTES). Jobs with large outputs should store them elsewhere and return a
    reference.
    """
    try:
        encoded = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except TypeError as exc:
        raise ResultNotSerializable(f"the job's result is not JSON-able: {exc}") from None
    if len(encoded) > max_bytes:
        return truncation_marker(len(encoded))
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
        self._started_at = time.monotonic()
        self._writer = EventWriter(
            runtime.publisher,
            job_id,
            number,
            progress_interval_s=runtime.settings.progress_interval_s,
            heartbeat_s=runtime.settings.heartbeat_s,
            publish_retry_s=runtime.settings.publish_retry_s,
            max_event_bytes=runtime.settings.max_event_bytes,
            metrics=runtime.metrics,
        )

    async def run(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            await self._writer.write(
                EventType.STARTED, {"attempt": self._number, "worker": self._runtime.worker_id}
            )
            self._started_at = time.monotonic()
            self._runtime.metrics.jobs_started.labels(self._definition.name).inc()
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
            await _despite_cancellation(self._close_cancelled(), self._closing_timeout_s())
            raise
        except JobEnded:
            raise
        except JobTimeout as exc:
            await self._close(EventType.FAILED, _failure(exc))
            raise
        except Exception as exc:
            if self._is_retryable(exc):
                raise await self._retry_or_give_up(exc) from exc
            await self._close(EventType.FAILED, _failure(exc))
            raise
        return await self._complete(value)

    async def _call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        timeout_s = self._definition.timeout(self._settings)
        progress = Progress(self._writer)
        # The submitted JSON, of the types the job's annotations name (InvalidArguments: failed).
        kwargs = self._definition.arguments.convert(kwargs)
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
            await self._close(EventType.FAILED, failure)
            return RetriesExhausted(f"{self._definition.name}: {tries} attempts failed")
        delay_s = _requested_delay_s(exc, self._settings.retry_delay_s)
        await self._close(
            EventType.RETRYING,
            {"attempt": self._number + 1, "delay_s": delay_s, "reason": _reason(failure)},
        )
        return Retry(defer=delay_s)

    async def _complete(self, value: Any) -> Any:
        try:
            result = result_for_event(value, self._settings.max_result_bytes)
        except ResultNotSerializable as exc:
            await self._close(EventType.FAILED, _failure(exc))
            raise
        await self._close(EventType.COMPLETED, {"result": result})
        return result

    async def _close(self, event_type: EventType, data: dict[str, Any]) -> None:
        """Writes the attempt's closing event; one Redis would not take is logged, not raised,
        so the outcome arq records stays the job's own."""
        run_time_s = time.monotonic() - self._started_at
        self._runtime.metrics.ended(self._definition.name, event_type, run_time_s)
        # Counted first, so whoever sees the closing event finds it counted too.
        await self._count_outcome(event_type)
        with contextlib.suppress(EventNotStored):
            await self._writer.finish(event_type, data)

    async def _count_outcome(self, event_type: EventType) -> None:
        """The deployment-wide count; a count Redis would not take is not worth failing for."""
        outcome = OUTCOMES.get(event_type)
        if outcome is None:
            return
        runtime = self._runtime
        try:
            await count_outcome(runtime.redis, runtime.keys, self._definition.name, outcome)
        except (RedisError, OSError) as exc:
            logger.debug("counting the outcome of %s failed: %r", self._job_id, exc)

    def _closing_timeout_s(self) -> float:
        if self._runtime.stopping.is_set():
            return CLOSING_WRITE_TIMEOUT_S
        return CLOSING_WRITE_TIMEOUT_S + self._settings.publish_retry_s

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
            await self._close(event_type, data)

    async def _cancel_requested(self) -> bool:
        """Whether the state hash holds a cancel request; when Redis cannot say, a job of a
        worker that is not stopping can only have been cancelled by request."""
        state_key = self._runtime.keys.state(self._job_id)
        try:
            requested = await self._runtime.redis.hexists(state_key, CANCEL_REQUESTED)  # type: ignore[misc]
        except (RedisError, OSError):
            return not self._runtime.stopping.is_set()
        return bool(requested)


async def _despite_cancellation(closing: Coroutine[Any, Any, None], timeout_s: float) -> None:
    """Runs `closing` to its end, within `timeout_s`, although the calling task is being
    cancelled.

    A fresh task does not inherit the pending cancellation; if the caller is cancelled again,
    the task still finishes and its failure, if any, is logged.
    """
    task = asyncio.create_task(asyncio.wait_for(closing, timeout_s))
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
