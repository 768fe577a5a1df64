"""The job state hash: its statuses against the event types that set them."""

from __future__ import annotations

from shared.events import TERMINAL_TYPES, EventType
from shared.state import TERMINAL_STATUSES, status_after


def test_the_terminal_statuses_are_the_ones_terminal_events_leave() -> None:
    assert {status_after(t) for t in TERMINAL_TYPES} == TERMINAL_STATUSES
    assert not {status_after(t) for t in EventType if not t.is_terminal} & TERMINAL_STATUSES
