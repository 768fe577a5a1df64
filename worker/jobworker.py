"""`JobWorker`: arq's Worker with a stop that lets jobs finish, then interrupts them — never a
Redis round trip — and a poll loop that rides out a Redis restart.

arq 0.28 stops by cancelling its main task and its `run_job` tasks wherever they are. Caught
inside a Redis pipeline's cleanup, a cancellation leaks the pipeline's connection; caught while
a `run_job` records its outcome under `asyncio.shield`, it raises out of `close()` and leaves
that write running while the pool closes; caught before the job began, it leaves the job's
in-progress key behind, so no worker reruns the job until that key expires.

This worker stops in steps instead:

1. it takes no new job, and is marked stopping, so a job handed to it from now on goes straight
   back to the queue (see `worker.lifecycle`);
2. running jobs get `shutdown_grace_s` to finish on their own, while the poll loop keeps
   serving cancel requests;
3. the jobs still running are cancelled: each writes its closing event (`retrying`, "worker
   shutting down") and goes back to the queue; `cancel_running_jobs()` skips the wait;
4. the poll loop stops at its next safe point: at once if it is waiting for the next poll,
   else when the current poll (or start-up) is done;
5. `close()` waits, up to `STOP_GRACE_S`, for the poll loop to end and for arq to record every
   job's outcome, then runs the shutdown hook and closes the pool with `aclose()` (arq calls
   redis-py's deprecated `close()`).

Cancelling the task running `async_run()` starts the same stop.

A poll that fails because Redis is unreachable is logged once and retried with backoff; arq
would otherwise end the worker (and leak a job slot per failed start, see `start_jobs`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from arq.worker import Worker
from redis.exceptions import RedisError

from shared.logs import JOB_ID, log_context
from worker.runtime import WorkerRuntime

__all__ = ["STOP_GRACE_S", "JobWorker"]

logger = logging.getLogger(__name__)

# Jobs write their closing event within lifecycle.CLOSING_WRITE_TIMEOUT_S and arq's start-up
# gives up on an unreachable Redis sooner; this bounds anything that ignores its stop.
STOP_GRACE_S = 15.0
# After a failed poll the next one waits this long, doubling up to the cap, so an outage is
# not met with a poll (and a log line) every `poll_delay`.
_FIRST_POLL_BACKOFF_S = 0.1
_MAX_POLL_BACKOFF_S = 2.0


class JobWorker(Worker):
    _stop_requested = False
    _polls_end = False  # the poll loop stops at its next safe point
    _looping = False  # start-up is over: the poll loop runs
    _polling = False  # a poll is under way
    _poll_failures = 0  # polls failed in a row

    def __init__(self, *args: Any, shutdown_grace_s: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._shutdown_grace_s = shutdown_grace_s
        self._draining: asyncio.Task[None] | None = None

    async def async_run(self) -> None:
        self.main_task = self.loop.create_task(self.main())
        try:
            await asyncio.shield(self.main_task)
        except asyncio.CancelledError:
            if not self.main_task.done():
                self.handle_sig(signal.SIGUSR1)
            raise

    def handle_sig(self, signum: signal.Signals) -> None:
        """Starts the stop; also the SIGINT/SIGTERM handler when the worker handles signals."""
        if self._stop_requested:
            return
        self._stop_requested = True
        running = len(self.job_tasks)
        logger.info(
            "stopping on %s: %d running jobs get %g s to finish, then go back to the queue",
            signal.Signals(signum).name,
            running,
            self._shutdown_grace_s if running else 0,
        )
        self.allow_pick_jobs = False
        runtime = WorkerRuntime.find(self.ctx)
        if runtime is not None:
            runtime.stopping.set()
        self._draining = self.loop.create_task(self._drain(), name="worker drain")
        if self.on_stop is not None:
            self.on_stop(signum)

    def cancel_running_jobs(self) -> None:
        """Ends the grace period now: every running job is cancelled and goes back to the queue."""
        for task in self.job_tasks.values():
            task.cancel()

    async def close(self) -> None:
        self.handle_sig(signal.SIGUSR1)
        if self._draining is not None:
            await self._draining
        await self._wait_for_poll_loop()
        if not self._pool:
            return
        await self._wait_for_outcomes()
        await self.pool.delete(self.health_check_key)
        if self.on_shutdown:
            await self.on_shutdown(self.ctx)
        await self.pool.aclose(close_connection_pool=True)
        self._pool = None

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """arq's, one job at a time, giving back the slot a start that failed had taken.

        arq takes a slot (its semaphore and job counter) before the Redis transaction that claims
        the job and does not give it back when that transaction raises; enough failed starts
        during an outage and the worker would never take a job again.
        """
        for job_id in job_ids:
            if self.job_counter >= self.max_jobs:
                return
            try:
                await super().start_jobs([job_id])
            except (RedisError, OSError):
                self._release_sem_dec_counter_on_complete()
                raise

    async def run_job(self, job_id: str, score: int) -> None:
        """arq's, with the job's id in every log line written for the job (arq's own `→` and
        `←` lines, the lifecycle's, and the job's)."""
        with log_context(JOB_ID, job_id):
            await super().run_job(job_id, score)

    async def _drain(self) -> None:
        running = [task for task in self.job_tasks.values() if not task.done()]
        if running and self._shutdown_grace_s > 0:
            await asyncio.wait(running, timeout=self._shutdown_grace_s)
        late = [task for task in self.job_tasks.values() if not task.done()]
        if late:
            logger.info("%d jobs still running: cancelling them", len(late))
        self.cancel_running_jobs()
        self._polls_end = True
        if self.main_task is not None and self._between_polls():
            self.main_task.cancel()

    async def _poll_iteration(self) -> None:
        self._stop_here()
        self._looping = self._polling = True
        try:
            await super()._poll_iteration()
        except (RedisError, OSError) as exc:
            failed: BaseException | None = exc
        else:
            failed = None
        finally:
            self._polling = False
        if failed is not None:
            await self._back_off(failed)
        elif self._poll_failures:
            logger.warning(
                "the queue is reachable again after %d failed polls", self._poll_failures
            )
            self._poll_failures = 0
        self._stop_here()

    async def _back_off(self, exc: BaseException) -> None:
        """Waits before the next poll; between polls, so a stop may cancel the wait."""
        self._poll_failures += 1
        if self._poll_failures == 1:
            logger.warning("polling the queue failed, retrying with backoff: %r", exc)
        delay = _FIRST_POLL_BACKOFF_S * 2 ** (self._poll_failures - 1)
        await asyncio.sleep(min(delay, _MAX_POLL_BACKOFF_S))

    def _stop_here(self) -> None:
        if self._polls_end:
            raise asyncio.CancelledError

    def _between_polls(self) -> bool:
        """The poll loop is asleep until its next poll: the one place it is safe to cancel."""
        return self._looping and not self._polling

    async def _wait_for_poll_loop(self) -> None:
        if self.main_task is None or self.main_task.done():
            return
        await asyncio.wait([self.main_task], timeout=STOP_GRACE_S)
        if not self.main_task.done():
            logger.warning("the poll loop did not stop within %s s; cancelling it", STOP_GRACE_S)
            self.main_task.cancel()
            await asyncio.wait([self.main_task])

    async def _wait_for_outcomes(self) -> None:
        tasks = list(self.tasks.values())
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=STOP_GRACE_S)
        for task in late:
            logger.warning("a job did not stop within %s s; cancelling it", STOP_GRACE_S)
            task.cancel()
        for outcome in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(outcome, BaseException):
                logger.warning("recording a job's outcome failed: %r", outcome)
