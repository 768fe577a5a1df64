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
from collections.abc import Callable, Coroutine, Sequence
from functools import partial
from typing import IO, Any

from rich.console import Console

from jobwire.client.assignments import UsageError, read_arguments, split_assignments
from jobwire.client.client import Client
from jobwire.client.console import JsonLines, LiveView, View
from jobwire.client.errors import (
    JobCancelled,
    JobFailed,
    JobwireError,
    RequestRejected,
    describe_detail,
)
from jobwire.client.job import Job
from jobwire.client.stream import Transport
from jobwire.client.target import API_KEY_ENV, DEFAULT_URL, URL_ENV, Target

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


def parse_assignments(items: Sequence[str], schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """`key=value` pairs, each value read by the job's args `schema`
    (`jobwire.client.assignments`); without one, JSON when it parses (`10`, `true`, `[1,2]`),
    else the text itself (`hello`)."""
    return read_arguments(split_assignments(items), schema)


def submit(
    target: Target,
    name: str,
    assignments: Sequence[str],
    *,
    follow: bool,
    as_json: bool,
    give_up_after_s: float | None,
    transport: Transport = "sse",
    out: IO[str] | None = None,
    err: IO[str] | None = None,
) -> int:
    """`give_up_after_s`: how long a followed job's gateway may stay silent (None: forever);
    `transport`: "sse" or "ws", how it is followed."""
    pairs = split_assignments(assignments)
    out, err = out or sys.stdout, err or sys.stderr
    client = partial(_client, target, give_up_after_s, transport)
    command = _submit(client, target, name, pairs, follow, as_json, out, err)
    return _run(command, err, key_given=target.api_key is not None, token_flag=False)


def watch(
    target: Target,
    job_id: str,
    *,
    token: str | None,
    as_json: bool,
    give_up_after_s: float | None,
    transport: Transport = "sse",
    out: IO[str] | None = None,
    err: IO[str] | None = None,
) -> int:
    """`give_up_after_s`: how long the gateway may stay silent (None: forever); `transport`:
    "sse" or "ws"."""
    out, err = out or sys.stdout, err or sys.stderr

    async def run(out: IO[str], err: IO[str]) -> int:
        async with _client(target, give_up_after_s, transport) as client:
            return await _follow(client.job(job_id, token), _view(as_json, out, err))

    given = target.api_key is not None or bool(token)
    return _run(run(out, err), err, key_given=given, token_flag=True)


def _client(target: Target, give_up_after_s: float | None, transport: Transport) -> Client:
    return Client(target.url, target.api_key, give_up_after_s=give_up_after_s, transport=transport)


def _run(
    command: Coroutine[Any, Any, int], err: IO[str], *, key_given: bool, token_flag: bool
) -> int:
    """Runs `command`, telling the user what went wrong in one line. For a 401, which flags
    give credentials: `key_given`, whether any was sent; `token_flag`, whether `--token` is
    one of them."""
    try:
        return asyncio.run(command)
    except KeyboardInterrupt:
        print("jobwire: interrupted; the job goes on running", file=err, flush=True)
        return EXIT_CANCELLED
    except RequestRejected as exc:
        text = _unauthorized(exc, key_given, token_flag) if exc.status_code == 401 else None
        print(f"jobwire: {text or _refusal(exc)}", file=err, flush=True)
        return EXIT_USAGE if exc.status_code in _USAGE_STATUSES else EXIT_FAILED
    except JobwireError as exc:
        print(f"jobwire: {exc}", file=err, flush=True)
        return EXIT_FAILED
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, without Python's complaint at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED


async def _submit(
    make_client: Callable[[], Client],
    target: Target,
    name: str,
    pairs: dict[str, str],
    follow: bool,
    as_json: bool,
    out: IO[str],
    err: IO[str],
) -> int:
    async with make_client() as client:
        args = read_arguments(pairs, await _args_schema(client, name) if pairs else None)
        job = await client.submit(name, **args)
        if follow:
            # First, so that a watch cut short (Ctrl-C) leaves the id to watch it again with.
            print(f"jobwire: job {job.job_id}; {_watch_hint(job, target)}", file=err, flush=True)
            return await _follow(job, _view(as_json, out, err, job_name=name))
        _print_submitted(job, target, as_json, out, err)
        return EXIT_COMPLETED


async def _args_schema(client: Client, name: str) -> dict[str, Any] | None:
    """The job's args schema as the catalog has it; None for a job it does not list (the
    submit then says so) or a gateway without a catalog."""
    try:
        catalog = await client.request("GET", "/catalog", expected=(200,))
    except RequestRejected as exc:
        if exc.status_code == 404:
            return None
        raise
    jobs = catalog.get("jobs") if isinstance(catalog, dict) else None
    for spec in jobs if isinstance(jobs, list) else []:
        if isinstance(spec, dict) and spec.get("name") == name:
            schema = spec.get("args_schema")
            return schema if isinstance(schema, dict) else None
    return None


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


def _print_submitted(job: Job, target: Target, as_json: bool, out: IO[str], err: IO[str]) -> None:
    if as_json:
        answer = {"job_id": job.job_id, "watch_token": job.watch_token, "urls": job.urls}
        print(json.dumps(answer), file=out, flush=True)
        return
    print(job.job_id, file=out, flush=True)
    print(f"jobwire: {_watch_hint(job, target)}", file=err, flush=True)


def _watch_hint(job: Job, target: Target) -> str:
    token = f" --token {job.watch_token}" if job.watch_token else ""
    url = f" --url {target.url}" if target.url != DEFAULT_URL else ""
    return f"watch it with: jobwire watch {job.job_id}{token}{url}"


def _refusal(exc: RequestRejected) -> str:
    detail = exc.detail
    if isinstance(detail, dict) and "message" in detail:
        return describe_detail(detail)
    if isinstance(detail, list) and all(_is_problem(item) for item in detail):
        return f"{exc.code}: " + "; ".join(f"{_place(p['loc'])}: {p['msg']}" for p in detail)
    return f"{exc.code}: {describe_detail(detail)}"


def _is_problem(item: Any) -> bool:
    return isinstance(item, dict) and isinstance(item.get("loc"), list) and "msg" in item


def _place(loc: list[Any]) -> str:
    """`["args", "size", "width"]` as `size.width`, `["args", "tags", 1]` as `tags[1]`."""
    place = ""
    for part in loc[1:] if loc[:1] == ["args"] else loc:
        place += f"[{part}]" if isinstance(part, int) else f".{part}"
    return place.removeprefix(".")


def _unauthorized(exc: RequestRejected, key_given: bool, token_flag: bool) -> str:
    """A 401 in the command line's terms: the flag or variable that gives a key (the gateway's
    own words name an HTTP header)."""
    ways = f"--api-key KEY or {API_KEY_ENV}=KEY"
    if token_flag:
        ways += ", or the job's watch token with --token TOKEN"
    if not key_given:
        return f"the gateway wants an API key: give one with {ways}"
    return f"{describe_detail(exc.detail)}: give a valid one with {ways}"
