"""`JobWorker`: arq's Worker with a stop that interrupts jobs, never Redis round trips.

arq 0.28 stops by cancelling its main task and its `run_job` tasks wherever they are. Caught
inside a Redis pipeline's cleanup, a cancellation leaks the pipeline's connection; caught while
a `run_job` records its outcome under `asyncio.shield`, it raises out of `close()` and leaves
that write running while the pool closes; caught before the job began, it leaves the job's
in-progress key behind, so no worker reruns the job until that key expires.

This worker stops in steps instead:

1. the poll loop stops at its next safe point: at once if it is waiting for the next poll,
   else when the current poll (or start-up) is done;
2. the worker is marked stopping, so a job it starts from now on goes straight back to the
   queue (see `worker.lifecycle`);
3. the running jobs are cancelled: each writes its closing event and goes back to the queue;
4. `close()` waits, up to `STOP_GRACE_S`, for the poll loop to end and for arq to record every
   job's outcome, then runs the shutdown hook and closes the pool with `aclose()` (arq calls
   redis-py's deprecated `close()`).

Cancelling the task running `async_run()` starts the same stop.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from arq.worker import Worker

from worker.runtime import WorkerRuntime

__all__ = ["STOP_GRACE_S", "JobWorker"]

logger = logging.getLogger(__name__)

# Jobs write their closing event within lifecycle.CLOSING_WRITE_TIMEOUT_S and arq's start-up
# gives up on an unreachable Redis sooner; this bounds anything that ignores its stop.
STOP_GRACE_S = 15.0


class JobWorker(Worker):
    _stop_requested = False
    _looping = False  # start-up is over: the poll loop runs
    _polling = False  # a poll is under way

    async def async_run(self) -> None:
        self.main_task = self.loop.create_task(self.main())
        try:
            await asyncio.shield(self.main_task)
        except asyncio.CancelledError:
            if not self.main_task.done():
                self.handle_sig(signal.SIGUSR1)
            raise

    def handle_sig(self, signum: signal.Signals) -> None:
        """Steps 1-3; also the SIGINT/SIGTERM handler when the worker handles signals."""
        if self._stop_requested:
            return
        self._stop_requested = True
        logger.info(
            "stopping on %s: %d running jobs go back to the queue",
            signal.Signals(signum).name,
            len(self.job_tasks),
        )
        self.allow_pick_jobs = False
        if self.main_task is not None and self._between_polls():
            self.main_task.cancel()
        runtime = WorkerRuntime.find(self.ctx)
        if runtime is not None:
            runtime.stopping.set()
        for task in self.job_tasks.values():
            task.cancel()
        if self.on_stop is not None:
            self.on_stop(signum)

    async def close(self) -> None:
        if not self._handle_signals:
            self.handle_sig(signal.SIGUSR1)
        await self._wait_for_poll_loop()
        if not self._pool:
            return
        await self._wait_for_outcomes()
        await self.pool.delete(self.health_check_key)
        if self.on_shutdown:
            await self.on_shutdown(self.ctx)
        await self.pool.aclose(close_connection_pool=True)
        self._pool = None

    async def _poll_iteration(self) -> None:
        self._stop_here()
        self._looping = self._polling = True
        try:
            await super()._poll_iteration()
        finally:
            self._polling = False
        self._stop_here()

    def _stop_here(self) -> None:
        if self._stop_requested:
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
