"""`jobwire up`, the README's run command: the whole stack starts, serves a job end to end,
and Ctrl-C stops every process it started."""

from __future__ import annotations

import asyncio
import re
import shlex
import signal
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from jobwire.cli import COMMANDS, main
from tests.support import RedisServer, collect_events, free_port, port_open, scaled, submit
from tests.up_support import clean_env, read_until, running

JOBWIRE = Path(sys.executable).parent / "jobwire"


@pytest.mark.timeout(90)
async def test_up_runs_the_stack_and_ctrl_c_stops_everything() -> None:
    port = free_port()
    env = clean_env(JOBWIRE_PORT=str(port))
    process = await asyncio.create_subprocess_exec(
        str(JOBWIRE),
        "up",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    try:
        banner = await read_until(process.stdout, b"Press Ctrl-C", scaled(60))
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


@pytest.mark.timeout(90)
async def test_up_prints_commands_for_its_port_and_no_redis_password(
    redis_server: RedisServer,
) -> None:
    port, password, tag = free_port(), "not-for-the-banner", f"t{uuid.uuid4().hex[:10]}"
    # The session's redis-server has no password: its default user takes any.
    redis_url = f"redis://default:{password}@127.0.0.1:{redis_server.port}/0"
    env = clean_env(
        JOBWIRE_PORT=str(port),
        JOBWIRE_REDIS_URL=redis_url,
        JOBWIRE_KEY_PREFIX=tag,
        JOBWIRE_QUEUE_NAME=f"{tag}:queue",
    )
    async with running([str(JOBWIRE), "up"], env) as up:
        assert up.stdout is not None
        banner = (await read_until(up.stdout, b"Press Ctrl-C", scaled(60))).decode()
        key = re.findall(r"export JOBWIRE_API_KEY=(\S+)", banner)[0]
        command = next(line.strip() for line in banner.splitlines() if "jobwire submit" in line)
        # The banner's command as a user pastes it, with the key exported as it says.
        async with running(
            [str(JOBWIRE), *shlex.split(command)[1:]], clean_env(JOBWIRE_API_KEY=key)
        ) as client:
            assert client.stdout is not None
            async with asyncio.timeout(scaled(20)):
                first = (await client.stdout.readline()).decode()
        assert await client.wait() == 130
        up.send_signal(signal.SIGINT)
        async with asyncio.timeout(scaled(40)):
            output = (await up.stdout.read()).decode()
            assert await up.wait() == 0, output

    assert password not in banner + output
    assert f"events and state in redis://default:***@127.0.0.1:{redis_server.port}/0" in banner
    assert set(re.findall(r"http://127\.0\.0\.1:(\d+)", banner)) == {str(port)}
    assert command.endswith(f"--url http://127.0.0.1:{port}")
    assert first.startswith("jobwire: job "), first  # submitted: the gateway took the key


async def _answer_as_ready(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers any request as a ready gateway of another stack would."""
    body = b'{"status":"ready","workers":1}'
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
    try:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(head + b"content-length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


@pytest.mark.timeout(60)
async def test_up_on_a_busy_port_says_so_and_prints_no_banner() -> None:
    server = await asyncio.start_server(_answer_as_ready, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, running([str(JOBWIRE), "up"], clean_env(JOBWIRE_PORT=str(port))) as up:
        assert up.stdout is not None
        async with asyncio.timeout(scaled(30)):
            output = (await up.stdout.read()).decode()
            returncode = await up.wait()

    assert returncode == 1
    assert output == (
        f"jobwire: port {port} on 127.0.0.1 is already in use (another `jobwire up`?);"
        " set JOBWIRE_PORT to a free port\n"
    )
