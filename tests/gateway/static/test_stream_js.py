"""Figures of the page's `static/js/stream.js` that depend on Python's defaults."""

from __future__ import annotations

import re

from gateway.endpoints.page import STATIC_DIR
from shared.settings import Settings

_SILENCE_LIMIT = re.compile(r"^const SILENCE_LIMIT_MS = ([\d_]+);$", re.M)


def test_a_live_stream_is_not_presumed_dead_between_two_default_heartbeats() -> None:
    # EventSource hides the gateway's pings: a running job's heartbeat is what the page hears.
    found = _SILENCE_LIMIT.search((STATIC_DIR / "js" / "stream.js").read_text())

    assert found is not None, "stream.js no longer sets SILENCE_LIMIT_MS"
    assert int(found[1].replace("_", "")) >= 2 * Settings().heartbeat_s * 1000
