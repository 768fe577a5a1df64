"""How long to wait before the next reconnect: exponential, capped, with jitter.

Jitter spreads the reconnects of many clients cut off at the same moment (a gateway restart)
so they do not all come back in the same millisecond.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True, slots=True)
class Backoff:
    initial_s: float = 0.25
    maximum_s: float = 10.0
    factor: float = 2.0

    def delay(self, failures: int, retry_after_s: float | None = None) -> float:
        """The wait after `failures` consecutive failures (1 or more): a random point in the
        upper half of the capped exponential step, and never less than the server asked for."""
        step = min(self.maximum_s, self.initial_s * self.factor ** max(failures - 1, 0))
        delay = step / 2 + random.uniform(0, step / 2)
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self.maximum_s * 6))
        return delay
