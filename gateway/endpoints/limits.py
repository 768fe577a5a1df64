"""Per-key limits: how many event streams a key holds open, how often it asks for one, how
fast it submits.

All are counted in this gateway process only: N replicas behind a load balancer let a key
hold N times as many streams and submit N times as fast. That keeps the hot path free of Redis
round trips; a limit that must hold across replicas belongs in the load balancer.

A stream request takes its slot and one request of its key's budget before it reads Redis:
naming 50 made-up jobs costs a round trip on the few connections every request shares, so
without a bound taken first a key could keep them busy for everyone else.

Streams opened with watch tokens count against the tokens of their job and key (a
`TokenHolder`), up to `max_streams_per_token`, and spend their budget, not the key's: whoever
was handed a token cannot use up the streams of the key that issued it.

A refused request gets 429 with `Retry-After`. With auth disabled there are no keys, so
nothing is limited.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import NamedTuple

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.endpoints.errors import APIError
from shared.settings import Settings

__all__ = ["STREAM_RETRY_AFTER_S", "Holder", "Limits", "StreamSlot", "TokenHolder", "limits"]

_NOTHING: frozenset[Holder] = frozenset()
# When a key's streams are all in use there is no telling when one ends: a short, fixed wait.
STREAM_RETRY_AFTER_S = 5
# A bucket untouched this long has refilled to the brim, which is the same as having none: it
# is forgotten, so the buckets of jobs' tokens do not pile up as jobs come and go.
_REFILLED_AFTER_S = 60.0


class TokenHolder(NamedTuple):
    """The watch tokens one key issued for one job, as what their streams count against."""

    job_id: str
    key_id: str


# What a stream counts against: an API key's id, or the tokens of one job and key.
Holder = str | TokenHolder


@dataclass
class _Bucket:
    tokens: float
    updated: float


class _Rate:
    """A token bucket per key: it holds up to `per_minute` tokens and refills at that rate, so
    a quiet key may burst, and a busy one gets a steady rate. 0: no limit."""

    def __init__(self, per_minute: int, code: str, detail: str) -> None:
        self._per_minute = per_minute
        self._code = code
        self._detail = detail
        self._buckets: dict[Holder, _Bucket] = {}
        self._swept = -math.inf

    def take(self, keys: Collection[Holder], now: float) -> None:
        """One token of each key's bucket; 429, taking none, when one of them is empty."""
        if not self._per_minute:
            return
        self._forget_refilled(now)
        buckets = [self._refilled(key, now) for key in keys]
        lowest = min((bucket.tokens for bucket in buckets), default=1.0)
        if lowest < 1.0:
            wait_s = max(1, math.ceil((1.0 - lowest) * 60.0 / self._per_minute))
            raise _too_many(self._code, self._detail, wait_s)
        for bucket in buckets:
            bucket.tokens -= 1.0

    def _forget_refilled(self, now: float) -> None:
        if now - self._swept >= _REFILLED_AFTER_S:
            self._swept = now
            self._buckets = {
                key: bucket
                for key, bucket in self._buckets.items()
                if now - bucket.updated < _REFILLED_AFTER_S
            }

    def __len__(self) -> int:
        return len(self._buckets)

    def _refilled(self, key: Holder, now: float) -> _Bucket:
        capacity = float(self._per_minute)
        bucket = self._buckets.setdefault(key, _Bucket(capacity, now))
        bucket.tokens = min(capacity, bucket.tokens + (now - bucket.updated) * capacity / 60.0)
        bucket.updated = now
        return bucket


class Limits:
    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self._max_streams = settings.max_streams_per_key
        self._max_token_streams = settings.max_streams_per_token
        self._clock = clock
        self._streams: defaultdict[Holder, int] = defaultdict(int)
        submits, opens = settings.submits_per_minute, settings.stream_opens_per_minute
        self._submits = _Rate(submits, "too_many_submits", f"at most {submits} submits per minute")
        self._opens = _Rate(
            opens, "too_many_stream_requests", f"at most {opens} stream requests per minute"
        )

    def take_submit(self, key_id: str) -> None:
        """Counts one submit of `key_id`; 429 when its bucket is empty."""
        if key_id:
            self._submits.take([key_id], self._clock())

    def open_stream(self, key_ids: Iterable[Holder]) -> StreamSlot:
        """What a stream request takes before it reads anything: a slot of each key in
        `key_ids` and one request of each key's budget; 429, taking neither, if one is spent."""
        keys = frozenset(key_ids)
        self.ask_stream(keys)
        return self._hold(keys)

    def ask_stream(self, key_ids: Iterable[Holder]) -> None:
        """`open_stream` holding no slot, for a HEAD: it reads what its GET would, so it spends
        the budget, and is told 429 when its GET would be, but opens no stream."""
        keys = frozenset(key_ids)
        self._check_slots(keys)
        self._opens.take(keys, self._clock())

    def stream_slot(self, key_ids: Iterable[Holder]) -> StreamSlot:
        """Takes a stream slot of each key in `key_ids`; 429 if one of them has none left."""
        keys = frozenset(key_ids)
        self._check_slots(keys)
        return self._hold(keys)

    def open_streams(self, key_id: str) -> int:
        """The streams `key_id` holds open itself, not counting its tokens'."""
        return self._streams.get(key_id, 0)

    def open_token_streams(self, job_id: str, key_id: str) -> int:
        return self._streams.get(TokenHolder(job_id, key_id), 0)

    def stream_budgets(self) -> int:
        """The stream-request budgets held: for tests and debugging; no endpoint reports it."""
        return len(self._opens)

    def _check_slots(self, keys: frozenset[Holder]) -> None:
        full = [key for key in keys if 0 < self._max_for(key) <= self._streams.get(key, 0)]
        if any(isinstance(key, str) for key in full):
            raise _too_many(
                "too_many_streams",
                f"at most {self._max_streams} open streams per API key",
                STREAM_RETRY_AFTER_S,
            )
        if full:
            raise _too_many(
                "too_many_streams",
                f"at most {self._max_token_streams} open streams per job's watch tokens",
                STREAM_RETRY_AFTER_S,
            )

    def _max_for(self, key: Holder) -> int:
        return self._max_streams if isinstance(key, str) else self._max_token_streams

    def _hold(self, keys: frozenset[Holder]) -> StreamSlot:
        # The one empty set when nothing is limited (auth off): a stream holds no set of its own.
        held = frozenset(key for key in keys if self._max_for(key)) or _NOTHING
        for key in held:
            self._streams[key] += 1
        return StreamSlot(self, held)

    def _release(self, keys: frozenset[Holder]) -> None:
        for key in keys:
            self._streams[key] -= 1
            if not self._streams[key]:
                del self._streams[key]


class StreamSlot:
    """A stream's hold on its keys' slots, as a context manager around opening the stream.

    `guard(response)` (or `hand_over()`) hands the slot to the response, which gives it back
    when the stream ends, however it ends; leaving the block without a guarded response (an
    error, a 204) gives it back at once.
    """

    def __init__(self, limits: Limits, keys: frozenset[Holder]) -> None:
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

    def hand_over(self) -> Callable[[], None]:
        """Like `guard`, for a response that calls what this returns itself when its stream
        ends — which may be long after its ASGI call returned (`EventStreamResponse`)."""
        self._guarded = True
        return self.release

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._limits._release(self._keys)


def limits(connection: HTTPConnection) -> Limits:
    value: Limits = connection.app.state.limits
    return value


def _too_many(code: str, detail: str, retry_after_s: int) -> APIError:
    return APIError(429, code, detail, headers={"Retry-After": str(retry_after_s)})
