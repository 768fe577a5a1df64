"""`jobwire up`, the README's run command: the whole stack starts, serves a job end to end,
and Ctrl-C stops every process it started."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import httpx
import pytest

from jobwire.cli import COMMANDS, main
from tests.support import collect_events, free_port, port_open, scaled, submit

JOBWIRE = Path(sys.executable).parent / "jobwire"


async def _read_until(stream: asyncio.StreamReader, marker: bytes, timeout: float) -> bytes:
    seen = b""
    async with asyncio.timeout(timeout):
        while marker not in seen:
            line = await stream.readline()
            if not line:
                raise AssertionError(f"output ended before {marker!r}: {seen.decode()}")
            seen += line
    return seen


@pytest.mark.timeout(90)
async def test_up_runs_the_stack_and_ctrl_c_stops_everything() -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBWIRE_")}
    env |= {"JOBWIRE_PORT": str(port), "JOBWIRE_LOG_LEVEL": "WARNING"}
    process = await asyncio.create_subprocess_exec(
        str(JOBWIRE),
        "up",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    try:
        banner = await _read_until(process.stdout, b"Press Ctrl-C", timeout=60)
        redis_port = int(re.findall(rb"redis://127\.0\.0\.1:(\d+)", banner)[0])
        assert f"curl -N http://127.0.0.1:{port}/jobs/JOB_ID/events".encode() in banner
        # Auth is on: the key made for this run is printed once, in the page's URL too.
        key = re.findall(rb"/#key=([A-Za-z0-9_-]+)", banner)[0].decode()
        assert f"export JOBWIRE_API_KEY={key}".encode() in banner
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            timeout=10,
            headers={"Authorization": f"Bearer {key}"},
        ) as client:
            job_id = await submit(client, "demo.countdown", seconds=0.2, steps=2)
            events = await collect_events(client, job_id)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as anyone:
            assert (await anyone.get(f"/jobs/{job_id}")).status_code == 401
        assert events[-1].event == "completed"
        assert port_open(redis_port)
    finally:
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(scaled(40)):
            output = await process.stdout.read()
            returncode = await process.wait()

    assert returncode == 0, output.decode()
    assert not port_open(port)
    assert not port_open(redis_port), "the private redis-server was stopped"


def test_commands_are_the_documented_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert set(COMMANDS) == {"up", "gateway", "worker"}
    with pytest.raises(SystemExit) as exit_info:
        main(["no-such-command"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
