"""README's "Your jobs", run as written: its module saved in a folder of its own, `jobwire up`
with the path to it started there, then the section's submit commands (a refused argument,
then a job watched to its end) run as a user pastes them."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.support import RedisServer, free_port, scaled

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _section_blocks() -> list[tuple[str, str]]:
    """(language, text) of each fenced block of the README's "Your jobs" section."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Your jobs\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```(\w*)\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)


def _as_run_here(command: str, port: int) -> str:
    """`command` against this test's stack: its port, and this interpreter's scripts."""
    return command.replace(".venv/bin/", f"{BIN}/").replace("localhost:8000", f"127.0.0.1:{port}")


async def _read_until(stream: asyncio.StreamReader, marker: bytes) -> str:
    seen = b""
    async with asyncio.timeout(scaled(60)):
        while marker not in seen:
            line = await stream.readline()
            if not line:
                raise AssertionError(f"output ended before {marker!r}: {seen.decode()}")
            seen += line
    return seen.decode()


@pytest.mark.timeout(120)
async def test_your_jobs_section_runs_as_written(tmp_path: Path, redis_server: RedisServer) -> None:
    blocks = _section_blocks()
    module = next(text for language, text in blocks if language == "python")
    up = next(text for _, text in blocks if "jobwire up myjobs:jobs" in text).strip()
    submits = next(text for _, text in blocks if "jobwire submit reports.build" in text)
    (tmp_path / "myjobs.py").write_text(module)
    port, tag = free_port(), f"t{uuid.uuid4().hex[:10]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBWIRE_")}
    env |= {
        "JOBWIRE_PORT": str(port),
        "JOBWIRE_REDIS_URL": redis_server.url,
        "JOBWIRE_KEY_PREFIX": tag,
        "JOBWIRE_QUEUE_NAME": f"{tag}:queue",
        "JOBWIRE_LOG_LEVEL": "WARNING",
    }
    stack = await asyncio.create_subprocess_exec(
        *shlex.split(_as_run_here(up, port)),
        cwd=tmp_path,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert stack.stdout is not None
    try:
        banner = await _read_until(stack.stdout, b"Press Ctrl-C")
        key = re.findall(r"export JOBWIRE_API_KEY=(\S+)", banner)[0]
        assert "Jobs served: reports.build" in banner
        client_env = env | {"JOBWIRE_API_KEY": key, "JOBWIRE_URL": f"http://127.0.0.1:{port}"}
        done = await asyncio.to_thread(
            subprocess.run,
            ["bash", "-euo", "pipefail", "-c", _as_run_here(submits, port)],
            cwd=tmp_path,
            env=client_env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=scaled(60),
            check=False,
        )
    finally:
        stack.send_signal(signal.SIGINT)  # Ctrl-C
        async with asyncio.timeout(scaled(40)):
            rest = await stack.stdout.read()
            assert await stack.wait() == 0, rest.decode()

    assert done.returncode == 0, done.stdout + done.stderr
    refusal, _, watched = done.stdout.partition("\n")
    assert refusal.startswith('{"error":"invalid_args","detail":[{"loc":["args","pages"],'), refusal
    # Exit code 0 is `jobwire submit --watch` saying the job completed.
    assert "3/3" in watched, watched
    assert done.stderr.startswith("jobwire: job "), done.stderr
