"""README.md as a new user follows it: every fenced block is run by a test here (or the one
COVERAGE names), or registered as shown only, with the reason (tests/readme_support.py).
Commands run as written, in a shell, against a real `jobwire up` on a free port: only the
port, the scripts' folder and the README's placeholder job ids are put in."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import os
import re
import shlex
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import async_playwright

from jobwire.client.target import API_KEY_ENV, URL_ENV
from shared.settings import Settings
from tests.conftest import Gateway, RunWorker, StartGateway
from tests.file_server import serving
from tests.readme_support import (
    COVERAGE,
    ROOT,
    SCRIPTS,
    Block,
    RunBy,
    Shown,
    as_run_here,
    block_commands,
    readme_block,
    readme_blocks,
)
from tests.support import (
    RedisServer,
    collect_events,
    event_types,
    free_port,
    port_open,
    scaled,
    submit,
    wait_until,
)
from tests.up_support import UpStack, clean_env, jobwire_up, read_until, running
from tests.web_support import launch_chromium

# The README's shell lines run in bash, the way a terminal runs them.
BASH = ["bash", "-o", "pipefail", "-c"]


# The registry itself.


def _covering(block: Block) -> list[RunBy | Shown]:
    return [e for e in COVERAGE if e.section == block.section and e.snippet in block.text]


def _functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def test_every_block_is_run_by_a_test_or_shown_for_a_reason() -> None:
    problems = [
        f"{block}: in {len(_covering(block))} COVERAGE entries"
        for block in readme_blocks()
        if len(_covering(block)) != 1
    ]
    for entry in COVERAGE:
        named = f"COVERAGE entry {entry.section!r} / {entry.snippet!r}"
        found = [
            b for b in readme_blocks() if b.section == entry.section and entry.snippet in b.text
        ]
        if len(found) != 1:
            problems.append(f"{named}: matches {len(found)} README blocks, not 1")
        if isinstance(entry, RunBy):
            path, _, function = entry.test.partition("::")
            module = ROOT / path
            if not module.is_file() or function not in _functions(module):
                problems.append(f"{named}: its test {entry.test} does not exist")
            elif entry.snippet not in module.read_text():
                problems.append(f"{named}: {path} never looks its block up with the snippet")

    assert problems == [], (
        "Each README block needs exactly one entry in COVERAGE (tests/readme_support.py):"
        " RunBy(section, snippet, 'tests/….py::test_…') when a test runs it, looking it up with"
        " readme_block(section, snippet), or Shown(section, snippet, reason) when it cannot run;"
        " the snippet is any text of the block found in no other block of its section.\n"
        + "\n".join(problems)
    )


# A terminal against one `jobwire up` for the whole module.


@pytest.fixture(scope="module")
async def demo_stack() -> AsyncIterator[UpStack]:
    """The README's run command, as written, from the checkout, on a free port."""
    [up] = block_commands(readme_block("The two commands", "jobwire up"))
    env = clean_env(JOBWIRE_PORT=str(free_port()))
    async with jobwire_up(as_run_here(up.text, 0), env, ROOT) as stack:
        yield stack


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


class Terminal:
    """One shell session: a variable a line assigns (`AUTH="…"`) is there for the next."""

    def __init__(self, env: dict[str, str], port: int = 8000, cwd: Path = ROOT) -> None:
        """`env`: the session's variables; `port`: the gateway's, put in for 8000."""
        self.env, self.port, self.cwd = dict(env), port, cwd

    def activate(self) -> None:
        """What `. .venv/bin/activate` does for the commands: the venv's scripts first."""
        self.env["PATH"] = f"{SCRIPTS}{os.pathsep}{self.env['PATH']}"

    def here(self, command: str, job_id: str = "") -> str:
        return as_run_here(command, self.port, job_id)

    async def run(self, command: str, job_id: str = "", timeout: float = 30) -> Ran:
        command = self.here(command, job_id)
        if assigned := re.fullmatch(r"(\w+)=(.*)", command):
            # Evaluated by bash, as typed, then exported to the lines after it.
            command += f'; printf %s "${assigned[1]}"'
        process = await self.start(command)
        async with asyncio.timeout(scaled(timeout)):
            out, err = await process.communicate()
        ran = Ran(process.returncode or 0, out.decode(), err.decode())
        if assigned:
            self.env[assigned[1]] = ran.stdout
        return ran

    async def start(self, command: str, *, typing: bool = False) -> asyncio.subprocess.Process:
        """`command` (already `here`) in a process group of its own, so that Ctrl-C reaches
        what it runs; `typing`: its input stays open, as a terminal's does."""
        return await asyncio.create_subprocess_exec(
            *BASH,
            command,
            cwd=self.cwd,
            env=self.env,
            stdin=asyncio.subprocess.PIPE if typing else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )


