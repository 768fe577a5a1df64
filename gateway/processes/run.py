"""`jobwire gateway`: one gateway process, or several on one port under a supervisor."""

from __future__ import annotations

import sys

from gateway.app import create_app
from gateway.processes.server import serve
from gateway.processes.supervisor import supervise
from shared.settings import Settings, SettingsError

__all__ = ["run"]


def run(settings: Settings) -> int:
    """Serve until stopped; the exit code is 2 for settings the gateway refuses."""
    try:
        if settings.gateway_processes == 1:
            serve(settings)
            return 0
        create_app(settings)  # refuses bad settings here, before any process starts
    except SettingsError as exc:  # e.g. auth on without API keys: refuse, and say why
        print(f"jobwire: {exc}", file=sys.stderr)
        return 2
    return supervise(settings, settings.gateway_processes)
