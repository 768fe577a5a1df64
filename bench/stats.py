"""Small arithmetic over measured samples: percentiles, medians, sums of counters."""

from __future__ import annotations

import statistics
from array import array
from base64 import b64decode
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["Latency", "add_counts", "decode_samples", "median", "merge_failures"]


class Latency:
    """Delivery latency percentiles, in milliseconds, from samples in microseconds."""

    def __init__(self, samples_us: array[int]) -> None:
        ordered = sorted(samples_us)
        self.count = len(ordered)
        self.p50_ms = _percentile(ordered, 0.50) / 1000
        self.p99_ms = _percentile(ordered, 0.99) / 1000
        self.max_ms = (ordered[-1] if ordered else 0) / 1000


def _percentile(ordered: Sequence[int], fraction: float) -> float:
    if not ordered:
        return 0.0
    return float(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))])


def decode_samples(encoded: Iterable[str]) -> array[int]:
    merged = array("I")
    for text in encoded:
        merged.frombytes(b64decode(text))
    return merged


def add_counts(replies: Iterable[dict[str, Any]], name: str) -> int:
    return sum(int(reply[name]) for reply in replies)


def merge_failures(replies: Iterable[dict[str, Any]]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for reply in replies:
        for reason, count in reply.get("failures", {}).items():
            merged[reason] = merged.get(reason, 0) + count
    return merged


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0
