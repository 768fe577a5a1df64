"""`jobwire submit` and `jobwire watch` as a user runs them: real processes against a real
gateway, exit codes, JSON lines, the live view, and a network that drops mid-watch."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from jobwire.cli import main
from jobwire.client.commands import API_KEY_ENV, URL_ENV, parse_assignments
from shared.catalog import advertise
from shared.keys import Keys
from shared.settings import Settings
from tests.auth_support import ALICE_KEY, with_auth
from tests.client_support import CuttableProxy, running_proxy
from tests.conftest import Gateway, RunWorker, StartGateway
from tests.support import scaled, stream_ids, submit, wait_until
from tests.up_support import clean_env
from worker import demo
from worker.progress import Progress
from worker.registry import JobRegistry

JOBWIRE = Path(sys.executable).parent / "jobwire"
TEXT = " ".join(f"w{i}" for i in range(30))


@dataclass
class Finished:
    code: int
    out: str
    err: str

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.splitlines()]


def _env(**extra: str) -> dict[str, str]:
    # A wide, plain console: the live view's lines are not wrapped or coloured.
    return clean_env() | {"COLUMNS": "200", "NO_COLOR": "1"} | extra


@asynccontextmanager
async def jobwire(*args: str, **env: str) -> AsyncIterator[asyncio.subprocess.Process]:
    process = await asyncio.create_subprocess_exec(
        str(JOBWIRE),
        *args,
        env=_env(**env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def finish(process: asyncio.subprocess.Process, timeout: float = 20) -> Finished:
    async with asyncio.timeout(timeout):
        out, err = await process.communicate()
    assert process.returncode is not None
    return Finished(process.returncode, out.decode(), err.decode())


async def run(*args: str, **env: str) -> Finished:
    async with jobwire(*args, **env) as process:
        return await finish(process)


async def test_submit_watch_json_prints_every_event_and_exits_0(
    stack: Gateway, redis: Redis, settings: Settings
) -> None:
    done = await run(
        "submit", "demo.countdown", "seconds=0.3", "steps=3", "--watch", "--json",
        "--url", stack.url,
    )  # fmt: skip

    assert done.code == 0, done.err
    events = done.events()
    assert [e["type"] for e in events[:2]] == ["queued", "started"]
    assert events[0]["data"] == {"name": "demo.countdown", "args": {"seconds": 0.3, "steps": 3}}
    assert [e["data"]["current"] for e in events if e["type"] == "progress"][-1] == 3
    assert events[-1]["type"] == "completed"
    assert events[-1]["data"] == {"result": {"counted": 3}}
    job_id = events[0]["job"]
    assert [e["id"] for e in events] == await stream_ids(redis, settings, job_id)


async def test_a_failed_job_exits_1_and_the_url_comes_from_the_environment(
    stack: Gateway,
) -> None:
    done = await run(
        "submit", "demo.fail", "message=out of memory", "--watch", "--json",
        JOBWIRE_URL=stack.url,
    )  # fmt: skip

    assert done.code == 1, done.err
    failed = done.events()[-1]
    assert failed["type"] == "failed"
    assert failed["data"]["type"] == "RuntimeError"
    assert failed["data"]["message"] == "out of memory"


def test_the_client_settings_are_documented_and_no_server_setting_warns_about_them() -> None:
    readme = (Path(__file__).parents[3] / "README.md").read_text()

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Settings.from_env({URL_ENV: "http://gateway:8000", API_KEY_ENV: "k" * 20})
    assert [name for name in (URL_ENV, API_KEY_ENV) if f"`{name}`" not in readme] == []


async def test_a_cancelled_job_exits_130(stack: Gateway) -> None:
    args = ("submit", "demo.countdown", "seconds=10", "steps=100", "--watch", "--json")
    async with jobwire(*args, "--url", stack.url) as process, stack.client() as http:
        assert process.stdout is not None
        async with asyncio.timeout(scaled(10)):
            queued = json.loads(await process.stdout.readline())
            while json.loads(await process.stdout.readline())["type"] != "progress":
                pass
        cancel = await http.delete(f"/jobs/{queued['job']}")
        assert cancel.status_code == 202
        done = await finish(process)

    assert done.code == 130, done.err
    assert done.events()[-1]["type"] == "cancelled"


async def test_a_job_name_the_gateway_does_not_know_is_a_usage_error(stack: Gateway) -> None:
    done = await run("submit", "demo.nope", "--url", stack.url)

    assert done.code == 2
    assert "no job is named 'demo.nope'" in done.err
    assert "demo.countdown" in done.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["submit"], "the following arguments are required: name"),
        (["submit", "demo.countdown", "seconds"], "arguments are key=value, got 'seconds'"),
        (["submit", "demo.countdown", "=3"], "arguments are key=value, got '=3'"),
        (["submit", "demo.countdown", "a=1", "a=2"], "argument 'a' given twice"),
        (["watch"], "the following arguments are required: job_id"),
        (["watch", "abc", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    ],
)
def test_bad_usage_exits_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)

    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_values_are_json_when_they_parse_else_text() -> None:
    assert parse_assignments(
        ["seconds=10", "ratio=0.5", "text=hello", "flag=true", "none=null", "list=[1,2]",
         'quoted="10"', "empty=", "eq=a=b", "nan=NaN", "obj={\"k\": 1}"]
    ) == {
        "seconds": 10, "ratio": 0.5, "text": "hello", "flag": True, "none": None,
        "list": [1, 2], "quoted": "10", "empty": "", "eq": "a=b", "nan": "NaN", "obj": {"k": 1},
    }  # fmt: skip


async def test_submit_without_watch_prints_the_job_id(stack: Gateway) -> None:
    done = await run("submit", "demo.countdown", "seconds=0.1", "steps=1", "--url", stack.url)

    assert done.code == 0, done.err
    job_id = done.out.strip()
    assert re.fullmatch(r"[0-9a-f]{32}", job_id)
    assert f"jobwire watch {job_id}" in done.err
    async with stack.client() as http:
        assert (await http.get(f"/jobs/{job_id}")).status_code == 200


def _watching(proxy: CuttableProxy, connections: int) -> bool:
    """The watcher has made more than `connections` stream requests, and one is open."""
    gets = [head for head in proxy.requests if head.startswith(b"GET /jobs/")]
    return len(gets) > connections and proxy.open_connections > 0


async def _run_job_and_cut_twice(
    proxy: CuttableProxy, redis: Redis, key: str, start_worker: RunWorker
) -> None:
    """Starts the worker once the watcher is streaming (so the whole job runs while it
    watches), then cuts its connection twice mid-job, each time once it is streaming again."""
    await wait_until(lambda: _watching(proxy, 0), message="the watcher streaming")
    await start_worker()
    for cut, written_before_cut in enumerate((8, 20)):
        await wait_until(lambda c=cut: _watching(proxy, c), message="the watcher streaming")  # type: ignore[misc]

        async def written(n: int = written_before_cut) -> bool:
            return int(await redis.xlen(key)) >= n

        await wait_until(written, message="events written")
        proxy.cut()


@pytest.fixture
async def gateway_without_worker(
    start_gateway: StartGateway, redis: Redis, settings: Settings
) -> Gateway:
    """A gateway whose jobs wait in the queue until the test starts a worker."""
    await advertise(redis, Keys(settings.key_prefix), demo.jobs.specs())
    return await start_gateway()


async def test_watch_json_survives_the_network_dropping(
    gateway_without_worker: Gateway, start_worker: RunWorker, redis: Redis, settings: Settings
) -> None:
    gateway = gateway_without_worker
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        job_id = await submit(http, "demo.tokens", text=TEXT, delay_ms=30)
    key = Keys(settings.key_prefix).events(job_id)

    async with (
        running_proxy(gateway.url) as proxy,
        jobwire("watch", job_id, "--json", "--url", proxy.url) as process,
    ):
        await _run_job_and_cut_twice(proxy, redis, key, start_worker)
        done = await finish(process)

    assert proxy.cuts == 2
    assert done.code == 0, done.err
    ids = [e["id"] for e in done.events()]
    assert ids == await stream_ids(redis, settings, job_id)
    assert "".join(e["data"]["token"] for e in done.events() if e["type"] == "data") == TEXT
    assert done.err.count("reconnecting") == 2
    assert done.err.count("jobwire: reconnected") == 2


async def test_the_live_view_types_the_output_and_rides_out_a_dropped_network(
    gateway_without_worker: Gateway, start_worker: RunWorker, redis: Redis, settings: Settings
) -> None:
    first, second = "alpha beta gamma delta", " ".join(f"t{i}" for i in range(20))
    args = ("submit", "demo.tokens", f"text={first}\n{second}", "delay_ms=30", "--watch")
    async with (
        running_proxy(gateway_without_worker.url) as proxy,
        jobwire(*args, "--url", proxy.url) as process,
    ):
        await wait_until(lambda: _watching(proxy, 0), message="the watcher streaming")
        get = next(h for h in proxy.requests if h.startswith(b"GET /jobs/"))
        key = Keys(settings.key_prefix).events(get.split(b"/")[2].decode())
        await _run_job_and_cut_twice(proxy, redis, key, start_worker)
        done = await finish(process)

    assert proxy.cuts == 2
    assert done.code == 0, done.err
    lines = done.out.splitlines()
    assert lines.count(first) == 1
    assert lines.count(second) == 1
    assert lines.index(first) < lines.index(second)
    lost = [line for line in lines if line.startswith("connection lost (the connection was cut")]
    assert len(lost) == 2
    assert all(line.endswith("…") and "reconnecting in" in line for line in lost)
    assert 'completed: {"text":' in done.out
    assert re.search(r"^completed +demo\.tokens +━+ ", done.out, re.MULTILINE), done.out


async def test_the_live_view_ends_with_the_full_bar_and_the_result(stack: Gateway) -> None:
    done = await run(
        "submit", "demo.countdown", "seconds=0.2", "steps=2", "--watch", "--url", stack.url
    )

    assert done.code == 0, done.err
    assert 'completed: {"counted":2}' in done.out
    assert re.search(r"^completed +demo\.countdown +━+ +100\.0% +2/2 ", done.out, re.MULTILINE)


async def test_submit_watch_prints_the_job_id_first_so_ctrl_c_leaves_it(stack: Gateway) -> None:
    args = ("submit", "demo.countdown", "seconds=30", "steps=30", "--watch", "--url", stack.url)
    async with jobwire(*args) as process:
        assert process.stderr is not None
        async with asyncio.timeout(scaled(10)):
            first = (await process.stderr.readline()).decode()
        process.send_signal(signal.SIGINT)
        done = await finish(process)

    found = re.fullmatch(
        r"jobwire: job ([0-9a-f]{32}); watch it with: jobwire watch (\S+) (.*)\n", first
    )
    assert found is not None, first
    job_id = found[1]
    assert found[2] == job_id
    assert found[3] == f"--url {stack.url}"
    assert done.code == 130, done.err
    async with stack.client() as http:
        assert (await http.get(f"/jobs/{job_id}")).json()["name"] == "demo.countdown"


@pytest.fixture
async def keyed_stack(
    start_worker: RunWorker, start_gateway: StartGateway, settings: Settings
) -> Gateway:
    """A worker and a gateway that wants API keys (as `jobwire up` always starts one)."""
    await start_worker()
    return await start_gateway(with_auth(settings))


async def test_a_missing_or_wrong_key_says_how_to_give_one(keyed_stack: Gateway) -> None:
    url = keyed_stack.url
    missing = await run("submit", "demo.countdown", "--url", url)
    wrong = await run("submit", "demo.countdown", "--url", url, "--api-key", "x" * 24)
    watch_missing = await run("watch", "0123abcd", "--url", url)
    given = await run(
        "submit", "demo.countdown", "seconds=0.05", "--url", url, JOBWIRE_API_KEY=ALICE_KEY
    )

    assert missing.code == wrong.code == watch_missing.code == 1
    assert missing.err == (
        "jobwire: the gateway wants an API key:"
        " give one with --api-key KEY or JOBWIRE_API_KEY=KEY\n"
    )
    assert wrong.err == (
        "jobwire: the API key is not valid:"
        " give a valid one with --api-key KEY or JOBWIRE_API_KEY=KEY\n"
    )
    assert watch_missing.err.endswith(
        "--api-key KEY or JOBWIRE_API_KEY=KEY, or the job's watch token with --token TOKEN\n"
    )
    assert given.code == 0, given.err


async def test_refusal_details_are_printed_as_text_not_python_lists(stack: Gateway) -> None:
    done = await run("submit", "demo.countdown", "nope=1", "seconds=-5", "--url", stack.url)

    assert done.code == 2
    assert done.err == (
        "jobwire: invalid_args: nope: unknown argument: this job takes seconds, steps; "
        "seconds: -5 is less than the minimum of 0\n"
    )


async def test_submit_reads_each_value_by_the_jobs_schema(
    start_gateway: StartGateway, redis: Redis, settings: Settings
) -> None:
    registry = JobRegistry()
    registry.job("test.tagged")(tagged)
    await advertise(redis, Keys(settings.key_prefix), registry.specs())
    gateway = await start_gateway()

    done = await run(
        "submit", "test.tagged", "tags=a,b", "text=10", "ratio=2", "flag=true", "--json",
        "--url", gateway.url,
    )  # fmt: skip

    assert done.code == 0, done.err
    job_id = json.loads(done.out)["job_id"]
    async with gateway.client() as http:
        state = (await http.get(f"/jobs/{job_id}")).json()
    assert state["args"] == {"tags": ["a", "b"], "text": "10", "ratio": 2, "flag": True}


async def tagged(
    progress: Progress, tags: list[str], text: str = "", ratio: float = 1, flag: bool = False
) -> None:
    """Never runs: no worker in the test."""


async def _never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Takes the connection and the request, and says nothing, ever."""
    try:
        await reader.read()
    finally:
        writer.close()


async def test_watch_gives_up_on_a_gateway_that_never_answers() -> None:
    server = await asyncio.start_server(_never_answer, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with server:
        done = await run("watch", "0123abcd", "--url", url, "--give-up-after", "1")

    assert done.code == 1
    assert done.err == (
        f"jobwire: giving up: nothing from the gateway at {url} for 1 s"
        " (job 0123abcd; last: no response)\n"
    )
