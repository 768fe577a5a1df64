"""`jobwire` commands run as a user runs them: child processes with a clean environment,
their output read as it comes, stopped with Ctrl-C (SIGINT) at the end; `jobwire up` started
and its banner read for the port and the key it made."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import signal
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from jobwire.client.target import API_KEY_ENV, URL_ENV
from tests.support import scaled


def clean_env(**jobwire: str) -> dict[str, str]:
    """This process's environment without its `JOBWIRE_*` names, quiet logs, and `jobwire`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBWIRE_")}
    return env | {"JOBWIRE_LOG_LEVEL": "WARNING"} | jobwire


async def read_until(stream: asyncio.StreamReader, marker: bytes, timeout: float) -> bytes:
    """What `stream` writes up to the line holding `marker`; fails if it ends first."""
    seen = b""
    async with asyncio.timeout(timeout):
        while marker not in seen:
            line = await stream.readline()
            if not line:
                raise AssertionError(f"output ended before {marker!r}: {seen.decode()}")
            seen += line
    return seen


@contextlib.asynccontextmanager
async def running(
    argv: Sequence[str], env: dict[str, str], cwd: Path | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`argv`, its stdout and stderr together; interrupted (like Ctrl-C) at the end if it
    still runs, and killed if that does not stop it."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGINT)
        try:
            async with asyncio.timeout(scaled(40)):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()
            raise


@dataclass
class UpStack:
    """A running `jobwire up`: its port, the API key it made, its banner, and the environment
    of a terminal that exported the key as the banner says (and `JOBWIRE_URL` for the port)."""

    port: int
    key: str
    banner: str
    env: dict[str, str]
    output: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def _drain(stream: asyncio.StreamReader, into: list[str]) -> None:
    """Keeps a child's pipe from filling (a full pipe would stop the stack)."""
    while line := await stream.readline():
        into.append(line.decode())


@contextlib.asynccontextmanager
async def jobwire_up(command: str, env: dict[str, str], cwd: Path) -> AsyncIterator[UpStack]:
    """`command` (a `jobwire up` line) run in `cwd` with `env`, which sets `JOBWIRE_PORT`;
    yielded once its banner is out; Ctrl-C at the end must stop it with exit code 0."""
    port = int(env["JOBWIRE_PORT"])
    async with running(shlex.split(command), env, cwd) as up:
        assert up.stdout is not None
        banner = (await read_until(up.stdout, b"Press Ctrl-C", scaled(60))).decode()
        key = re.findall(rf"export {API_KEY_ENV}=(\S+)", banner)[0]
        terminal = env | {API_KEY_ENV: key, URL_ENV: f"http://127.0.0.1:{port}"}
        stack = UpStack(port, key, banner, terminal)
        drain = asyncio.create_task(_drain(up.stdout, stack.output))
        yield stack
        up.send_signal(signal.SIGINT)
        async with asyncio.timeout(scaled(40)):
            await drain
            assert await up.wait() == 0, "".join(stack.output)
