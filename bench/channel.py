"""Commands from the bench controller to its load-generating child processes.

One JSON object per line: the controller writes a command to the child's stdin and reads the
reply from its stdout. Children log to stderr only, so stdout carries nothing but replies.
"""

from __future__ import annotations

import asyncio
import resource
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

__all__ = ["Child", "ChildFailed", "Handler", "raise_open_file_limit", "serve"]

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]

# Replies carry latency samples: megabytes on one line.
_LINE_LIMIT = 1 << 28
# Children run `python -m bench.…` and import the project's packages from here.
_REPO_ROOT = Path(__file__).resolve().parent.parent


class ChildFailed(RuntimeError):
    """A child process exited or answered a command with an error."""


def raise_open_file_limit() -> int:
    """Lift this process's open-file soft limit to its hard limit; returns the new limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


async def serve(handlers: dict[str, Handler]) -> None:
    """Answer commands from stdin until it closes or a `quit` command comes."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_LINE_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        command: dict[str, Any] = orjson.loads(line)
        name = command.pop("cmd")
        if name == "quit":
            _reply({"ok": True})
            return
        try:
            reply = await handlers[name](command)
        except Exception as exc:
            reply = {"error": f"{name}: {type(exc).__name__}: {exc}"}
        _reply(reply)


def _reply(reply: dict[str, Any]) -> None:
    sys.stdout.buffer.write(orjson.dumps(reply) + b"\n")
    sys.stdout.buffer.flush()


class Child:
    """A load-generating child process (`python -m <module>`) driven over its stdin/stdout."""

    def __init__(self, process: asyncio.subprocess.Process, name: str) -> None:
        self._process = process
        self.name = name
        # Set while a command awaits its reply. A call cancelled midway leaves its reply
        # unread, so the child can no longer be talked to: it is stopped, not asked.
        self.busy = False

    @classmethod
    async def start(cls, module: str, name: str, cwd: Path | None = None) -> Child:
        """`python -m module` from the repository (or `cwd`, whose packages come first)."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=_LINE_LIMIT,
            cwd=cwd or _REPO_ROOT,
        )
        return cls(process, name)

    @property
    def pid(self) -> int:
        return self._process.pid

    async def call(self, name: str, **args: Any) -> dict[str, Any]:
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        if self.busy:
            raise ChildFailed(f"{self.name} is still busy with an abandoned command")
        self.busy = True
        self._process.stdin.write(orjson.dumps({"cmd": name, **args}) + b"\n")
        await self._process.stdin.drain()
        line = await self._process.stdout.readline()
        self.busy = False
        if not line:
            code = await self._process.wait()
            raise ChildFailed(f"{self.name} exited ({code}) during {name}")
        reply: dict[str, Any] = orjson.loads(line)
        if "error" in reply:
            raise ChildFailed(f"{self.name}: {reply['error']}")
        return reply

    async def stop(self, timeout: float = 10.0) -> None:
        if self._process.returncode is not None:
            return
        try:
            if self.busy:
                raise ChildFailed(f"{self.name} is busy")
            await asyncio.wait_for(self.call("quit"), timeout)
            await asyncio.wait_for(self._process.wait(), timeout)
        except (TimeoutError, ChildFailed, ConnectionError):
            self._process.kill()
            await self._process.wait()
