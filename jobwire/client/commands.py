"""`jobwire submit` and `jobwire watch`: the terminal's view of a job.

Exit codes: 0 the job completed, 1 it failed (or the gateway could not be used), 130 it was
cancelled (or the watch was interrupted with Ctrl-C, which leaves the job running), 2 the
command line was wrong — including a job name or arguments the gateway refuses.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Coroutine, Sequence
from typing import IO, Any

from rich.console import Console

from jobwire.client.client import Client
from jobwire.client.console import JsonLines, LiveView, View
from jobwire.client.errors import JobCancelled, JobFailed, JobwireError, RequestRejected
from jobwire.client.job import Job
from jobwire.client.target import API_KEY_ENV, URL_ENV, Target

__all__ = [
    "API_KEY_ENV",
    "EXIT_CANCELLED",
    "EXIT_COMPLETED",
    "EXIT_FAILED",
    "EXIT_USAGE",
    "URL_ENV",
    "Target",
    "UsageError",
    "parse_assignments",
    "submit",
    "watch",
]

EXIT_COMPLETED, EXIT_FAILED, EXIT_USAGE, EXIT_CANCELLED = 0, 1, 2, 130
# Refusals that mean the command named a job or arguments the gateway does not take.
_USAGE_STATUSES = frozenset({400, 413, 422})


class UsageError(ValueError):
    """A command line that cannot be run as written."""


def parse_assignments(items: Sequence[str]) -> dict[str, Any]:
    """`key=value` pairs; a value is JSON when it parses as JSON (`10`, `true`, `[1,2]`),
    else the text itself (`hello`)."""
    args: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(f"arguments are key=value, got {item!r}")
        if key in args:
            raise UsageError(f"argument {key!r} given twice")
        args[key] = _value(raw)
    return args


def _value(raw: str) -> Any:
    try:
        return json.loads(raw, parse_constant=_refuse)
    except ValueError:
        return raw


def _refuse(name: str) -> Any:
    raise ValueError(f"{name} is not JSON a gateway accepts")


def submit(
    target: Target,
    name: str,
    assignments: Sequence[str],
    *,
    follow: bool,
    as_json: bool,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
) -> int:
    args = parse_assignments(assignments)
    out, err = out or sys.stdout, err or sys.stderr
    return _run(_submit(target, name, args, follow, as_json, out, err), err)


def watch(
    target: Target,
    job_id: str,
    *,
    token: str | None,
    as_json: bool,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
) -> int:
    out, err = out or sys.stdout, err or sys.stderr

    async def run(out: IO[str], err: IO[str]) -> int:
        async with Client(target.url, target.api_key) as client:
            return await _follow(client.job(job_id, token), _view(as_json, out, err))

    return _run(run(out, err), err)


def _run(command: Coroutine[Any, Any, int], err: IO[str]) -> int:
    try:
        return asyncio.run(command)
    except KeyboardInterrupt:
        print("jobwire: interrupted; the job goes on running", file=err, flush=True)
        return EXIT_CANCELLED
    except RequestRejected as exc:
        print(f"jobwire: {_refusal(exc)}", file=err, flush=True)
        return EXIT_USAGE if exc.status_code in _USAGE_STATUSES else EXIT_FAILED
    except JobwireError as exc:
        print(f"jobwire: {exc}", file=err, flush=True)
        return EXIT_FAILED
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, without Python's complaint at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED


async def _submit(
    target: Target,
    name: str,
    args: dict[str, Any],
    follow: bool,
    as_json: bool,
    out: IO[str],
    err: IO[str],
) -> int:
    async with Client(target.url, target.api_key) as client:
        job = await client.submit(name, **args)
        if follow:
            return await _follow(job, _view(as_json, out, err, job_name=name))
        _print_submitted(job, as_json, out, err)
        return EXIT_COMPLETED


async def _follow(job: Job, view: View) -> int:
    async with view:
        async for event in job.events(on_connection=view.connection):
            view.event(event)
    try:
        await job.wait()
    except JobFailed:
        return EXIT_FAILED
    except JobCancelled:
        return EXIT_CANCELLED
    return EXIT_COMPLETED


def _view(as_json: bool, out: IO[str], err: IO[str], job_name: str | None = None) -> View:
    if as_json:
        return JsonLines(out, err)
    return LiveView(Console(file=out, highlight=False), job_name)


def _print_submitted(job: Job, as_json: bool, out: IO[str], err: IO[str]) -> None:
    if as_json:
        answer = {"job_id": job.job_id, "watch_token": job.watch_token, "urls": job.urls}
        print(json.dumps(answer), file=out, flush=True)
        return
    print(job.job_id, file=out, flush=True)
    token = f" --token {job.watch_token}" if job.watch_token else ""
    print(f"jobwire: watch it with: jobwire watch {job.job_id}{token}", file=err, flush=True)


def _refusal(exc: RequestRejected) -> str:
    detail = exc.detail
    if isinstance(detail, dict) and "message" in detail:
        known = detail.get("known")
        hint = f" (known: {', '.join(map(str, known))})" if isinstance(known, list) else ""
        return f"{detail['message']}{hint}"
    if isinstance(detail, dict):
        return f"{exc.code}: " + "; ".join(f"{k}: {v}" for k, v in detail.items())
    return f"{exc.code}: {detail}"
