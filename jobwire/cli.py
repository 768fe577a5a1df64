"""The `jobwire` command: `up` (the whole stack), `gateway`, `worker`; and the client side,
`submit` and `watch`, which talk to a running gateway over HTTP."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version

from jobwire.client.target import API_KEY_ENV, DEFAULT_URL, URL_ENV, InvalidGatewayURL
from shared.environ import env_name
from shared.logs import configure_logging
from shared.settings import Settings, SettingsError

__all__ = ["CLIENT_COMMANDS", "COMMANDS", "DEFAULT_GIVE_UP_AFTER_S", "main"]

# A watch gives up on a gateway silent this long: long enough to ride out a deploy or a dropped
# network, short enough that a dead gateway or a wrong URL does not hold a terminal for good.
DEFAULT_GIVE_UP_AFTER_S = 120.0


def _up(settings: Settings) -> int:
    from jobwire.up import StackError, run_stack
    from worker.jobpaths import load_registries

    job_names = [
        spec["name"] for jobs in load_registries(settings.job_paths) for spec in jobs.specs()
    ]
    try:
        return run_stack(settings, job_names)
    except StackError as exc:
        print(f"jobwire: {exc}", file=sys.stderr)
        return 1


def _gateway(settings: Settings) -> int:
    from gateway.processes.run import run

    return run(settings)


def _worker(settings: Settings) -> int:
    # Imported only here: the gateway itself never imports worker code.
    from worker.jobpaths import load_registries
    from worker.main import run

    run(settings, load_registries(settings.job_paths))
    return 0


COMMANDS: dict[str, tuple[Callable[[Settings], int], str]] = {
    "up": (_up, "run Redis (private unless JOBWIRE_REDIS_URL is set), a worker and the gateway"),
    "gateway": (_gateway, "serve the HTTP gateway on JOBWIRE_HOST:JOBWIRE_PORT"),
    "worker": (_worker, "run one arq worker"),
}
# The commands that run a worker, and so take the jobs it runs.
JOB_COMMANDS = frozenset({"up", "worker"})


def _job_path_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "jobs",
        nargs="*",
        metavar="MODULE:ATTRIBUTE",
        help="the JobRegistry to run, such as myapp.jobs:jobs (imported from the working"
        " directory or the installed packages); several allowed"
        f" (default: ${env_name('jobs')}, else the demo jobs)",
    )


def _with_job_paths(
    parser: argparse.ArgumentParser, settings: Settings, paths: list[str]
) -> Settings:
    """`settings` running the jobs of `paths` (the command line's, else JOBWIRE_JOBS's),
    checked here so a wrong path is one line and exit code 2 before anything starts."""
    from worker.jobpaths import (
        JobImportError,
        JobPathError,
        import_from_working_directory,
        load_registries,
    )

    if paths:
        settings = settings.replace(jobs=" ".join(paths))
    origin = "" if paths else f"{env_name('jobs')}: "
    import_from_working_directory()
    try:
        load_registries(settings.job_paths)
    except JobPathError as exc:
        parser.exit(2, f"jobwire: {origin}{exc}\n")  # a usage error, like argparse's own
    except JobImportError as exc:
        parser.exit(1, f"jobwire: {origin}{exc}\n")
    return settings


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
    parser.add_argument(
        "--give-up-after",
        type=_seconds,
        default=DEFAULT_GIVE_UP_AFTER_S,
        metavar="SECONDS",
        help="while watching, give up (exit 1) when the gateway has not answered for this long"
        f" (default: {DEFAULT_GIVE_UP_AFTER_S:g}; 0: never)",
    )
    parser.add_argument(
        "--transport",
        choices=("sse", "ws"),
        default="sse",
        help="follow the job over Server-Sent Events (default) or a WebSocket",
    )


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}")
    return seconds


def _give_up_after_s(args: argparse.Namespace) -> float | None:
    seconds: float = args.give_up_after
    return seconds or None


def _run_submit(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from jobwire.client.commands import submit
    from jobwire.client.target import Target

    target = Target.resolve(args.url, args.api_key, environ)
    return submit(
        target,
        args.name,
        args.args,
        follow=args.watch,
        as_json=args.json,
        give_up_after_s=_give_up_after_s(args),
        transport=args.transport,
    )


def _run_watch(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from jobwire.client.commands import watch
    from jobwire.client.target import Target

    target = Target.resolve(args.url, args.api_key, environ)
    return watch(
        target,
        args.job_id,
        token=args.token,
        as_json=args.json,
        give_up_after_s=_give_up_after_s(args),
        transport=args.transport,
    )


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
    parser.add_argument("--version", action="version", version=f"jobwire {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    command_parsers = {}
    for name, (_, help_text) in COMMANDS.items():
        command_parsers[name] = commands.add_parser(name, help=help_text, description=help_text)
        if name in JOB_COMMANDS:
            _job_path_arguments(command_parsers[name])
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
    if args.command in JOB_COMMANDS:
        settings = _with_job_paths(command_parsers[args.command], settings, args.jobs)
    configure_logging(settings)
    run, _ = COMMANDS[args.command]
    return run(settings)


def _version() -> str:
    """The installed distribution's version: the one place it is written is pyproject.toml."""
    try:
        return version("jobwire")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "(not installed)"


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
