"""`Progress`: what a running job tells the people watching it.

Every job receives one as its first argument. Each method writes one event (progress updates
may be coalesced, see `worker.writer`). Once the worker finds the job's stream ended (the job
was cancelled, say), they raise `JobEnded`, which the lifecycle turns into a quiet stop: a job
needs no code for it.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from shared.events import EventType
from worker.writer import EventWriter

__all__ = ["LogLevel", "Progress"]

LogLevel = Literal["debug", "info", "warning", "error"]


class Progress:
    def __init__(self, writer: EventWriter) -> None:
        self._writer = writer
        self._current: float | None = None
        self._total: float | None = None
        self._stage: str | None = None
        self._message: str | None = None
        self._reported = False
        # (monotonic time, current) of the first progress of this stage: the base of the rate.
        self._rate_origin: tuple[float, float] | None = None

    @property
    def job_id(self) -> str:
        return self._writer.job_id

    @property
    def attempt(self) -> int:
        """1 on the first run; each retry or rerun after a lost worker adds one."""
        return self._writer.attempt

    async def update(
        self,
        current: float | None = None,
        total: float | None = None,
        stage: str | None = None,
        message: str | None = None,
    ) -> None:
        """Sets the given fields (the others keep their values) and reports them.

        A new `stage` is written at once, right after the old stage's last value.
        """
        new_stage = stage is not None and stage != self._stage and self._reported
        if new_stage:
            self._rate_origin = None
        self._reported = True
        self._current = self._current if current is None else current
        self._total = self._total if total is None else total
        self._stage = self._stage if stage is None else stage
        self._message = self._message if message is None else message
        await self._writer.write_progress(self._snapshot(time.monotonic()), immediate=new_stage)

    async def advance(self, n: float = 1, message: str | None = None) -> None:
        """Adds `n` to `current`."""
        await self.update(current=(self._current or 0) + n, message=message)

    async def data(self, **fields: Any) -> None:
        """Partial output, such as the next token of a generated text; JSON-able `fields`."""
        await self._writer.write(EventType.DATA, fields)

    async def log(self, message: str, level: LogLevel = "info") -> None:
        await self._writer.write(EventType.LOG, {"level": level, "message": message})

    async def error(self, message: str, type: str = "Error", retryable: bool = False) -> None:
        """A problem the job carries on after (it is not the job failing)."""
        await self._writer.write(
            EventType.ERROR, {"type": type, "message": message, "retryable": retryable}
        )

    def _snapshot(self, now: float) -> dict[str, Any]:
        current, total = self._current, self._total
        if current is not None and self._rate_origin is None:
            self._rate_origin = (now, current)
        rate = self._rate(now)
        return {
            "current": current,
            "total": total,
            "percent": _percent(current, total),
            "stage": self._stage,
            "message": self._message,
            "rate": None if rate is None else round(rate, 3),
            "eta_s": _eta_s(current, total, rate),
        }

    def _rate(self, now: float) -> float | None:
        """Units per second since the first progress of this stage."""
        if self._rate_origin is None or self._current is None:
            return None
        started, origin = self._rate_origin
        elapsed, done = now - started, self._current - origin
        if elapsed <= 0 or done < 0:
            return None
        return done / elapsed


def _percent(current: float | None, total: float | None) -> float | None:
    if current is None or not total or total < 0:
        return None
    return round(min(max(current / total * 100, 0.0), 100.0), 2)


def _eta_s(current: float | None, total: float | None, rate: float | None) -> float | None:
    if current is None or total is None or not rate:
        return None
    return round(max(total - current, 0) / rate, 1)