def ctrl_c(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGINT)


def _records(text: str) -> list[list[tuple[str, str]]]:
    """An event stream's blocks, each its `field: value` lines (a partial last one dropped)."""
    blocks = re.split(r"\r?\n\r?\n", text)
    complete = blocks[:-1] if not text.endswith("\n\n") else blocks
    return [[_field(line) for line in block.splitlines()] for block in complete if block.strip()]


def _field(line: str) -> tuple[str, str]:
    name, _, value = line.partition(": ")
    return name, value


async def _read_records(stream: asyncio.StreamReader, count: int) -> str:
    """What `stream` writes until it holds `count` complete event-stream blocks."""
    seen = ""
    async with asyncio.timeout(scaled(20)):
        while len(_records(seen)) < count:
            chunk = await stream.read(4096)
            assert chunk, f"the stream ended after {seen!r}"
            seen += chunk.decode()
    return seen


def _shown_json(shown: str, stack: UpStack, job_id: str) -> Any:
    """Shown output that is JSON once the README's placeholders are real (else None)."""
    text = as_run_here(shown, stack.port, job_id).replace("\n", "")
    try:
        return json.loads(text)
    except ValueError:
        return None


def _keys_written(shown: str) -> list[str]:
    return re.findall(r'"(\w+)":', shown)


def _all_keys(value: Any) -> list[str]:
    """The keys of a JSON value, nested ones included, in the order they are written."""
    if isinstance(value, dict):
        return [k for key, item in value.items() for k in (key, *_all_keys(item))]
    if isinstance(value, list):
        return [key for item in value for key in _all_keys(item)]
    return []


def _in_order(some: list[str], every: list[str]) -> bool:
    rest = iter(every)
    return all(key in rest for key in some)


def _assert_stream_like_shown(shown: str, written: str, stack: UpStack, job_id: str) -> None:
    """Block by block: the same fields in the same order, the same `retry`, event types and
    envelope keys; a data line that is whole JSON in the README has the same data."""
    expected, actual = _records(shown + "\n"), _records(written)[: len(_records(shown + "\n"))]
    assert [[name for name, _ in block] for block in actual] == [
        [name for name, _ in block] for block in expected
    ], written
    for want, got in zip(expected, actual, strict=True):
        for (name, shown_value), (_, value) in zip(want, got, strict=True):
            if name in ("retry", "event"):
                assert value == shown_value
            elif name == "id":
                assert re.fullmatch(r"\d+-\d+", value), value
            elif name == "data":
                event = json.loads(value)
                assert _in_order(_keys_written(shown_value), _all_keys(event)), value
                if (whole := _shown_json(shown_value, stack, job_id)) is not None:
                    assert event["data"] == whole["data"]
                    assert event["job"] == whole["job"]


# Five minutes with curl, and the event envelope of Events.


