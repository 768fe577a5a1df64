"""The `jobwire` command: `up` (the whole stack), `gateway`, `worker`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from shared.settings import Settings, SettingsError

__all__ = ["COMMANDS", "main"]


def _up(settings: Settings) -> int:
    from gateway.stack import StackError, run_stack

    try:
        return run_stack(settings)
    except StackError as exc:
        print(f"jobwire: {exc}", file=sys.stderr)
        return 1


def _gateway(settings: Settings) -> int:
    from gateway.server import serve

    serve(settings)
    return 0


def _worker(settings: Settings) -> int:
    # Imported only here: the gateway itself never imports worker code.
    from worker.main import run

    run(settings)
    return 0


COMMANDS: dict[str, tuple[Callable[[Settings], int], str]] = {
    "up": (_up, "run Redis (private unless JOBWIRE_REDIS_URL is set), a worker and the gateway"),
    "gateway": (_gateway, "serve the HTTP gateway on JOBWIRE_HOST:JOBWIRE_PORT"),
    "worker": (_worker, "run one arq worker"),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="jobwire", description="Live, resumable progress for long-running jobs."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        commands.add_parser(name, help=help_text, description=help_text)
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        parser.exit(2, f"jobwire: {exc}\n")
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    run, _ = COMMANDS[args.command]
    return run(settings)


if __name__ == "__main__":
    sys.exit(main())
