"""The web page's event types (`static/js/events.js`) against Python's (`shared/events.py`).

The page cannot import Python, so its lists are copies: these tests are what keeps them equal,
and keep every other script importing them rather than writing its own.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from gateway.endpoints.page import STATIC_DIR
from shared.events import TERMINAL_TYPES, ConnectionEventType, EventType
from shared.state import TERMINAL_STATUSES

SCRIPTS = STATIC_DIR / "js"
EVENTS_JS = SCRIPTS / "events.js"
# `export const NAME = Object.freeze([...]);` or `= new Set([...]);`, the list being JSON.
_EXPORTED_LIST = re.compile(
    r"^export const (?P<name>\w+) = (?:Object\.freeze|new Set)\((?P<items>\[.*\])\);$", re.M
)
_ARRAY = re.compile(r"\[[^\[\]]*\]")
_QUOTED = re.compile(r"\"(\w+)\"|'(\w+)'")
_EVERY_TYPE = {*EventType, *ConnectionEventType}


def exported_lists() -> dict[str, list[str]]:
    text = EVENTS_JS.read_text()
    return {match["name"]: json.loads(match["items"]) for match in _EXPORTED_LIST.finditer(text)}


def test_the_page_has_python_s_event_types_in_python_s_order() -> None:
    lists = exported_lists()

    assert set(lists) == {"STORED_TYPES", "TERMINAL_TYPES", "CONNECTION_TYPES"}
    assert lists["STORED_TYPES"] == [t.value for t in EventType]
    assert lists["CONNECTION_TYPES"] == [t.value for t in ConnectionEventType]


def test_the_page_ends_a_job_where_python_does() -> None:
    terminal = exported_lists()["TERMINAL_TYPES"]

    assert len(terminal) == len(set(terminal))
    assert set(terminal) == {t.value for t in TERMINAL_TYPES}
    # jobs.js also reads it as the statuses of an ended job.
    assert set(terminal) == {s.value for s in TERMINAL_STATUSES}


def _event_types_listed(path: Path) -> list[set[str]]:
    """The event types named together in each array literal of a script."""
    listed = []
    for array in _ARRAY.findall(path.read_text()):
        names = {a or b for a, b in _QUOTED.findall(array)} & _EVERY_TYPE
        if len(names) > 1:
            listed.append(names)
    return listed


def test_only_events_js_lists_event_types() -> None:
    others = {path.name: _event_types_listed(path) for path in SCRIPTS.glob("*.js")}

    assert len(others.pop(EVENTS_JS.name)) == 3  # the check sees lists where there are some
    assert {name: lists for name, lists in others.items() if lists} == {}