@pytest.mark.timeout(90)
async def test_the_curl_tour_runs(demo_stack: UpStack) -> None:
    terminal = Terminal(demo_stack.env, demo_stack.port)
    auth, post = block_commands(readme_block("Five minutes with curl", "-X POST"))
    [watch] = block_commands(readme_block("Five minutes with curl", "retry: 2000"))
    [resume] = block_commands(readme_block("Five minutes with curl", "Last-Event-ID:"))
    one_liners = block_commands(readme_block("Five minutes with curl", "# the state snapshot"))

    assert (await terminal.run(auth.text)).returncode == 0
    assert terminal.env["AUTH"] == f"Authorization: Bearer {demo_stack.key}"
    posted = await terminal.run(post.text)
    status, *headers = posted.stdout.split("\r\n\r\n", 1)[0].split("\r\n")
    body = json.loads(posted.stdout.split("\r\n\r\n", 1)[1])
    job_id = body["job_id"]
    shown_status, shown_header, *shown_body = post.shown.splitlines()
    assert status == shown_status
    assert terminal.here(shown_header, job_id) in headers
    shown_answer = _shown_json("".join(shown_body), demo_stack, job_id)
    assert shown_answer is not None, post.shown
    assert body | {"watch_token": ""} == shown_answer | {"watch_token": ""}

    # Watched until the events shown are in, then Ctrl-C.
    watching = await terminal.start(terminal.here(watch.text, job_id))
    assert watching.stdout is not None
    shown_count = len(_records(watch.shown + "\n"))
    written = await _read_records(watching.stdout, shown_count)
    ctrl_c(watching)
    await watching.wait()
    _assert_stream_like_shown(watch.shown, written, demo_stack, job_id)
    seen = [dict(block)["id"] for block in _records(written) if "id" in dict(block)]

    # Resumed from the last id seen while the one-liners run; the cancel ends its stream.
    [shown_last] = re.findall(r"Last-Event-ID: ([\d-]+)", resume.text)
    resumed = await terminal.start(terminal.here(resume.text, job_id).replace(shown_last, seen[-1]))
    outputs = [await terminal.run(line.text, job_id) for line in one_liners]
    async with asyncio.timeout(scaled(20)):
        rest, _ = await resumed.communicate()
    assert resumed.returncode == 0

    snapshot, cancelled, ready, metrics = (_json_or_text(ran.stdout) for ran in outputs)
    assert (snapshot["job_id"], snapshot["name"]) == (job_id, "demo.countdown")
    assert (cancelled["job_id"], cancelled["status"]) == (job_id, "cancelling")
    assert (ready["status"], ready["workers"]) == ("ok", 1)
    assert metrics.startswith("jobwire_")
    assert all(line.startswith("jobwire_") for line in metrics.splitlines())
    after = [dict(block) for block in _records(rest.decode()) if "id" in dict(block)]
    assert after[-1]["event"] == "cancelled"
    # After the walk-through, the same line shows how the job ended.
    counted = (await terminal.run(one_liners[-1].text, job_id)).stdout
    assert 'jobwire_jobs_ended_total{job="demo.countdown",outcome="cancelled"} 1.0' in counted
    async with httpx.AsyncClient(
        base_url=demo_stack.url, headers={"Authorization": f"Bearer {demo_stack.key}"}
    ) as client:
        stream = await collect_events(client, job_id)
    # Exactly the events after the last one seen: none missed, none twice.
    assert seen + [block["id"] for block in after] == [event.id for event in stream]
    envelope = readme_block("Events", '"type": "progress"').text
    assert list(stream[-1].json()) == _keys_written(envelope)


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


# WebSocket.


@pytest.mark.timeout(60)
async def test_the_websocket_line_runs(demo_stack: UpStack) -> None:
    [line] = block_commands(readme_block("WebSocket", "-m websockets"))
    shown = json.loads(readme_block("WebSocket", '"type": "progress"').text.replace(", …", ""))
    terminal = Terminal(demo_stack.env, demo_stack.port)
    async with httpx.AsyncClient(
        base_url=demo_stack.url, headers={"Authorization": f"Bearer {demo_stack.key}"}
    ) as client:
        answer = (
            await client.post(
                "/jobs", json={"name": "demo.countdown", "args": {"seconds": 0.3, "steps": 1}}
            )
        ).json()
        terminal.env |= {"JOB": answer["job_id"], "WATCH_TOKEN": answer["watch_token"]}

        watching = await terminal.start(terminal.here(line.text), typing=True)
        assert watching.stdout is not None
        output = (await read_until(watching.stdout, b"Connection closed", scaled(20))).decode()
        assert watching.stdin is not None
        watching.stdin.close()
        async with asyncio.timeout(scaled(10)):
            assert await watching.wait() == 0, output
        stream = await collect_events(client, answer["job_id"])

    # The client prints each message received as `< message`.
    messages = [json.loads(text) for text in re.findall(r"< (\{.*\})", output)]
    assert [m.get("id") for m in messages] == [event.id for event in stream] + [None]
    assert [m["type"] for m in messages] == [*event_types(stream), "end"]
    [progress, *_] = [m for m in messages if m["type"] == "progress"]
    assert list(progress) == list(shown)
    assert _in_order(list(shown["data"]), list(progress["data"]))
    assert "Connection closed: 1000 (OK)." in output


