"""The `jobwire` command: `up` (the whole stack), `gateway`, `worker`; and the client side,
`submit` and `watch`, which talk to a running gateway over HTTP."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence

from jobwire.client.target import API_KEY_ENV, DEFAULT_URL, URL_ENV, InvalidGatewayURL
from shared.logs import configure_logging
from shared.settings import Settings, SettingsError

__all__ = ["CLIENT_COMMANDS", "COMMANDS", "main"]


def _up(settings: Settings) -> int:
    from jobwire.up import StackError, run_stack

    try:
        return run_stack(settings)
    except StackError as exc:
        print(f"jobwire: {exc}", file=sys.stderr)
        return 1


def _gateway(settings: Settings) -> int:
    from gateway.processes.run import run

    return run(settings)


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


def _submit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the job's name, e.g. demo.countdown")
    parser.add_argument(
        "args",
        nargs="*",
        metavar="key=value",
        help="the job's arguments; a value is JSON when it parses (seconds=10), else text",
    )
    parser.add_argument(
        "--watch", action="store_true", help="follow the job until it ends (exit code: outcome)"
    )
    _client_arguments(parser)


def _watch_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id", help="the id `jobwire submit` printed")
    parser.add_argument("--token", help="the job's watch token, if the gateway issued one")
    _client_arguments(parser)


def _client_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON event per line")
    parser.add_argument("--url", help=f"the gateway (default: ${URL_ENV}, else {DEFAULT_URL})")
    parser.add_argument("--api-key", help=f"API key (default: ${API_KEY_ENV})")


def _run_submit(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from jobwire.client.commands import submit
    from jobwire.client.target import Target

    target = Target.resolve(args.url, args.api_key, environ)
    return submit(target, args.name, args.args, follow=args.watch, as_json=args.json)


def _run_watch(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from jobwire.client.commands import watch
    from jobwire.client.target import Target

    target = Target.resolve(args.url, args.api_key, environ)
    return watch(target, args.job_id, token=args.token, as_json=args.json)


ClientCommand = tuple[
    Callable[[argparse.ArgumentParser], None],
    Callable[[argparse.Namespace, Mapping[str, str]], int],
    str,
]

CLIENT_COMMANDS: dict[str, ClientCommand] = {
    "submit": (_submit_arguments, _run_submit, "submit a job to a gateway (and --watch it)"),
    "watch": (_watch_arguments, _run_watch, "follow a job's progress and output live"),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="jobwire", description="Live, resumable progress for long-running jobs."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        commands.add_parser(name, help=help_text, description=help_text)
    client_parsers = {}
    for name, (add_arguments, _, help_text) in CLIENT_COMMANDS.items():
        client_parsers[name] = commands.add_parser(name, help=help_text, description=help_text)
        add_arguments(client_parsers[name])
    args = parser.parse_args(argv)
    if args.command in CLIENT_COMMANDS:
        return _run_client(client_parsers[args.command], args)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        parser.exit(2, f"jobwire: {exc}\n")
    configure_logging(settings)
    run, _ = COMMANDS[args.command]
    return run(settings)


def _run_client(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    # Client code (httpx, rich) is imported only by the commands that use it.
    from jobwire.client.commands import EXIT_USAGE, UsageError

    _, run, _ = CLIENT_COMMANDS[args.command]
    try:
        return run(args, os.environ)
    except UsageError as exc:
        parser.error(str(exc))
    except InvalidGatewayURL as exc:
        # One line: the URL may come from the environment, so the usage would not help.
        parser.exit(EXIT_USAGE, f"jobwire: {exc}\n")


if __name__ == "__main__":
    sys.exit(main())
