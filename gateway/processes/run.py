"""`jobwire gateway`: one gateway process, or several on one port under a supervisor."""

from __future__ import annotations

import sys

from gateway.app import create_app
from gateway.processes.server import serve
from gateway.processes.supervisor import supervise
from shared.logs import configure_logging
from shared.settings import Settings, SettingsError

__all__ = ["main", "run"]


def main() -> int:
    """`python -m gateway`: settings from `JOBWIRE_*` variables, then `run`."""
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"jobwire: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    return run(settings)


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