# Python client and CLI: the examples and the terminal's lines side by side (the lines follow
# 10-second jobs).


@pytest.mark.timeout(90)
async def test_the_client_and_cli_blocks_run(demo_stack: UpStack) -> None:
    await asyncio.gather(_the_cli_lines_run(demo_stack), _the_client_examples_run(demo_stack))


async def _the_cli_lines_run(demo_stack: UpStack) -> None:
    terminal = Terminal(demo_stack.env, demo_stack.port)
    terminal.activate()
    lines = block_commands(readme_block("Python client and CLI", "jobwire watch"))
    submits = [line.text for line in lines if "JOB_ID" not in line.text]
    watches = [line.text for line in lines if "JOB_ID" in line.text]
    [prints_id] = [line for line in submits if "--watch" not in line]

    # The submits as typed in terminals side by side, then the watches of the job printed.
    done = dict(zip(submits, await asyncio.gather(*map(terminal.run, submits)), strict=True))
    job_id = done[prints_id].stdout.strip()
    watched = await asyncio.gather(*(terminal.run(line, job_id) for line in watches))
    done |= zip(watches, watched, strict=True)

    assert {line: ran.returncode for line, ran in done.items()} == dict.fromkeys(done, 0), done
    assert re.fullmatch(r"[0-9a-f]{32}", job_id), done[prints_id]
    for line, ran in done.items():
        if "--watch" in line:
            assert ran.stderr.startswith("jobwire: job "), ran.stderr
    [tokens] = [ran for line, ran in done.items() if "demo.tokens" in line]
    tokens_id = re.findall(r"^jobwire: job (\w+);", tokens.stderr)[0]
    [as_json] = [ran for line, ran in done.items() if "| jq .type" in line]
    async with httpx.AsyncClient(
        base_url=demo_stack.url, headers={"Authorization": f"Bearer {demo_stack.key}"}
    ) as client:
        stream = await collect_events(client, job_id)
        typed = (await client.get(f"/jobs/{tokens_id}")).json()["result"]["text"]
    assert " ".join(typed.split()) in " ".join(tokens.stdout.split()), tokens.stdout
    assert as_json.stdout.split() == [f'"{kind}"' for kind in event_types(stream)]
    assert event_types(stream)[-1] == "completed"


async def _the_client_examples_run(demo_stack: UpStack) -> None:
    section = "Python client and CLI"
    examples = [
        readme_block(section, snippet).text
        for snippet in ("client.job(job.job_id)", "SyncClient()", "client.follow(jobs)")
    ]
    env = demo_stack.env
    assert {env[URL_ENV], env[API_KEY_ENV]} == {demo_stack.url, demo_stack.key}

    async def run(example: str) -> str:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            example,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), scaled(30))
        assert process.returncode == 0, err.decode()
        return out.decode()

    looked_up, synchronous, streamed = await asyncio.gather(*map(run, examples))

    assert "hello there" in looked_up
    assert "result: {'text': 'hello there'" in looked_up
    assert "'status': 'completed'" in looked_up  # the same job, looked up by its id
    assert synchronous.strip() == "{'counted': 10}"
    ran, *followed, waited = streamed.splitlines()
    assert ran == "one request"
    assert re.fullmatch(r"job idem-[0-9a-f]+: completed", followed[0])
    assert [line.split()[1] for line in followed[1:]].count("completed") == 3
    assert waited == str([{"counted": 2}] * 3)


# Writing a job, and Typed arguments: the blocks as modules, run by a real worker.


@pytest.fixture
def importable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on the path for modules written from the README; they are forgotten after."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if getattr(sys.modules[name], "__file__", "") and str(tmp_path) in str(
            sys.modules[name].__file__
        ):
            del sys.modules[name]


