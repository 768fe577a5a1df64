"""Per-key limits: how many event streams a key holds open, how fast it submits.

Both are counted in this gateway process only: N replicas behind a load balancer let a key
hold N times as many streams and submit N times as fast. That keeps the hot path free of Redis
round trips; a limit that must hold across replicas belongs in the load balancer.

A refused request gets 429 with `Retry-After`. With auth disabled there are no keys, so
nothing is limited.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.endpoints.errors import APIError
from shared.settings import Settings

__all__ = ["STREAM_RETRY_AFTER_S", "Limits", "StreamSlot", "limits"]

# When a key's streams are all in use there is no telling when one ends: a short, fixed wait.
STREAM_RETRY_AFTER_S = 5


@dataclass
class _Bucket:
    tokens: float
    updated: float


class Limits:
    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self._max_streams = settings.max_streams_per_key
        self._per_minute = settings.submits_per_minute
        self._clock = clock
        self._streams: defaultdict[str, int] = defaultdict(int)
        self._buckets: dict[str, _Bucket] = {}

    def take_submit(self, key_id: str) -> None:
        """Counts one submit of `key_id`; 429 when its bucket is empty.

        A token bucket: it holds up to `submits_per_minute` submits and refills at that rate,
        so a quiet key may burst, and a busy one gets a steady rate.
        """
        if not key_id or not self._per_minute:
            return
        now = self._clock()
        capacity = float(self._per_minute)
        rate = capacity / 60.0
        bucket = self._buckets.setdefault(key_id, _Bucket(capacity, now))
        bucket.tokens = min(capacity, bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens < 1.0:
            wait_s = max(1, math.ceil((1.0 - bucket.tokens) / rate))
            raise _too_many(
                "too_many_submits", f"at most {self._per_minute} submits per minute", wait_s
            )
        bucket.tokens -= 1.0

    def stream_slot(self, key_ids: Iterable[str]) -> StreamSlot:
        """Takes a stream slot of each key in `key_ids`; 429 if one of them has none left."""
        keys = frozenset(key_ids) if self._max_streams else frozenset()
        full = sorted(key for key in keys if self._streams[key] >= self._max_streams)
        if full:
            raise _too_many(
                "too_many_streams",
                f"at most {self._max_streams} open streams per API key",
                STREAM_RETRY_AFTER_S,
            )
        for key in keys:
            self._streams[key] += 1
        return StreamSlot(self, keys)

    def open_streams(self, key_id: str) -> int:
        return self._streams.get(key_id, 0)

    def _release(self, keys: frozenset[str]) -> None:
        for key in keys:
            self._streams[key] -= 1
            if not self._streams[key]:
                del self._streams[key]


class StreamSlot:
    """A stream's hold on its keys' slots, as a context manager around opening the stream.

    `guard(response)` hands the slot to the response, which gives it back when the stream
    ends, however it ends; leaving the block without a guarded response (an error, a 204)
    gives it back at once.
    """

    def __init__(self, limits: Limits, keys: frozenset[str]) -> None:
        self._limits = limits
        self._keys = keys
        self._released = False
        self._guarded = False

    def __enter__(self) -> StreamSlot:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is not None or not self._guarded:
            self.release()

    def guard(self, app: ASGIApp) -> ASGIApp:
        self._guarded = True

        async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
            try:
                await app(scope, receive, send)
            finally:
                self.release()

        return guarded

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._limits._release(self._keys)


def limits(connection: HTTPConnection) -> Limits:
    value: Limits = connection.app.state.limits
    return value


def _too_many(code: str, detail: str, retry_after_s: int) -> APIError:
    return APIError(429, code, detail, headers={"Retry-After": str(retry_after_s)})
