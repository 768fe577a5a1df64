"""README.md's fenced code blocks, each with the section it is in, and the registry of how
each is covered: run by a named test, or shown only, for a stated reason. A block in neither
fails `tests/test_readme.py`, so a new one is run from the start or says why it cannot be."""

from __future__ import annotations

import functools
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
# The scripts of the interpreter running the tests: what `.venv/bin/` is in a checkout.
SCRIPTS = Path(sys.executable).parent

_HEADING = re.compile(r"^#{2,3} (?P<title>.+?)\s*$")
_FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")


@dataclass(frozen=True)
class Block:
    """A fenced code block: the nearest `##`/`###` heading above it, its place among that
    section's blocks (from 1), its info string ("python", "" …), its text and the line of its
    opening fence."""

    section: str
    index: int
    info: str
    text: str
    line: int

    def __str__(self) -> str:
        first = next((line for line in self.text.splitlines() if line.strip()), "")
        return f"README.md:{self.line} ({self.section!r} block {self.index}: {first[:60]!r})"


def readme_blocks(text: str | None = None) -> list[Block]:
    """Every fenced block of README.md (or of `text`), in order."""
    return list(_blocks(README.read_text() if text is None else text))


@functools.cache
def _blocks(text: str) -> tuple[Block, ...]:
    lines = text.splitlines()
    blocks: list[Block] = []
    section, count = "", 0
    number = 0
    while number < len(lines):
        line = lines[number]
        number += 1
        if heading := _HEADING.match(line):
            section, count = heading["title"], 0
            continue
        if not (fence := _FENCE.match(line)):
            continue
        opening, body = number, []
        while number < len(lines) and not lines[number].startswith(fence["fence"]):
            body.append(lines[number])
            number += 1
        number += 1  # the closing fence
        count += 1
        info = fence["info"].strip()
        blocks.append(Block(section, count, info, "\n".join(body) + "\n", opening))
    return tuple(blocks)


def readme_block(section: str, snippet: str) -> Block:
    """The one block of `section` whose text holds `snippet`."""
    found = [b for b in readme_blocks() if b.section == section and snippet in b.text]
    assert len(found) == 1, f"{len(found)} blocks of README section {section!r} hold {snippet!r}"
    return found[0]


@dataclass(frozen=True)
class Command:
    """A command of a block, its continuation lines kept, and the output the README shows
    after it (in a `$ ` transcript)."""

    text: str
    shown: str = ""


def block_commands(block: Block) -> list[Command]:
    """The commands of a shell block. In a transcript the commands are the `$ ` lines (with
    their continuation lines) and the rest is their output; else every line is a command."""
    lines = block.text.splitlines()
    transcript = any(line.startswith("$ ") for line in lines)
    commands: list[Command] = []
    rest = iter(lines)
    for line in rest:
        if transcript and not line.startswith("$ "):
            last = commands[-1]
            commands[-1] = Command(last.text, last.shown + line + "\n")
            continue
        if not line.strip():
            continue
        text = line.removeprefix("$ ") if transcript else line
        while text.endswith("\\"):
            text += "\n" + next(rest)
        commands.append(Command(text))
    return commands


def as_run_here(command: str, port: int, job_id: str = "") -> str:
    """`command` as written, pointed at a test's stack: its port for 8000, this interpreter's
    scripts for `.venv/bin/`, and a real job for the README's `3f0c…` and `JOB_ID`."""
    command = command.replace(".venv/bin/", f"{SCRIPTS}/")
    command = re.sub(r"\b(localhost|127\.0\.0\.1):8000\b", rf"\g<1>:{port}", command)
    if job_id:
        command = command.replace("3f0c…", job_id).replace("JOB_ID", job_id)
    return command


@dataclass(frozen=True)
class RunBy:
    """The block of `section` holding `snippet` is run (or checked) by `test`
    (`path::function`); that test's module names the same snippet to find it."""

    section: str
    snippet: str
    test: str


@dataclass(frozen=True)
class Shown:
    """The block of `section` holding `snippet` is shown, not run, for `reason`."""

    section: str
    snippet: str
    reason: str


def _in_test_readme(function: str) -> str:
    return f"tests/test_readme.py::{function}"


_STACK = _in_test_readme("demo_stack")  # the module's `jobwire up`, which every test there uses
_CURL_TOUR = _in_test_readme("test_the_curl_tour_runs")
_CLIENT_AND_CLI = _in_test_readme("test_the_client_and_cli_blocks_run")
_TYPED = _in_test_readme("test_the_typed_job_checks_its_args")
_YOUR_JOBS = _in_test_readme("test_your_jobs_run_as_written")
_WEBSOCKET = _in_test_readme("test_the_websocket_line_runs")
_COMPOSE_CHECKED = (
    "Docker is not run by the tests; tests/test_compose.py checks the compose files and image"
    " these commands use against the code"
)

COVERAGE: list[RunBy | Shown] = [
    RunBy(
        "The two commands",
        "pip install",
        _in_test_readme("test_the_setup_command_is_the_install_ci_runs"),
    ),
    RunBy("The two commands", "jobwire up", _STACK),
    RunBy(
        "The two commands",
        ".venv/bin/pytest",
        "tests/test_compose.py::test_readme_shows_the_ci_test_command",
    ),
    RunBy("Five minutes with curl", "-X POST", _CURL_TOUR),
    RunBy("Five minutes with curl", "retry: 2000", _CURL_TOUR),
    RunBy("Five minutes with curl", "Last-Event-ID:", _CURL_TOUR),
    RunBy("Five minutes with curl", "# the state snapshot", _CURL_TOUR),
    RunBy("Writing a job", "media.transcode", _in_test_readme("test_the_job_written_runs")),
    RunBy("Typed arguments", "images.resize", _TYPED),
    RunBy("Typed arguments", '"invalid_args"', _TYPED),
    RunBy("Your jobs", "async def build_report", _YOUR_JOBS),
    RunBy("Your jobs", "up myjobs:jobs", _YOUR_JOBS),
    RunBy("Your jobs", "jobwire submit reports.build", _YOUR_JOBS),
    RunBy("Your jobs", "arq worker.main.WorkerSettings", _YOUR_JOBS),
    RunBy("Your jobs", "examples.wordcount.jobs:jobs", _YOUR_JOBS),
    RunBy("Python client and CLI", "client.job(job.job_id)", _CLIENT_AND_CLI),
    RunBy("Python client and CLI", "SyncClient()", _CLIENT_AND_CLI),
    RunBy("Python client and CLI", "client.follow(jobs)", _CLIENT_AND_CLI),
    RunBy("Python client and CLI", "jobwire watch", _CLIENT_AND_CLI),
    RunBy("Events", '"type": "progress"', _CURL_TOUR),
    RunBy("WebSocket", '"type": "progress"', _WEBSOCKET),
    RunBy("WebSocket", "-m websockets", _WEBSOCKET),
    Shown("docker-compose", "docker compose up --build", _COMPOSE_CHECKED),
    Shown("docker-compose", "docker build -t jobwire .", _COMPOSE_CHECKED),
    RunBy(
        "Scaling out",
        "/usr/sbin/haproxy",
        _in_test_readme("test_the_gateways_by_hand_serve_through_the_balancer"),
    ),
    Shown("Scaling out", "--profile cluster", _COMPOSE_CHECKED),
    RunBy(
        "Operations",
        '"logger":"uvicorn.access"',
        "tests/shared/test_logs.py::test_json_up_writes_only_json_lines_with_request_and_job_ids",
    ),
    RunBy("Layout", "jobwire/", _in_test_readme("test_the_layout_names_what_is_there")),
]