async def _stack_running(
    block: Block,
    module: str,
    folder: Path,
    settings: Settings,
    start_worker: RunWorker,
    start_gateway: StartGateway,
) -> Gateway:
    (folder / f"{module}.py").write_text(block.text)
    await start_worker(settings.replace(jobs=f"{module}:jobs"))
    return await start_gateway()


async def test_the_job_written_runs(
    importable: Path, settings: Settings, start_worker: RunWorker, start_gateway: StartGateway
) -> None:
    block = readme_block("Writing a job", "media.transcode")
    stack = await _stack_running(
        block, "transcode", importable, settings, start_worker, start_gateway
    )
    async with stack.client() as client:
        job_id = await submit(client, "media.transcode", url="https://example.com/in.mov")
        events = await collect_events(client, job_id)

    # rate, eta_s and the worker's id are the moment's: their own tests check them.
    written = [(e.event, _without(e.json()["data"], "rate", "eta_s", "worker")) for e in events]
    assert written == [
        ("queued", {"name": "media.transcode", "args": {"url": "https://example.com/in.mov"}}),
        ("started", {"attempt": 1}),
        ("progress", _progress(0, "download", None)),
        ("progress", _progress(10, "download", "downloaded")),
        ("progress", _progress(10, "encode", "downloaded")),
        ("data", {"preview": "frame-0001.jpg"}),
        ("log", {"level": "info", "message": "using libx264"}),
        (
            "error",
            {"type": "SubtitleError", "message": "subtitle track unreadable", "retryable": False},
        ),
        ("completed", {"result": {"url": "s3://…/out.mp4"}}),
    ]


def _progress(current: int, stage: str, message: str | None) -> dict[str, Any]:
    return {
        "current": current,
        "total": 100,
        "percent": float(current),
        "stage": stage,
        "message": message,
    }


def _without(data: dict[str, Any], *names: str) -> dict[str, Any]:
    return {name: value for name, value in data.items() if name not in names}


async def test_the_typed_job_checks_its_args(
    importable: Path, settings: Settings, start_worker: RunWorker, start_gateway: StartGateway
) -> None:
    job = readme_block("Typed arguments", "images.resize")
    refusal = json.loads(readme_block("Typed arguments", '"invalid_args"').text)
    stack = await _stack_running(job, "resize", importable, settings, start_worker, start_gateway)
    async with stack.client() as client:
        refused = await client.post(
            "/jobs",
            json={
                "name": "images.resize",
                "args": {"size": {"width": "wide", "height": 600}, "quality": 0},
            },
        )
        job_id = await submit(
            client, "images.resize", url="https://example.com/a.png", size={"width": 8, "height": 6}
        )
        events = await collect_events(client, job_id)

    assert (refused.status_code, refused.json()) == (422, refusal)
    assert events[-1].json()["data"] == {"result": {"pixels": 48}}


# Your jobs: a module of one's own, `jobwire up` with its path, then the section's commands.


@pytest.mark.timeout(120)
async def test_your_jobs_run_as_written(tmp_path: Path, redis_server: RedisServer) -> None:
    """The section's two stacks side by side: `myjobs`, and the wordcount example."""
    (tmp_path / "mine").mkdir()
    (tmp_path / "files").mkdir()
    await asyncio.gather(
        _my_jobs_run(tmp_path / "mine", redis_server),
        _the_wordcount_example_runs_on_a_local_file(tmp_path / "files"),
    )


async def _my_jobs_run(tmp_path: Path, redis_server: RedisServer) -> None:
    section = "Your jobs"
    module = readme_block(section, "async def build_report").text
    [up] = block_commands(readme_block(section, "up myjobs:jobs"))
    submits = readme_block(section, "jobwire submit reports.build").text
    workers = block_commands(readme_block(section, "arq worker.main.WorkerSettings"))
    (tmp_path / "myjobs.py").write_text(module)
    tag = f"t{free_port()}"
    env = clean_env(
        JOBWIRE_PORT=str(free_port()),
        JOBWIRE_REDIS_URL=redis_server.url,
        JOBWIRE_KEY_PREFIX=tag,
        JOBWIRE_QUEUE_NAME=f"{tag}:queue",
    )

    async with jobwire_up(as_run_here(up.text, 0), env, tmp_path) as stack:
        assert "Jobs served: reports.build" in stack.banner
        terminal = Terminal(stack.env, stack.port, tmp_path)
        async with httpx.AsyncClient(
            base_url=stack.url, headers={"Authorization": f"Bearer {stack.key}"}
        ) as client:
            # The worker lines in terminals of their own while the job is submitted.
            lines = [terminal.here(worker.text) for worker in workers]
            done, served = await asyncio.gather(
                terminal.run(submits, timeout=60), _served_by(client, lines, env, tmp_path)
            )
            # "or open the page's link that `jobwire up` printed: the job is listed there too"
            [job_id] = re.findall(r"^jobwire: job (\w+);", done.stderr)
            [link] = re.findall(r"(http://\S+/#key=\S+)", stack.banner)
            card = await _card_on_the_page(link, job_id)

    assert done.returncode == 0, done.stdout + done.stderr
    refusal, _, watched = done.stdout.partition("\n")
    assert refusal.startswith('{"error":"invalid_args","detail":[{"loc":["args","pages"],'), refusal
    # Exit code 0 is `jobwire submit --watch` saying the job completed.
    assert "3/3" in watched, watched
    assert done.stderr.startswith("jobwire: job "), done.stderr
    # Each worker line, beside the stack's own worker, serves the jobs its line names.
    assert served[0].startswith("reports.build, demo.countdown, "), served
    assert served[1] == "reports.build"
    assert "reports.build" in card, card
    assert 'Result: {"month":"2025-05","pages":3}' in card, card


async def _card_on_the_page(link: str, job_id: str) -> str:
    """The text of the job's card on the page opened at `link`, once it shows it completed."""
    async with async_playwright() as playwright:
        browser = await launch_chromium(playwright)
        try:
            page = await browser.new_page()
            await page.goto(link)
            done = page.locator(f'.job[data-job-id="{job_id}"][data-status="completed"]')
            await done.wait_for(timeout=scaled(15) * 1000)
            return await done.inner_text()
        finally:
            await browser.close()


async def _served_by(
    client: httpx.AsyncClient, lines: list[str], env: dict[str, str], cwd: Path
) -> list[str]:
    """The jobs each worker started by `lines` says it runs (arq's start line, at INFO), once
    the gateway counts them all alive beside the stack's own; then each is stopped with
    Ctrl-C, and must exit with 0."""
    async with contextlib.AsyncExitStack() as stack:
        env = env | {"JOBWIRE_LOG_LEVEL": "INFO"}
        workers = [
            await stack.enter_async_context(running([*BASH, line], env, cwd)) for line in lines
        ]
        starts = [await _start_line(worker) for worker in workers]
        await wait_until(
            lambda: _workers_alive(client, 1 + len(lines)),
            timeout=30,
            interval=0.1,
            message="all alive",
        )
    assert [worker.returncode for worker in workers] == [0] * len(lines), starts
    found = [re.findall(r"Starting worker for \d+ functions: (.*)", s.decode()) for s in starts]
    return [str(functions) for [functions] in found]


async def _start_line(worker: asyncio.subprocess.Process) -> bytes:
    assert worker.stdout is not None
    return await read_until(worker.stdout, b"Starting worker for", scaled(30))


async def _workers_alive(client: httpx.AsyncClient, count: int) -> bool:
    return bool((await client.get("/system")).json()["workers"] == count)


async def _the_wordcount_example_runs_on_a_local_file(tmp_path: Path) -> None:
    up, submit_line = block_commands(readme_block("Your jobs", "examples.wordcount.jobs:jobs"))
    (tmp_path / "book.txt").write_text("the cat\nthe dog\n" * 500)
    url = re.findall(r"url=(\S+)", submit_line.text)[0]
    env = clean_env(JOBWIRE_PORT=str(free_port()))

    with serving(tmp_path) as files:
        async with jobwire_up(as_run_here(up.text, 0), env, ROOT) as stack:
            ran = await Terminal(stack.env, stack.port).run(
                submit_line.text.replace(url, f"{files}/book.txt")
            )

    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert '"top":[["the",1000],["cat",500],["dog",500]]' in ran.stdout, ran.stdout


# Scaling out: the gateways, the worker and HAProxy started by hand, as the block does.


@pytest.mark.timeout(90)
async def test_the_gateways_by_hand_serve_through_the_balancer(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    by_hand = readme_block("Scaling out", "/usr/sbin/haproxy").text
    [exports] = [
        line.text
        for line in block_commands(readme_block("docker-compose", "docker compose up --build"))
        if line.text.startswith("export JOBWIRE_API_KEYS=")
    ]
    ports = {number: str(free_port()) for number in re.findall(r"\b80\d\d\b", by_hand)}
    script = re.sub(r"\b80\d\d\b", lambda number: ports[number[0]], by_hand)
    (tmp_path / "balancer").mkdir()
    (tmp_path / "balancer" / "haproxy.cfg").write_text((ROOT / "balancer/haproxy.cfg").read_text())
    tag = f"t{free_port()}"
    env = clean_env(
        JOBWIRE_REDIS_URL=redis_server.url,
        JOBWIRE_KEY_PREFIX=tag,
        JOBWIRE_QUEUE_NAME=f"{tag}:queue",
    )
    # The keys made as the docker-compose section makes them.
    made = await Terminal(env).run(
        f'{exports}; printf "%s %s" "$JOBWIRE_API_KEYS" "$JOBWIRE_TOKEN_SECRET"'
    )
    keys, secret = made.stdout.split()
    env |= {"JOBWIRE_API_KEYS": keys, "JOBWIRE_TOKEN_SECRET": secret}
    balancer = f"http://127.0.0.1:{ports['8080']}"

    stack = await Terminal(env, cwd=tmp_path).start(as_run_here(script, 0))
    try:
        async with httpx.AsyncClient(
            base_url=balancer, headers={"Authorization": f"Bearer {keys.partition(':')[2]}"}
        ) as client:

            async def all_ready() -> bool:
                assert stack.returncode is None, await stack.communicate()
                with contextlib.suppress(httpx.HTTPError):
                    ready = await client.get("/readyz")  # HAProxy's own 503 until one is up
                    return ready.status_code == 200 and ready.json()["workers"] == 1
                return False

            await wait_until(all_ready, timeout=30, interval=0.1, message="the balancer")
            job_id = await submit(client, "demo.countdown", seconds=0.2, steps=1)
            events = await collect_events(client, job_id)
    finally:
        # Background jobs of a script ignore Ctrl-C: everything it started is sent SIGTERM.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(stack.pid, signal.SIGTERM)
        async with asyncio.timeout(scaled(30)):
            await stack.wait()
    assert event_types(events)[-1] == "completed"
    await wait_until(
        lambda: not any(map(port_open, map(int, ports.values()))), message="all stopped"
    )


# What is checked rather than run.


def test_the_setup_command_is_the_install_ci_runs() -> None:
    [setup] = block_commands(readme_block("The two commands", "pip install"))
    venv, install = (shlex.split(part) for part in setup.text.split(" && "))
    ci = (ROOT / ".ci" / "run").read_text()

    # The same venv, made by the same python3 when none is there yet.
    assert venv[1:] == ["-m", "venv", ".venv"]
    assert f'"$python" {shlex.join(venv[1:])}' in ci
    assert re.search(rf"for candidate in \$\{{PYTHON:-\}} {venv[0]} ", ci)
    # The same install, quieter.
    [ci_install] = [line for line in ci.splitlines() if "pip install" in line]
    quiet = {"--quiet", "--disable-pip-version-check"}
    assert install[0] == ".venv/bin/pip"
    assert [arg for arg in shlex.split(ci_install) if arg not in quiet] == [
        ".venv/bin/python",
        "-m",
        "pip",
        *install[1:],
    ]


def test_the_layout_names_what_is_there() -> None:
    layout = readme_block("Layout", "jobwire/").text
    folders: list[str] = []
    top = ""
    # A folder at the start of a line, or under one, two spaces in.
    for indent, name in re.findall(r"^( {0,2})([\w.-]+/)\s", layout, re.MULTILINE):
        top = name if not indent else top
        folders.append(name if not indent else top + name)

    assert [folder for folder in folders if not (ROOT / folder).is_dir()] == []
